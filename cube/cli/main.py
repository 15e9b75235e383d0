"""`cube`: the command-line client.

    cube task start [FILE|-] [--image ... --name ... --cmd ... --port ... --env ...]
    cube task stop|restart|inspect|logs ID... ; cube task ls [-a] [-q]
    cube node ls | rm NAME... ; cube events ; cube join-token [--rotate]
    cube credentials create NAME [--role admin|read-only] [--output FILE]
    cube version ; cube completion bash|zsh ; cube help [COMMAND]

Commands are fire-style components (cube/cli/commands.py); cube/cli/args.py checks the command
line against the command's signature before anything runs. Whatever happens, a person sees one
line on stderr and an exit status, never a traceback: 2 for a command line that does not fit,
1 for a failure, 130 for Ctrl-C, 141 (quietly) when whoever reads our output went away.

Only the standard library is imported before a command needs more: `cube --help` reads no
credentials and loads neither ZeroMQ nor fire.
"""
from __future__ import annotations

import os
import sys

from cube.cli.session import DEFAULT_TIMEOUT, CliError  # noqa: F401  (the CLI's errors, for callers)

USAGE = 2
FAILED = 1
# Modules of the virtualenv: missing means this is not the Python cube was installed into.
_THIRD_PARTY = {"zmq", "msgpack", "docker", "psutil", "plyvel", "fire", "numpy", "requests"}


def main(argv: list[str] | None = None) -> None:
    """Run one command line and exit with its status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    status = _guarded(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = _reader_gone()
    except ValueError:  # stdout was closed
        pass
    sys.exit(status)


def _guarded(argv: list[str]) -> int:
    from cube.cli import session
    from cube.cli.args import UsageError
    from cube.wire.errors import CubeError
    try:
        return run(argv)
    except UsageError as e:
        _error(str(e))
        return USAGE
    except (CliError, CubeError) as e:
        _error(str(e))
        return FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_gone()
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in _THIRD_PARTY:
            raise
        _error(f"this Python ({sys.executable}) lacks the module {e.name!r} cube needs: run cube with "
               f".venv/bin/python bin/cube, or create the virtualenv with scripts/setup.sh")
        return FAILED
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("CUBE_DEBUG"):
            raise
        _error(f"internal error: {type(e).__name__}: {e} (CUBE_DEBUG=1 shows the traceback)")
        return FAILED
    finally:
        session.close()


def run(argv: list[str]) -> int:
    """Find the command, check the line against it, call it; its exit status."""
    from cube.cli import commands
    from cube.cli.args import HelpRequested, UsageError, parse
    if not argv or argv[0] in ("-h", "--help"):
        from cube.cli import help
        print(help.top())
        return 0
    if argv[0] in ("--version", "-V"):
        return commands.version()
    name = argv[0].replace("_", "-")
    if name in commands.GROUPS:
        if len(argv) == 1 or argv[1] in ("-h", "--help"):
            from cube.cli import help
            print(help.group(name))
            return 0
        found = commands.group_command(name, argv[1])
        if found is None:
            choices = [c.path[1] for c in commands.group_commands(name)]
            raise UsageError(f"unknown command 'cube {name} {argv[1]}'{_did_you_mean(argv[1], choices)}")
        cmd, rest = found, argv[2:]
    elif name in commands.TOP:
        cmd, rest = commands.top_command(name), argv[1:]
    elif argv[0].startswith("-"):
        raise UsageError(f"{argv[0]}: flags come after the command: cube COMMAND [FLAGS] (see cube --help)")
    else:
        raise UsageError(f"unknown command {argv[0]!r}{_did_you_mean(name, commands.names())}")
    try:
        call = parse(cmd, rest)
    except HelpRequested:
        from cube.cli import help
        print(help.command(cmd))
        return 0
    return commands.bound(cmd)(*call.args, **call.kwargs) or 0


def _did_you_mean(word: str, choices: list[str]) -> str:
    import difflib
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f" (one of: {', '.join(choices)})"


def _error(message: str) -> None:
    from cube.cli.render import clean
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass
    print(f"cube: {clean(message)}", file=sys.stderr)


def _reader_gone() -> int:
    """stdout's reader left (`cube task ls --json | head`): say nothing, like a tool killed by
    SIGPIPE, and keep Python from complaining while it flushes at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


if __name__ == "__main__":
    main()
