"""bash and zsh completion scripts, generated from the command tree (fire's keyed every command on
its last word, so `task ls` and `node ls` shared flags, and the script it printed was empty).

Commands come first on cube's command line, so the group is word 1 and its command word 2; after
them, a word starting with '-' completes the command's flags, the word after a flag its values
(files, or a fixed set such as --restart's policies).
"""
from __future__ import annotations

from cube.cli import commands
from cube.cli.args import Command
from cube.cli.tasks import SORTS, STATES

FILES = {"file", "credentials", "output", "script"}  # parameters naming a file
CHOICES = {"restart": ("no", "on-failure", "always"), "role": ("admin", "read-only"), "state": STATES,
           "sort": tuple(SORTS), "shell": commands.SHELLS, "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
           "update_failure_action": ("rollback", "pause", "continue"), "update_order": ("stop-first", "start-first")}


def script(shell: str) -> str:
    return _bash() if shell == "bash" else _zsh()


def _model() -> tuple[list[str], dict[str, list[str]], list[Command]]:
    top = commands.names()
    groups = {g: [c.path[1] for c in commands.group_commands(g)] for g in commands.GROUPS}
    return top, groups, commands.every()


def _value_flags(every: list[Command]) -> dict[str, str]:
    """Each flag that takes a value -> what completes it: 'FILES', a word list, or '' (free text).
    A flag means the same in every command that has it, so one table serves them all."""
    out: dict[str, str] = {}
    for cmd in every:
        for p in cmd.params:
            if p.kind is bool or p.variadic:
                continue
            what = "FILES" if p.name in FILES else " ".join(CHOICES.get(p.name, ()))
            for flag in [p.flag] + ([p.short] if p.short else []):
                out[flag] = what
    return out


def _args(cmd: Command) -> str:
    """What completes a command's arguments: 'FILES', a word list, or '' (nothing)."""
    for p in cmd.params:
        if p.positional:
            if p.name in FILES:
                return "FILES"
            if p.name in CHOICES:
                return " ".join(CHOICES[p.name])
            if cmd.path == ("help",):
                return " ".join(commands.names())
    return ""


def _by_action(table: dict[str, str]) -> dict[str, list[str]]:
    actions: dict[str, list[str]] = {}
    for key, what in table.items():
        actions.setdefault(what, []).append(key)
    return actions


def _bash() -> str:
    top, groups, every = _model()
    values = _value_flags(every)

    def act(what: str) -> str:
        if what == "FILES":
            return 'COMPREPLY=($(compgen -f -- "$cur")); compopt -o filenames 2>/dev/null'
        return f'COMPREPLY=($(compgen -W "{what}" -- "$cur"))' if what else ":"
    group_cases = "\n".join(f'                {g}) words="{" ".join(cs)}" ;;' for g, cs in groups.items())
    value_cases = "\n".join(f'        {"|".join(flags)}) {act(what)}; return ;;'
                             for what, flags in _by_action(values).items())
    flag_cases = "\n".join(f'        "{c.name}") words="{" ".join(c.flags())} --help" ;;' for c in every)
    arg_cases = "\n".join(f'            {"|".join(chr(34) + k + chr(34) for k in keys)}) {act(what)} ;;'
                           for what, keys in _by_action({c.name: _args(c) for c in every if _args(c)}).items())
    return f"""# bash completion for cube: source <(cube completion bash)
_cube() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" words="" cmd
    COMPREPLY=()
    if [[ "$cur" == "=" ]]; then cur=""; fi
    if [[ "$prev" == "=" && $COMP_CWORD -ge 2 ]]; then prev="${{COMP_WORDS[COMP_CWORD-2]}}"; fi
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "{" ".join(top)} --help --version" -- "$cur"))
        return
    fi
    cmd="${{COMP_WORDS[1]}}"
    case "$cmd" in
        {"|".join(groups)})
            if [[ $COMP_CWORD -eq 2 ]]; then
                case "$cmd" in
{group_cases}
                esac
                COMPREPLY=($(compgen -W "$words --help" -- "$cur"))
                return
            fi
            cmd="$cmd ${{COMP_WORDS[2]}}" ;;
    esac
    case "$prev" in
{value_cases}
    esac
    case "$cmd" in
{flag_cases}
        *) return ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    else
        case "$cmd" in
{arg_cases}
        esac
    fi
}}
complete -F _cube cube
"""


def _zsh() -> str:
    top, groups, every = _model()
    values = _value_flags(every)

    def act(what: str) -> str:
        return "_files" if what == "FILES" else f"compadd -- {what}" if what else ":"
    group_cases = "\n".join(f"                {g}) compadd -- {' '.join(cs)} --help; return ;;"
                             for g, cs in groups.items())
    value_cases = "\n".join(f'        {"|".join(flags)}) {act(what)}; return ;;'
                             for what, flags in _by_action(values).items())
    flag_cases = "\n".join(f'        "{c.name}") compadd -- {" ".join(c.flags())} --help ;;' for c in every)
    arg_cases = "\n".join(f'        {"|".join(chr(34) + k + chr(34) for k in keys)}) {act(what)} ;;'
                           for what, keys in _by_action({c.name: _args(c) for c in every if _args(c)}).items())
    return f"""#compdef cube
# zsh completion for cube: source <(cube completion zsh) after compinit, or save as _cube in $fpath
_cube() {{
    local cmd prev cur
    cur="${{words[CURRENT]}}"
    prev="${{words[CURRENT-1]}}"
    if (( CURRENT == 2 )); then
        compadd -- {" ".join(top)} --help --version
        return
    fi
    cmd="${{words[2]}}"
    case "$cmd" in
        {"|".join(groups)})
            if (( CURRENT == 3 )); then
                case "$cmd" in
{group_cases}
                esac
                return
            fi
            cmd="$cmd ${{words[3]}}" ;;
    esac
    case "$prev" in
{value_cases}
    esac
    if [[ "$cur" == -* ]]; then
        case "$cmd" in
{flag_cases}
        esac
        return
    fi
    case "$cmd" in
{arg_cases}
    esac
}}
if [[ "${{funcstack[1]}}" == "_cube" ]]; then
    _cube "$@"
else
    compdef _cube cube
fi
"""
