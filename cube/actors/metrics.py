"""Machine metrics a Worker publishes (psutil), kept apart from the command path.

cpu usage is psutil's non-blocking reading since the previous call, so sampling never sleeps;
the book's 3 s double sample inside placement is exactly what this avoids.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import psutil


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
    def __init__(self, name: str, address: str, capacity: Capacity, data_dir: str):
        self.name = name
        self.address = address
        self.capacity = capacity
        self.data_dir = data_dir
        self.seq = 0
        psutil.cpu_percent(interval=None)  # prime the counter so the first reading means something

    def sample(self, reserved: dict[str, Any], task_ids: list[str]) -> dict[str, Any]:
        self.seq += 1
        return {
            "name": self.name, "address": self.address, "ts": time.time(), "seq": self.seq,
            "cpus": self.capacity.cpus, "memory": self.capacity.memory, "disk": self.capacity.disk,
            **_machine(_existing(self.data_dir)),
            "task_count": len(task_ids), "reserved": reserved, "task_ids": task_ids,
        }


_READINGS: dict[str, tuple[float, dict[str, Any]]] = {}  # disk path -> (monotonic time, readings)
READING_TTL = 0.5


def _machine(disk_path: str) -> dict[str, Any]:
    """The machine's readings, shared for READING_TTL by every sampler of this process: several
    workers on one host read one machine (and psutil's cpu_percent measures since its last call,
    so callers taking turns would each see a sliver)."""
    now = time.monotonic()
    cached = _READINGS.get(disk_path)
    if cached is not None and now - cached[0] < READING_TTL:
        return cached[1]
    vm = psutil.virtual_memory()
    du = psutil.disk_usage(disk_path)
    readings = {
        "cpu_usage": psutil.cpu_percent(interval=None) / 100.0,
        "memory_total": int(vm.total), "memory_available": int(vm.available),
        "memory_used": int(vm.total - vm.available), "memory_percent": float(vm.percent),
        "disk_total": int(du.total), "disk_free": int(du.free), "disk_used": int(du.used),
        "load_avg": [float(x) for x in os.getloadavg()],
    }
    _READINGS[disk_path] = (now, readings)
    return readings


def _existing(path: str) -> str:
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return path or "/"
