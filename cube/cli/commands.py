"""The command tree: groups (fire-style classes of methods) and top-level commands, in the order
help lists them. Help, completion and dispatch all read it, so none can forget a command."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from cube.cli.args import Command, command, describe

SHELLS = ("bash", "zsh")


@command(example="cube version")
def version() -> int:
    """Print this cube's version."""
    from cube import __version__
    print(f"cube {__version__}")
    return 0


@command(example="source <(cube completion bash)")
def completion(shell: str) -> int:
    """Print the bash or zsh completion script (groups, commands, flags).

    bash: `source <(cube completion bash)`; zsh: `source <(cube completion zsh)`, after compinit.

    Args:
        shell: bash or zsh
    """
    from cube.cli import completion as scripts
    from cube.cli.args import UsageError
    if shell not in SHELLS:
        raise UsageError(f"no completion for {shell!r}: one of {', '.join(SHELLS)}")
    sys.stdout.write(scripts.script(shell))
    return 0


@command(example="cube help task start", optional_args=True)
def show_help(*words: str) -> int:
    """Show the help of cube, a group or a command (as -h/--help does).

    Args:
        words: a group or a command, such as: task start
    """
    from cube.cli import help as helptext
    print(helptext.for_words(list(words)))
    return 0


# name -> where its class (whose public methods are its commands) or function is: a command
# imports its own module only, so `cube task ls` loads neither the chaos nor the node commands.
GROUPS = {"task": "cube.cli.tasks:Task", "service": "cube.cli.services:Service", "node": "cube.cli.nodes:Node",
          "credentials": "cube.cli.nodes:Credentials", "chaos": "cube.cli.chaos:Chaos"}
TOP = {"events": "cube.cli.events:events", "top": "cube.cli.top:top", "join-token": "cube.cli.nodes:join_token",
       "version": "cube.cli.commands:version", "completion": "cube.cli.commands:completion",
       "help": "cube.cli.commands:show_help"}
SECTIONS = (("Tasks", ("task",)), ("Services", ("service",)),
            ("Cluster", ("node", "events", "top", "join-token", "credentials")), ("Testing", ("chaos",)),
            ("This program", ("version", "completion", "help")))


def load(where: str) -> Any:
    import importlib
    module, _, attr = where.partition(":")
    return getattr(importlib.import_module(module), attr)


def names() -> list[str]:
    return [n for _, members in SECTIONS for n in members]


def group_commands(group: str) -> list[Command]:
    cls = load(GROUPS[group])
    return [describe((group, name), getattr(cls, name)) for name in vars(cls)
            if not name.startswith("_") and callable(getattr(cls, name))]


def group_command(group: str, word: str) -> Command | None:
    """`cube GROUP WORD`'s command, or None."""
    cls = load(GROUPS[group])
    name = word.replace("-", "_")
    fn = vars(cls).get(name) if not name.startswith("_") else None
    return describe((group, name), fn) if callable(fn) else None


def top_command(name: str) -> Command:
    return describe((name,), load(TOP[name]))


def every() -> list[Command]:
    """Every command, in help's order."""
    out: list[Command] = []
    for name in names():
        out += group_commands(name) if name in GROUPS else [top_command(name)]
    return out


def summary(name: str) -> str:
    """The first line of a group's docstring, or a top-level command's."""
    target = load(GROUPS.get(name) or TOP[name])
    return (target.__doc__ or "").strip().splitlines()[0]


def bound(cmd: Command) -> Callable[..., Any]:
    """The function to call: a group's method on a fresh instance (fire does the same)."""
    if cmd.path[0] in GROUPS:
        return getattr(load(GROUPS[cmd.path[0]])(), cmd.path[1])
    return cmd.fn
