"""`python -m cube.testbed` (scripts/testbed.sh): make, list, enter and remove test beds by hand."""
from __future__ import annotations

import argparse
import os
import sys

from cube.testbed import netns
from cube.testbed.bed import Bed, beds, missing, reap, stale


def _up(args: argparse.Namespace) -> int:
    hosts = [h for h in args.hosts.split(",") if h]
    docker = [h for h in args.docker.split(",") if h] if args.docker is not None else hosts[1:]
    bed = Bed(hosts, docker, manual=True).up()
    print(f"bed {bed.id} up in {bed.timings['up']:.2f}s "
          f"(network {bed.timings['network']:.2f}s, dockerd {bed.timings['dockerd']:.2f}s, "
          f"image {bed.timings['image']:.2f}s)")
    for h in bed.hosts:
        engine = f"  DOCKER_HOST={bed.docker_host(h)}" if h in bed.engines else ""
        print(f"  {h:<6} {bed.address(h):<12} netns {bed.netns(h)}{engine}")
    print(f"run on a host:  scripts/testbed.sh exec {bed.id} {bed.hosts[0]} <command>")
    print(f"remove it:      scripts/testbed.sh down {bed.id}")
    return 0


def _ls(_: argparse.Namespace) -> int:
    found = beds()
    if not found:
        print("no beds")
    for bid, state in sorted(found.items()):
        owner = state.get("owner")
        how = "by hand" if owner == 0 else (f"owner pid {owner} gone (stale)" if stale(state) else f"owner pid {owner}")
        hosts = ", ".join(f"{h} {a}" for h, a in state.get("addresses", {}).items()) or "no state file (stale)"
        print(f"{bid}  {how}: {hosts}")
    return 0


def _exec(args: argparse.Namespace) -> int:
    state = beds().get(args.id)
    if not state or args.host not in state.get("netns", {}):
        print(f"testbed: no host {args.host!r} in bed {args.id!r} (see `scripts/testbed.sh ls`)", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.host in state.get("docker", {}):
        env["DOCKER_HOST"] = state["docker"][args.host]
    argv = [*netns.prefix(state["netns"][args.host]), *(args.command or ["bash"])]
    os.execvpe(argv[0], argv, env)
    return 1  # not reached


def _down(args: argparse.Namespace) -> int:
    if args.ids:
        removed = [bid for bid in args.ids for bid in reap(bid, stale_only=False)]
    else:
        removed = reap(stale_only=not args.all)
    print(f"removed {len(removed)} bed(s){': ' + ', '.join(removed) if removed else ''}")
    left = sorted(beds())
    if left:
        print(f"left: {', '.join(left)} (in use; `down ID` or `down --all` removes them)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/testbed.sh", description="Multi-host test beds (docs/chaos.md).")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="make a bed that stays until `down`")
    up.add_argument("--hosts", default="h1,h2,h3", help="host names, in address order (default h1,h2,h3)")
    up.add_argument("--docker", default=None, help="hosts with their own dockerd (default: all but the first)")
    up.set_defaults(fn=_up)
    sub.add_parser("ls", help="list the beds on this machine").set_defaults(fn=_ls)
    ex = sub.add_parser("exec", help="run a command on a host of a bed (default: a shell)")
    ex.add_argument("id")
    ex.add_argument("host")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ex.set_defaults(fn=_exec)
    down = sub.add_parser("down", help="remove beds: the named ones, or those whose owner died, or --all")
    down.add_argument("ids", nargs="*")
    down.add_argument("--all", action="store_true", help="every bed, also those in use")
    down.set_defaults(fn=_down)
    args = p.parse_args(argv)
    if args.cmd in ("up", "down", "exec"):
        why = missing() if args.cmd == "up" else (None if os.geteuid() == 0 else "the test bed needs root")
        if why:
            print(f"testbed: {why}", file=sys.stderr)
            return 1
    try:
        return args.fn(args)
    except (ValueError, RuntimeError, KeyError) as e:
        print(f"testbed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
