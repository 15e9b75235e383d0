"""Retained output: the bounded tail of each task attempt's stdout/stderr, kept on the worker's disk
after its container is removed (docs/architecture.md, "Logs").

Output is a sequence of records, one per line Docker logged, each with Docker's timestamp in
nanoseconds; stdout and stderr are interleaved in the order Docker received them. A *cursor*
("TS:N": after every record older than TS and the first N records stamped TS) says where a reader
is, so the same cursor walks a running container's output (read from Docker) and, once the
container is gone, the retained copy of it: `cube task logs -f` pages through either with
repeated requests, each reply bounded (`page`).

Bounds: each attempt keeps at most `per_attempt` bytes (its newest records); all attempts together
at most `total` bytes on disk (each file counted rounded up to a 4 KiB block, as a filesystem
stores it) and at most `max_files` files, the oldest files going first; a file older than
`max_age` (the manager's retention of finished tasks: it cannot ask for them after that) is
deleted. An attempt that printed nothing writes no file. `per_attempt` 0 keeps nothing.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

log = logging.getLogger(__name__)

PER_ATTEMPT = 1 << 20  # `cube-worker --log-retain`
TOTAL = 256 << 20  # `cube-worker --log-retain-total`
FILES = 10_000  # `cube-worker --log-retain-files`
BLOCK = 4096  # a file's size is counted in whole blocks of this size (a 20-byte file takes 4 KiB)
MAX_AGE = 24 * 3600.0  # until the manager's hello reply says its retention
PAGE_BYTES = 256 << 10  # of text per reply: decoded with replacements it stays under a 1 MiB frame
RECORD_OVERHEAD = 24  # bytes a record costs on disk besides its text ("<19 digits> n <text>\n")
SUFFIX = ".log"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_TIMESTAMP = re.compile(rb"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$")


@dataclass(frozen=True)
class Record:
    """One logged line (or one piece of a line Docker split): its time, its bytes (with the
    trailing newline when the line had one)."""

    ts: int  # nanoseconds since the epoch
    text: bytes

    @property
    def cost(self) -> int:
        return len(self.text) + RECORD_OVERHEAD


# ---- cursors ---------------------------------------------------------------------------------------
def parse_cursor(cursor: str) -> tuple[int, int] | None:
    """(ts, n) from "TS:N"; None for "" (no cursor: start from the tail); ValueError if malformed."""
    if not cursor:
        return None
    ts, sep, n = cursor.partition(":")
    if not sep or not ts.isdecimal() or not n.isdecimal() or len(ts) > 20 or len(n) > 9:
        raise ValueError(f"not a log cursor: {cursor[:40]!r}")
    return int(ts), int(n)


def format_cursor(ts: int, n: int) -> str:
    return f"{ts}:{n}"


def after(records: Iterable[Record], cursor: tuple[int, int]) -> Iterator[Record]:
    """The records a reader at `cursor` has not had yet."""
    ts, skip = cursor
    for r in records:
        if r.ts < ts:
            continue
        if r.ts == ts and skip > 0:
            skip -= 1
            continue
        yield r


def page(records: Iterable[Record], cursor: tuple[int, int], budget: int = PAGE_BYTES) -> tuple[bytes, str, bool]:
    """Up to `budget` bytes of text after `cursor`: (text, the cursor after it, more to come).

    `records` must be in time order; a record larger than the whole budget is cut (it cannot be
    delivered otherwise)."""
    ts, n = cursor
    out: list[bytes] = []
    used = 0
    for r in records:
        if used + len(r.text) > budget:
            if out:
                return b"".join(out), format_cursor(ts, n), True
            r = Record(r.ts, r.text[:budget])
        out.append(r.text)
        used += len(r.text)
        ts, n = (ts, n + 1) if r.ts == ts else (r.ts, 1)
    return b"".join(out), format_cursor(ts, n), False


def end_of(records: Iterable[Record]) -> str:
    """The cursor after the last record (nothing yet: the start)."""
    ts, n = 0, 0
    for r in records:
        ts, n = (ts, n + 1) if r.ts == ts else (r.ts, 1)
    return format_cursor(ts, n)


def last(records: Iterable[Record], count: int) -> list[Record]:
    return list(deque(records, maxlen=count)) if count > 0 else []


def select(records: list[Record], tail: int | None, since: int) -> Iterator[Record]:
    """What a runtime's output(tail, since) gives, from records in memory."""
    if since:
        return (r for r in records if r.ts >= since)
    return iter(records if tail is None else last(records, tail))


Source = Callable[[Optional[int], int], Iterable[Record]]  # (tail, since) -> records, as Runtime.output


def read(source: Source, tail: int | None, cursor: tuple[int, int] | None,
         budget: int = PAGE_BYTES) -> tuple[bytes, str, bool]:
    """One page of output: with no cursor the last `tail` records (None: all; 0: none, only the
    cursor at the end, for following new output), else what follows the cursor."""
    if cursor is not None:
        return page(after(source(None, cursor[0]), cursor), cursor, budget)
    if tail == 0:
        return b"", end_of(source(1, 0)), False
    return page(source(tail, 0), (0, 0), budget)


# ---- Docker's timestamped output -------------------------------------------------------------
def parse_timestamp(stamp: bytes) -> int | None:
    """Nanoseconds from Docker's RFC 3339 stamp (2026-11-28T16:40:01.123456789Z), or None."""
    m = _TIMESTAMP.match(stamp)
    if m is None:
        return None
    import calendar
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    fraction = (m.group(7) or b"0").ljust(9, b"0")
    return seconds * 1_000_000_000 + int(fraction)


def from_docker(frames: Iterable[bytes]) -> Iterator[Record]:
    """Records from Docker's log frames (`logs(timestamps=True, stream=True)`): each frame is one
    message, "<timestamp> <text>". A frame without a stamp (never seen) keeps the previous time.
    The date and time of a stamp are converted once per second of output (it is the slow part)."""
    ts, second, base = 0, b"", 0
    for frame in frames:
        stamp, sep, text = frame.partition(b" ")
        parsed = None
        if sep and len(stamp) > 20 and stamp[19:20] == b"." and stamp.endswith(b"Z") and stamp[20:-1].isdigit():
            if stamp[:19] != second:
                whole = parse_timestamp(stamp[:19] + b"Z")
                second, base = (stamp[:19], whole) if whole is not None else (b"", 0)
            if second:
                parsed = base + int(stamp[20:-1][:9].ljust(9, b"0"))
        elif sep:
            parsed = parse_timestamp(stamp)
        if parsed is None:
            text = frame
        else:
            ts = parsed
        for line in _lines(text):
            yield Record(ts, line)


def _lines(text: bytes) -> list[bytes]:
    """Split at newlines only (a carriage return stays in its line), keeping them."""
    parts = text.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    return lines + [parts[-1]] if parts[-1] else lines


def tail_bytes(records: Iterable[Record], limit: int) -> list[Record]:
    """The newest records that fit in `limit` bytes (as stored), read in one pass in bounded memory."""
    kept: deque[Record] = deque()
    size = 0
    for r in records:
        if r.cost > limit:
            r = Record(r.ts, r.text[-(limit - RECORD_OVERHEAD):] if limit > RECORD_OVERHEAD else b"")
        kept.append(r)
        size += r.cost
        while size > limit and kept:
            size -= kept.popleft().cost
    return list(kept)


def encode(records: Iterable[Record]) -> bytes:
    """The file format: one record a line, "<ts> <n|p> <text>", p for a piece without newline."""
    out = []
    for r in records:
        text, newline = (r.text[:-1], b"n") if r.text.endswith(b"\n") else (r.text, b"p")
        out.append(b"%d %s %s\n" % (r.ts, newline, text.replace(b"\n", b" ")))
    return b"".join(out)


def decode(data: bytes) -> list[Record]:
    records = []
    for line in data.split(b"\n"):
        ts, _, rest = line.partition(b" ")
        kind, _, text = rest.partition(b" ")
        if not ts.isdigit() or kind not in (b"n", b"p"):
            continue  # a torn or foreign line: skipped, the rest is still read
        records.append(Record(int(ts), text + b"\n" if kind == b"n" else text))
    return records


# ---- the store ---------------------------------------------------------------------------------
def on_disk(size: int) -> int:
    """What a file of `size` bytes costs the disk: whole blocks (0 for an empty file)."""
    return -(-size // BLOCK) * BLOCK


class LogStore:
    """Retained output of ended attempts, one file per attempt under `root`. Thread-safe: the
    worker captures and reads in its pool.

    Files are remembered in the order they were saved (at start-up: by modification time), so the
    bounds drop from the front, in time proportional to what they drop, never by sorting them all."""

    def __init__(self, root: str, per_attempt: int = PER_ATTEMPT, total: int = TOTAL,
                 max_age: float = MAX_AGE, clock=time.time, max_files: int = FILES) -> None:
        self.root = root
        self.per_attempt = per_attempt
        self.total = total
        self.max_files = max(1, max_files)
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()
        self._files: OrderedDict[str, tuple[int, float]] = OrderedDict()  # name -> (disk bytes, saved), oldest first
        self._used = 0  # disk bytes of every file in `_files`
        self._empty: OrderedDict[str, None] = OrderedDict()  # attempts that printed nothing (no file), lately
        if self.enabled or os.path.isdir(root):
            os.makedirs(root, mode=0o700, exist_ok=True)
            found = []
            for entry in os.scandir(root):
                if entry.name.endswith(".tmp"):
                    os.unlink(entry.path)  # a capture cut short by a crash
                elif entry.name.endswith(SUFFIX) and entry.is_file():
                    st = entry.stat()
                    found.append((st.st_mtime, entry.name, on_disk(st.st_size)))
            for mtime, name, size in sorted(found):
                self._files[name] = (size, mtime)
                self._used += size

    @property
    def enabled(self) -> bool:
        return self.per_attempt > 0

    @property
    def tail_lines(self) -> int:
        """Lines to ask Docker for: as many as could fit in `per_attempt` (each costs at least
        RECORD_OVERHEAD), so the tail in bytes is all there."""
        return self.per_attempt // RECORD_OVERHEAD + 1

    def bytes_used(self) -> int:
        """Disk bytes of the retained files (whole blocks)."""
        with self._lock:
            return self._used

    def files(self) -> int:
        with self._lock:
            return len(self._files)

    def _name(self, task_id: str, attempt: int) -> str:
        safe = task_id if _SAFE_ID.match(task_id) else hashlib.sha256(task_id.encode()).hexdigest()[:32]
        return f"{safe}.{int(attempt)}{SUFFIX}"

    def has(self, task_id: str, attempt: int) -> bool:
        with self._lock:
            return self._name(task_id, attempt) in self._files

    def save(self, task_id: str, attempt: int, records: Iterable[Record]) -> int:
        """Keep the newest `per_attempt` bytes of `records` for this attempt (replacing an earlier
        copy); returns the bytes written. Written to a temporary file then renamed: a reader sees
        the old copy or the new one, never half of one. No output writes no file (it would cost
        an inode and a directory entry, and no size bound would ever remove it)."""
        if not self.enabled:
            return 0
        data = encode(tail_bytes(records, self.per_attempt))
        name = self._name(task_id, attempt)
        path = os.path.join(self.root, name)
        if not data:
            with self._lock:
                self._forget(name)
                self._empty[name] = None
                self._empty.move_to_end(name)
                while len(self._empty) > self.max_files:
                    self._empty.popitem(last=False)
            return 0
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with _quiet():
                os.unlink(tmp)
            raise
        with self._lock:
            old = self._files.pop(name, None)
            if old is not None:
                self._used -= old[0]
            self._empty.pop(name, None)
            size = on_disk(len(data))
            self._files[name] = (size, self.clock())
            self._used += size
        self.prune()
        return len(data)

    def records(self, task_id: str, attempt: int) -> list[Record] | None:
        """The attempt's retained records ([] for one that printed nothing, while remembered),
        or None when none are kept."""
        name = self._name(task_id, attempt)
        try:
            with open(os.path.join(self.root, name), "rb") as f:
                return decode(f.read())
        except FileNotFoundError:
            with self._lock:
                if name in self._empty:
                    return []
                old = self._files.pop(name, None)
                if old is not None:
                    self._used -= old[0]
            return None

    def prune(self) -> int:
        """Apply the age, total-size and file-count bounds, oldest files first; returns how many
        files were deleted."""
        horizon = self.clock() - self.max_age
        doomed = 0
        with self._lock:
            while self._files:
                name, (size, saved) = next(iter(self._files.items()))
                if saved >= horizon and self._used <= self.total and len(self._files) <= self.max_files:
                    break
                self._files.popitem(last=False)
                self._used -= size
                with _quiet():  # under the lock: a save of the same attempt meanwhile is not lost
                    os.unlink(os.path.join(self.root, name))
                doomed += 1
            while self._empty and len(self._empty) > self.max_files:
                self._empty.popitem(last=False)
        if doomed:
            log.info("retained logs: pruned %d attempts (age, size or count bound)", doomed)
        return doomed

    def _forget(self, name: str) -> None:
        """Drop an earlier copy of an attempt (lock held)."""
        old = self._files.pop(name, None)
        if old is not None:
            self._used -= old[0]
            with _quiet():
                os.unlink(os.path.join(self.root, name))


class _quiet:
    """Ignore a file that is already gone (or cannot be deleted): a bound is retried next prune."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> bool:
        return kind is not None and issubclass(kind, OSError)
