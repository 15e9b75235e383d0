"""Machine metrics a Worker publishes (psutil), kept apart from the command path.

cpu usage is psutil's non-blocking reading since the previous call, so sampling never sleeps;
the book's 3 s double sample inside placement is exactly what this avoids.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import psutil

from cube.actors import sockdiag


ANY_ADDRESS = "0.0.0.0"


@dataclass
class Capacity:
    cpus: float
    memory: int
    disk: int


def machine_capacity(data_dir: str, cpus: float | None = None, memory: int | None = None,
                     disk: int | None = None) -> Capacity:
    """What this node offers Cube: the machine's size unless the operator says otherwise."""
    return Capacity(
        cpus=float(cpus) if cpus else float(psutil.cpu_count() or 1),
        memory=int(memory) if memory else int(psutil.virtual_memory().total),
        disk=int(disk) if disk else int(psutil.disk_usage(_existing(data_dir)).total),
    )


class MetricsSampler:
    def __init__(self, name: str, address: str, capacity: Capacity, data_dir: str, bind_ip: str = ANY_ADDRESS):
        """`bind_ip`: where this worker publishes ports; what listens there (or on every address)
        takes a host port away from the tasks that would pin it (docs/architecture.md, "Ports")."""
        self.name = name
        self.address = address
        self.capacity = capacity
        self.data_dir = data_dir
        self.bind_ip = bind_ip
        self.seq = 0
        psutil.cpu_percent(interval=None)  # prime the counter so the first reading means something

    def sample(self, reserved: dict[str, Any], task_ids: list[str]) -> dict[str, Any]:
        self.seq += 1
        return {
            "name": self.name, "address": self.address, "ts": time.time(), "seq": self.seq,
            "cpus": self.capacity.cpus, "memory": self.capacity.memory, "disk": self.capacity.disk,
            **_machine(_existing(self.data_dir)),
            "task_count": len(task_ids), "reserved": reserved, "task_ids": task_ids,
            "ports_in_use": ports_in_use(self.bind_ip),
        }


READING_TTL = 0.5
_READINGS: list[Any] = [-READING_TTL, {}]  # monotonic time, the machine's readings
_DISKS: dict[int, tuple[float, dict[str, int]]] = {}  # device -> (monotonic time, its usage)


def _machine(disk_path: str) -> dict[str, Any]:
    """The machine's readings, shared for READING_TTL by every sampler of this process: several
    workers on one host read one machine (and psutil's cpu_percent measures since its last call,
    so callers taking turns would each see a sliver); disk usage is shared by the data dirs of
    one file system."""
    now = time.monotonic()
    if now - _READINGS[0] >= READING_TTL:
        vm = psutil.virtual_memory()
        _READINGS[0], _READINGS[1] = now, {
            "cpu_usage": psutil.cpu_percent(interval=None) / 100.0,
            "memory_total": int(vm.total), "memory_available": int(vm.available),
            "memory_used": int(vm.total - vm.available), "memory_percent": float(vm.percent),
            "load_avg": [float(x) for x in os.getloadavg()],
        }
    try:
        device = os.stat(disk_path).st_dev
    except OSError:
        device = -1
    cached = _DISKS.get(device)
    if cached is None or now - cached[0] >= READING_TTL:
        du = psutil.disk_usage(disk_path)
        cached = _DISKS[device] = (now, {"disk_total": int(du.total), "disk_free": int(du.free),
                                         "disk_used": int(du.used)})
    return {**_READINGS[1], **cached[1]}


def _existing(path: str) -> str:
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return path or "/"


# ---- host ports in use ---------------------------------------------------------------------------
_PROC_NET = (("tcp", "/proc/net/tcp", 4), ("tcp", "/proc/net/tcp6", 6),
             ("udp", "/proc/net/udp", 4), ("udp", "/proc/net/udp6", 6))
_HOLDING = {"tcp": ("0A",), "udp": ("07", "01")}  # tcp LISTEN; udp bound, unconnected or connected
_LISTENERS: list[Any] = [0.0, []]  # monotonic time, [(proto, ip, port)]: shared like _READINGS


def ports_in_use(bind_ip: str) -> list[str]:
    """Host ports ("8081/tcp") a container published on `bind_ip` could not get: listening TCP
    sockets and bound UDP ones, on that address or on every address. Read from /proc/net, the
    kernel's own tables for this network namespace, rather than psutil.net_connections(), which
    walks every process's file descriptors to name the owners (slow, and not needed here).
    These are the tables of the worker's own network namespace: a worker must run in the network
    namespace its Docker engine publishes ports in (the host's, for a worker run in a container)."""
    now = time.monotonic()
    if now - _LISTENERS[0] >= READING_TTL:
        found = sockdiag.holders()  # the kernel filters by state: cheap with many connections
        _LISTENERS[0], _LISTENERS[1] = now, found if found is not None else _listeners()
    wildcard = bind_ip in ("", ANY_ADDRESS, "::")
    return sorted({f"{port}/{proto}" for proto, ip, port in _LISTENERS[1]
                   if wildcard or ip in ("0.0.0.0", "::", bind_ip) or ip == f"::ffff:{bind_ip}"})


def _listeners() -> list[tuple[str, str, int]]:
    found = []
    for proto, path, family in _PROC_NET:
        want = _HOLDING[proto]
        try:
            with open(path) as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split(None, 4)  # sl, local, remote, state: the rest is not needed
                    if len(fields) < 4 or fields[3] not in want:
                        continue
                    ip_hex, _, port_hex = fields[1].partition(":")
                    port = int(port_hex, 16)
                    if port:
                        found.append((proto, _ip(ip_hex, family), port))
        except (OSError, ValueError):
            continue  # no IPv6 on this host, or no /proc: nothing known to be in use there
    return found


def _ip(hex_text: str, family: int) -> str:
    """/proc/net's address: 32-bit words in host byte order (little-endian here)."""
    raw = bytes.fromhex(hex_text)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, words)
