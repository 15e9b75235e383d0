"""Tables and small formatting helpers for people; scripts use --json instead."""
from __future__ import annotations

import time
from typing import Any, Iterable


def table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def ago(ts: float, now: float | None = None) -> str:
    if not ts:
        return "-"
    secs = max(0, int((now or time.time()) - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit} ago"
    return f"{secs}s ago"


def ports(host_ports: dict[str, int], declared: list[str]) -> str:
    if host_ports:
        return ",".join(f"{hp}->{cp}" for cp, hp in sorted(host_ports.items()))
    return ",".join(declared) or "-"


def mib(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def gib(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f}"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
