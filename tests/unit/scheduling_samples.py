"""Metrics samples as workers publish them, for the scheduling tests."""

GiB = 1 << 30
MiB = 1 << 20


def sample(name, seq=1, ts=100.0, cpus=4.0, memory=8 * GiB, disk=100 * GiB, cpu_usage=0.0,
           memory_total=16 * GiB, memory_used=0, task_ids=(), task_count=None,
           reserved=(0.0, 0, 0)):
    return {"name": name, "address": f"{name}.local", "ts": ts, "seq": seq, "cpus": cpus,
            "memory": memory, "disk": disk, "cpu_usage": cpu_usage,
            "memory_total": memory_total, "memory_available": memory_total - memory_used,
            "memory_used": memory_used,
            "memory_percent": 100.0 * memory_used / memory_total if memory_total else 0.0,
            "disk_total": disk, "disk_free": disk, "disk_used": 0, "load_avg": [0.0, 0.0, 0.0],
            "task_count": len(task_ids) if task_count is None else task_count,
            "reserved": {"cpu": reserved[0], "memory": reserved[1], "disk": reserved[2]},
            "task_ids": list(task_ids)}
