"""Help text, written here rather than by fire: on stdout, never through a pager, listing every
group and command with one line and an example, and each command's flags."""
from __future__ import annotations

from cube.cli import commands
from cube.cli.args import Command, Param, UsageError, usage

GLOBAL = ("Every command that talks to the manager takes --manager HOST:PORT (default $CUBE_MANAGER, else the\n"
          "credentials' manager, else 127.0.0.1:5555) and --credentials FILE (default $CUBE_CREDENTIALS, else\n"
          "~/.config/cube/credentials). -h/--help works everywhere. Failures print one line on stderr:\n"
          "exit status 1, or 2 for a command line cube cannot use.")


def top() -> str:
    lines = ["Usage: cube COMMAND [ARGS] [FLAGS]", "", "Cube: a container orchestrator.", ""]
    for section, members in commands.SECTIONS:
        lines.append(f"{section}:")
        for name in members:
            for cmd in commands.group_commands(name) if name in commands.GROUPS else [commands.top_command(name)]:
                lines.append(f"  {cmd.name:<20}{cmd.summary}")
                if cmd.example:
                    lines.append(f"  {'':<20}e.g. {cmd.example}")
        lines.append("")
    lines += [GLOBAL, "", "`cube COMMAND --help` shows a command's flags."]
    return "\n".join(lines)


def group(name: str) -> str:
    lines = [f"Usage: cube {name} COMMAND [ARGS] [FLAGS]", "", commands.summary(name), "", "Commands:"]
    for cmd in commands.group_commands(name):
        lines.append(f"  {cmd.path[-1]:<10}{cmd.summary}")
        if cmd.example:
            lines.append(f"  {'':<10}e.g. {cmd.example}")
    lines += ["", f"`cube {name} COMMAND --help` shows a command's flags."]
    return "\n".join(lines)


def command(cmd: Command) -> str:
    lines = [f"Usage: {usage(cmd)}", "", cmd.summary]
    if cmd.description:
        lines += ["", cmd.description]
    args = [p for p in cmd.params if p.positional]
    flags = [p for p in cmd.params if not p.variadic]
    if args:
        lines += ["", "Arguments:"] + [_row(_arg(p), p.help) for p in args]
    lines += ["", "Flags:"] + [_row(_flag(p), _flag_help(p)) for p in flags]
    lines.append(_row("-h, --help", "this help"))
    if cmd.example:
        lines += ["", "Example:", f"  {cmd.example}"]
    return "\n".join(lines)


def for_words(words: list[str]) -> str:
    """`cube help [GROUP [COMMAND]]`."""
    if not words:
        return top()
    name = words[0].replace("_", "-")
    if name in commands.GROUPS:
        if len(words) == 1:
            return group(name)
        found = commands.group_command(name, words[1])
        if found is not None and len(words) == 2:
            return command(found)
    elif name in commands.TOP and len(words) == 1:
        return command(commands.top_command(name))
    raise UsageError(f"no help for {' '.join(words)!r}: no such command (see cube --help)")


def _arg(p: Param) -> str:
    return f"{p.metavar}..." if p.variadic else p.metavar


def _row(left: str, right: str) -> str:
    return f"  {left:<26}{right}".rstrip() if len(left) < 26 else f"  {left}  {right}".rstrip()


# What a flag's value looks like, and what the flags every command shares do.
METAVARS = {"manager": "HOST:PORT", "credentials": "FILE", "file": "FILE", "output": "FILE", "memory": "SIZE",
            "disk": "SIZE", "env": "KEY=VALUE", "cmd": "COMMAND", "restart": "POLICY", "health": "PATH",
            "sort": "FIELD", "tail": "N|all", "role": "ROLE", "script": "SCRIPT", "log_level": "LEVEL",
            "timeout": "DURATION", "update_delay": "DURATION", "update_monitor": "DURATION",
            "update_failure_action": "ACTION", "update_order": "ORDER", "update_max_failure_ratio": "RATIO"}
COMMON = {"manager": "the manager's address (default $CUBE_MANAGER, else the credentials', else 127.0.0.1:5555)",
          "credentials": "a credentials file (default $CUBE_CREDENTIALS, else ~/.config/cube/credentials)",
          "json": "print JSON instead of text"}


def _flag(p: Param) -> str:
    spelled = f"{p.short}, {p.flag}" if p.short else p.flag
    return spelled if p.kind is bool else f"{spelled} {_metavar(p)}"


def _metavar(p: Param) -> str:
    if p.name in METAVARS:
        return METAVARS[p.name]
    if p.kind in (int, float):
        return "N"
    return p.name.upper()


def _flag_help(p: Param) -> str:
    text = p.help or COMMON.get(p.name, "")
    if p.kind is not bool and p.default not in (None, "", [], 0, 0.0) and "default" not in text:
        text += f" (default {p.default})"
    return text
