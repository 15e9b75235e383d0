"""The layer over fire's conventions that checks argv against a command's signature before
anything runs (issue 10).

Commands stay fire-style components (classes of methods, flags named after parameters,
`--flag`/`--noflag`, `-` and `_` alike in names), but fire parses too loosely to trust with
work: a mistyped flag ran the command anyway, repeated flags kept the last value, `7e12` became
a number and `-` vanished. Here every token must match the signature or nothing runs: unknown
flags and extra arguments are a usage error (with a "did you mean"), list parameters accumulate,
strings stay strings, and `-` is an ordinary argument (stdin, for the task file).

Reading a signature uses the code object and the (string) annotations only: `inspect` and fire
cost more to import than a whole `cube task ls` may take.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
               "false": False, "no": False, "off": False, "0": False}
_INT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_VAR_POSITIONAL = 0x04  # CO_VARARGS


class UsageError(Exception):
    """The command line does not match the command: one line on stderr, exit status 2."""


class HelpRequested(Exception):
    """-h/--help was given: print the command's help instead of running it."""


@dataclass(frozen=True)
class Param:
    """One parameter of a command, as the command line sees it."""

    name: str  # the Python name (`max_restarts`); the flag is `--max-restarts`
    kind: type  # str, int, float, bool or list (a repeatable string flag)
    default: Any = None
    required: bool = False
    positional: bool = False  # may be given without its flag
    variadic: bool = False  # *ids: takes every remaining argument
    short: str = ""  # "-a" for --all
    help: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def metavar(self) -> str:
        return self.name.upper()[:-1] if self.variadic and self.name.endswith("s") else self.name.upper()


@dataclass(frozen=True)
class Command:
    """A command: its words (`task start`), the function to call and what help says of it."""

    path: tuple[str, ...]
    fn: Callable[..., Any]
    params: tuple[Param, ...]
    summary: str = ""
    description: str = ""
    example: str = ""

    @property
    def name(self) -> str:
        return " ".join(self.path)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def flags(self) -> list[str]:
        """Every flag spelling, for help and completion."""
        out = []
        for p in self.params:
            if not p.variadic:
                out += ([p.short] if p.short else []) + [p.flag]
        return out


@dataclass
class Call:
    """What to call the command's function with."""

    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


def command(example: str = "", short: dict[str, str] | None = None,
            optional_args: bool = False) -> Callable[[Callable], Callable]:
    """Mark a function as a command: an example for help, short flags (`{"a": "all"}`), and
    whether its *args may be empty (by default `cube task stop` needs at least one id)."""
    def mark(fn: Callable) -> Callable:
        fn.cube_example = example  # type: ignore[attr-defined]
        fn.cube_short = dict(short or {})  # type: ignore[attr-defined]
        fn.cube_optional_args = optional_args  # type: ignore[attr-defined]
        return fn
    return mark


def describe(path: tuple[str, ...], fn: Callable[..., Any]) -> Command:
    """The Command for a function (a method is read without its `self`)."""
    code = fn.__code__
    names = code.co_varnames  # positional, keyword-only, then *args, then **kwargs and locals
    method = names[:1] == ("self",)
    pos_names = list(names[1 if method else 0: code.co_argcount])
    kw_names = list(names[code.co_argcount: code.co_argcount + code.co_kwonlyargcount])
    var_name = names[code.co_argcount + code.co_kwonlyargcount] if code.co_flags & _VAR_POSITIONAL else None
    defaults = dict(zip(reversed(pos_names), reversed(fn.__defaults__ or ())))
    defaults.update(fn.__kwdefaults__ or {})
    notes = getattr(fn, "__annotations__", {})
    short = {v: "-" + k for k, v in getattr(fn, "cube_short", {}).items()}
    summary, description, helps = _docstring(fn.__doc__ or "")
    params = []
    for name in pos_names + ([var_name] if var_name else []) + kw_names:
        kind = _kind(str(notes.get(name, "str")))
        params.append(Param(
            name=name, kind=kind, default=defaults.get(name, [] if kind is list else None),
            required=name not in defaults and (name != var_name or not getattr(fn, "cube_optional_args", False)),
            positional=name in pos_names or name == var_name,
            variadic=name == var_name, short=short.get(name, ""), help=helps.get(name, "")))
    return Command(path, fn, tuple(params), summary, description, getattr(fn, "cube_example", ""))


def parse(cmd: Command, argv: list[str]) -> Call:
    """Match argv to the command's parameters, or raise UsageError naming the first problem."""
    if any(a in ("-h", "--help") for a in _options_part(argv)):
        raise HelpRequested()
    given: dict[str, Any] = {}
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            positionals += argv[i:]
            break
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            p, negated = _lookup(cmd, name)
            if p.kind is bool:
                _set(cmd, given, p, (not negated) if not eq else _bool(p, value, negated))
                continue
            if negated:
                raise UsageError(f"--{name}: {p.flag} takes a value; only on/off flags have a --no form")
            if not eq:
                if i >= len(argv) or _looks_like_flag(argv[i]):
                    raise UsageError(f"{p.flag} needs a value (write {p.flag}=VALUE for a value starting with '-')")
                value = argv[i]
                i += 1
            _set(cmd, given, p, _convert(p, value))
        elif token.startswith("-") and len(token) > 1 and not _is_number(token):
            i = _shorts(cmd, given, token, argv, i)
        else:
            positionals.append(token)
    return _bind(cmd, given, positionals)


def _options_part(argv: list[str]) -> list[str]:
    return argv[: argv.index("--")] if "--" in argv else argv


def _lookup(cmd: Command, name: str) -> tuple[Param, bool]:
    key = name.replace("-", "_")
    p = cmd.param(key)
    if p is not None and not p.variadic:
        return p, False
    for prefix in ("no_", "no"):  # fire's --noflag, and --no-flag
        if key.startswith(prefix):
            p = cmd.param(key[len(prefix):])
            if p is not None and not p.variadic:
                return p, True
    raise UsageError(f"unknown flag --{name} for 'cube {cmd.name}'{did_you_mean(name, cmd)}")


def did_you_mean(name: str, cmd: Command) -> str:
    import difflib
    flags = [p.flag[2:] for p in cmd.params if not p.variadic]
    close = difflib.get_close_matches(name.replace("_", "-"), flags, n=1, cutoff=0.6)
    return f"; did you mean --{close[0]}?" if close else f" (see cube {cmd.name} --help)"


def _shorts(cmd: Command, given: dict[str, Any], token: str, argv: list[str], i: int) -> int:
    """-a, -q, -aq; a short flag that takes a value takes the rest of the token or the next one."""
    letters = token[1:]
    for n, letter in enumerate(letters):
        p = next((p for p in cmd.params if p.short == "-" + letter), None)
        if p is None:
            hint = did_you_mean(letters, cmd) if len(letters) > 1 else f" (see cube {cmd.name} --help)"
            raise UsageError(f"unknown flag -{letter} for 'cube {cmd.name}'{hint}")
        if p.kind is bool:
            _set(cmd, given, p, True)
            continue
        rest = letters[n + 1:]
        if rest:
            _set(cmd, given, p, _convert(p, rest.removeprefix("=")))
            return i
        if i >= len(argv):
            raise UsageError(f"{p.short} needs a value")
        _set(cmd, given, p, _convert(p, argv[i]))
        return i + 1
    return i


def _set(cmd: Command, given: dict[str, Any], p: Param, value: Any) -> None:
    if p.kind is list:
        given.setdefault(p.name, []).extend(value)
        return
    if p.name in given and given[p.name] != value:
        raise UsageError(f"{p.flag} given twice ({given[p.name]!r} and {value!r}); give it once")
    given[p.name] = value


def _bind(cmd: Command, given: dict[str, Any], positionals: list[str]) -> Call:
    call = Call()
    slots = [p for p in cmd.params if p.positional]
    for p in slots:
        if p.variadic:
            call.args += [_convert_one(p, v) for v in positionals]
            if not positionals and p.required:
                raise UsageError(f"missing {p.metavar}: usage: {usage(cmd)}")
            positionals = []
            continue
        if positionals:
            if p.name in given:
                raise UsageError(f"{p.metavar} given twice ({given[p.name]!r} as {p.flag} and "
                                 f"{positionals[0]!r}); give it once")
            call.args.append(_convert_one(p, positionals.pop(0)))
        elif p.name in given:
            call.args.append(given.pop(p.name))
        elif p.required:
            raise UsageError(f"missing {p.metavar}: usage: {usage(cmd)}")
        else:
            call.args.append(p.default)
    if positionals:
        extra = positionals[0]
        hint = " (flags start with --)" if not any(p.positional for p in cmd.params) else ""
        raise UsageError(f"unexpected argument {extra!r} for 'cube {cmd.name}'{hint}; usage: {usage(cmd)}")
    call.kwargs = {k: v for k, v in given.items() if not cmd.param(k).positional}  # type: ignore[union-attr]
    return call


def usage(cmd: Command) -> str:
    words = []
    for p in cmd.params:
        if p.variadic:
            words.append(f"{p.metavar}...")
        elif p.positional:
            words.append(p.metavar if p.required else f"[{p.metavar}]")
        if p.variadic and not p.required:
            words[-1] = f"[{words[-1]}]"
    return " ".join(["cube", cmd.name, *words, "[FLAGS]"])


def _convert(p: Param, value: str) -> Any:
    return [value] if p.kind is list else _convert_one(p, value)


def _convert_one(p: Param, value: str) -> Any:
    if p.kind is int:
        if not _INT.match(value.strip()):
            raise UsageError(f"{p.flag}: {value!r} is not a whole number")
        return int(value)
    if p.kind is float:
        if not _FLOAT.match(value.strip()):
            raise UsageError(f"{p.flag}: {value!r} is not a number")
        return float(value)
    if p.kind is bool:
        return _bool(p, value, False)
    return value  # ids, names, images, commands: exactly what was typed


def _bool(p: Param, value: str, negated: bool) -> bool:
    word = _BOOL_WORDS.get(value.strip().lower())
    if word is None:
        raise UsageError(f"{p.flag}: {value!r} is not true or false")
    return word != negated


def _is_number(token: str) -> bool:
    return bool(_FLOAT.match(token))


def _looks_like_flag(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _is_number(token)


def _kind(annotation: str) -> type:
    text = annotation.replace(" ", "").replace("|None", "").replace("None|", "")
    if text.startswith(("list[", "tuple[", "Sequence[")):
        return list
    return {"bool": bool, "int": int, "float": float}.get(text, str)


def _docstring(doc: str) -> tuple[str, str, dict[str, str]]:
    """Summary line, description, and the `Args:` section's line per parameter (Google style,
    which fire reads too)."""
    lines = _dedent(doc)
    summary = lines[0].strip() if lines else ""
    body: list[str] = []
    helps: dict[str, str] = {}
    current = None
    in_args = False
    for line in lines[1:]:
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Flags:"):
            in_args = True
            continue
        if in_args and stripped:
            m = re.match(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if m and (current is None or len(line) - len(line.lstrip()) <= current[1]):
                current = (m.group(1), len(line) - len(line.lstrip()))
                helps[current[0]] = m.group(2)
                continue
            if current is not None and line.startswith(" "):
                helps[current[0]] += " " + stripped
                continue
            in_args = False
        if not in_args:
            body.append(line)
    return summary, "\n".join(body).strip(), helps


def _dedent(doc: str) -> list[str]:
    lines = doc.expandtabs().splitlines()
    if not lines:
        return []
    margin = min((len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()), default=0)
    return [lines[0].strip()] + [line[margin:] for line in lines[1:]]
