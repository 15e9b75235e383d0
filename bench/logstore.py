"""Retained logs (cube/runtime/logstore.py): what saving an ended attempt's output costs the worker,
and what the bounds keep on disk, for many short-lived tasks.

20,000 saves of one line each, and 20,000 saves of nothing (a task that printed nothing), into one
store with the default bounds except --log-retain-total 1 MiB; then the files and the disk blocks
left (a filesystem stores a one-line file in a 4 KiB block).

    .venv/bin/python bench/logstore.py --saves 20000

Prints one line: RESULT saves=… line_saves_per_s=… empty_saves_per_s=… files=… disk_bytes=…
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cube.runtime.logstore import LogStore, Record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--saves", type=int, default=20_000)
    ap.add_argument("--total", type=int, default=1 << 20, help="bytes (--log-retain-total)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        store = LogStore(root, total=args.total)
        started = time.perf_counter()
        for i in range(args.saves):
            store.save(f"task{i}", 1, iter([Record(1_000 + i, f"line of task {i}\n".encode())]))
        lines = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(args.saves):
            store.save(f"empty{i}", 1, iter([]))
        empty = time.perf_counter() - started
        names = os.listdir(root)
        disk = sum(os.stat(os.path.join(root, n)).st_blocks * 512 for n in names)
        print(f"RESULT saves={args.saves} line_saves_per_s={args.saves / lines:.0f} "
              f"empty_saves_per_s={args.saves / empty:.0f} files={len(names)} disk_bytes={disk} "
              f"counted_bytes={store.bytes_used()}")


if __name__ == "__main__":
    main()
