"""A task's ports: a container port published on a free host port, or on a fixed one.

A task lists its ports as strings in one canonical form (docs/task-files.md):

- ``"80/tcp"``: container port 80, published on a host port Docker picks (the book's Cube);
- ``"8081:80/tcp"``: container port 80, published on host port 8081 of the worker's address.

A fixed host port is a resource of the worker (docs/architecture.md, "Ports"): the Scheduler
places a task only where its fixed ports are free, so two tasks never fight over one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

PROTOCOLS = ("tcp", "udp")


class PortError(ValueError):
    """A port entry Cube cannot use; the message says what a good one looks like."""


@dataclass(frozen=True, slots=True)
class PortMapping:
    container: int
    proto: str = "tcp"
    host: int = 0  # 0: any free host port

    @property
    def key(self) -> str:
        """The container side, "80/tcp": how Docker names it and how host_ports are keyed."""
        return f"{self.container}/{self.proto}"

    @property
    def host_key(self) -> str:
        """The fixed host side, "8081/tcp" ("" when Docker picks the host port)."""
        return f"{self.host}/{self.proto}" if self.host else ""

    def __str__(self) -> str:
        return f"{self.host}:{self.key}" if self.host else self.key


def _number(text: str, what: str, original: Any) -> int:
    if not (text.isascii() and text.isdecimal()) or not 0 < int(text) < 65536:
        raise PortError(f"{original!r} is not a port such as 8080, 8081:80 or 53/udp "
                        f"({what} must be 1-65535)")
    return int(text)


def parse(item: Any) -> PortMapping:
    """One entry: 8080, "8080", "53/udp", "8081:80", "8081:80/udp" (HOST:CONTAINER, as Docker's -p)."""
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise PortError(f"{item!r} is not a port such as 8080, 8081:80 or 53/udp")
    text = str(item).strip()
    ports, _, proto = text.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise PortError(f"{item!r}: protocol {proto!r} is not tcp or udp")
    parts = ports.split(":")
    if len(parts) > 2:
        raise PortError(f"{item!r}: give HOST:CONTAINER; the host address is the worker's own "
                        f"(cube-worker --address), not part of the port")
    container = _number(parts[-1], "the container port", item)
    host = _number(parts[0], "the host port", item) if len(parts) == 2 else 0
    return PortMapping(container, proto, host)


def parse_all(items: Iterable[Any]) -> list[PortMapping]:
    """Every entry, checked together: a container port is published once, a host port used once."""
    mappings = [parse(item) for item in items]
    seen: dict[str, PortMapping] = {}
    hosts: dict[str, PortMapping] = {}
    for m in mappings:
        if m.key in seen:
            raise PortError(f"container port {m.key} is listed twice ({seen[m.key]} and {m})")
        seen[m.key] = m
        if m.host_key:
            if m.host_key in hosts:
                raise PortError(f"host port {m.host_key} is asked for twice ({hosts[m.host_key]} and {m})")
            hosts[m.host_key] = m
    return mappings


def container_key(entry: str) -> str:
    """"8081:80/tcp" -> "80/tcp"; "80/tcp" -> "80/tcp" (entries already in canonical form)."""
    return entry.rsplit(":", 1)[-1]


def fixed_host_ports(entries: Iterable[str]) -> list[str]:
    """The fixed host ports of canonical entries: ["8081:80/tcp", "90/tcp"] -> ["8081/tcp"]."""
    out = []
    for entry in entries:
        host, sep, rest = entry.partition(":")
        if sep:
            out.append(f"{host}/{rest.partition('/')[2] or 'tcp'}")
    return out
