"""Text for people: tables that fit the terminal, YAML-like records, sizes and ages, and nothing
from the manager printed raw. Scripts use --json instead, which keeps every value whole."""
from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

# Escape sequences (CSI, OSC, two-byte ESC x) and the control characters that remain: a task
# name or a log line must not move the cursor, recolour the screen or forge a table row.
_ESCAPES = r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])|\x9b[0-?]*[ -/]*[@-~]"
_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_LINE = {c: None for c in [*range(0x20), 0x7f, *range(0x80, 0xa0), *map(ord, _BIDI)]}
_LINE[ord("\t")] = " "
_TEXT = {k: v for k, v in _LINE.items() if k not in (ord("\n"), ord("\t"))}
ELLIPSIS = "…"


def clean(value: Any) -> str:
    """One line of text from anything the manager sent (names, reasons, errors)."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return re.sub(_ESCAPES, "", text).translate(_LINE)


def clean_text(text: str) -> str:
    """Many lines (logs): newlines and tabs kept, every other control character dropped."""
    return re.sub(_ESCAPES, "", text.replace("\r\n", "\n")).translate(_TEXT)


def width() -> int | None:
    """The terminal's width when printing to one (or $COLUMNS); None into a pipe, where rows are
    kept whole like `ps` does."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        if sys.stdout.isatty():
            return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        pass
    return None


def clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: max(size - 1, 0)] + ELLIPSIS


def table(headers: list[str], rows: Iterable[list[Any]], max_width: int | None = None,
          fixed: Iterable[int] = (), floors: dict[int, int] | None = None) -> str:
    """Columns two spaces apart. With `max_width`, the widest columns (not those in `fixed`) are
    clipped, each with "…", until a row fits; none below its header, 8, or (room allowing) its
    `floors` entry: a row wider than the terminal beats columns too narrow to read."""
    cells = [[clean(c) if c is not None else "" for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if max_width:
        fixed, room = set(fixed), max_width - 2 * (len(headers) - 1)
        for extra in (floors or {}, {}):  # the floors if they fit, else only the headers' widths
            least = [w if i in fixed else min(w, max(len(headers[i]), 8, extra.get(i, 0)))
                     for i, w in enumerate(widths)]
            if sum(least) <= room:
                break
        widths = _fit(widths, least, room)
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(clip(c, w).ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _fit(widths: list[int], least: list[int], room: int) -> list[int]:
    """The largest cap on every column (none below its least width) that lets a row fit."""
    if sum(least) >= room:
        return least
    cap = max(widths)
    while sum(min(w, max(cap, f)) for w, f in zip(widths, least)) > room:
        cap -= 1
    return [min(w, max(cap, f)) for w, f in zip(widths, least)]


def record(data: Any, indent: int = 0) -> list[str]:
    """A map as aligned YAML-like lines: `key: value`, nested maps and lists indented."""
    pad = " " * indent
    if not isinstance(data, dict):
        return [pad + scalar(data)]
    keys = [clean(k) for k in data]
    align = max((len(k) for k in keys), default=0) + 2
    lines = []
    for key, value in zip(keys, data.values()):
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines += record(value, indent + 2)
        elif isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
            lines.append(f"{pad}{key}:")
            for v in value:
                sub = record(v, indent + 4)
                lines.append(f"{pad}  - {sub[0].lstrip()}")
                lines += sub[1:]
        else:
            lines.append(f"{pad}{(key + ':').ljust(align)}{scalar(value)}".rstrip())
    return lines


def scalar(value: Any) -> str:
    if value is None or value == "" or value == {} or value == []:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(scalar(v) for v in value)
    return clean(value)


def ago(ts: float, now: float | None = None) -> str:
    if not ts:
        return "-"
    secs = max(0, int((now or time.time()) - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit} ago"
    return f"{secs}s ago"


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def ports(host_ports: dict[str, int], declared: list[str]) -> str:
    if host_ports:
        return ",".join(f"{hp}->{cp}" for cp, hp in sorted(host_ports.items()))
    return ",".join(declared) or "-"


def size(n: float | None) -> str:
    """Bytes in binary units, short: 512MiB, 1.9GiB."""
    if n is None:
        return "-"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.1f}{unit}" if value < 10 and value != int(value) else f"{value:.0f}{unit}"
    return f"{n:.0f}B"


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction:.0%}"


def task_state(t: dict[str, Any]) -> str:
    """STATE as people read it: who stopped it, how it ended, whether it will run again."""
    state, desired, code = t.get("state", ""), t.get("desired", ""), t.get("exit_code")
    if desired == "stopped":
        return "Stopped (by user)" if state in ("Completed", "Failed") else f"{state} (stopping)"
    notes = [f"exit {code}"] if state in ("Completed", "Failed") and code is not None else []
    if state == "Failed" and restarting(t):
        notes.append("restarting")
    return f"{state} ({', '.join(notes)})" if notes else state


def restarting(t: dict[str, Any]) -> bool:
    """A Failed task whose restart policy will place it again (the manager's own test)."""
    policy = t.get("restart") or {}
    if t.get("desired") != "running" or not (t.get("not_before") or 0) > 0 or policy.get("name") == "no":
        return False
    if t.get("restart_count", 0) >= policy.get("max_restarts", 0):
        return False
    return policy.get("name") == "always" or t.get("exit_code") != 0


def live(t: dict[str, Any]) -> bool:
    return t.get("state") in ("Pending", "Scheduled", "Running")
