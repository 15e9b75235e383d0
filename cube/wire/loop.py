"""A single-threaded event loop over ZeroMQ sockets, timers and blocking work.

Every actor runs on one Loop: sockets are only touched from the loop's thread (ZeroMQ sockets
are not thread-safe). Blocking calls (Docker, HTTP probes) go to a thread pool and come back
as callbacks on the loop thread. A callback that raises is logged and counted; it never stops
the loop.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import select
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import zmq

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Timer:
    when: float
    seq: int
    fn: Callable[[], Any]
    interval: float | None = None
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self, name: str, ctx: zmq.Context | None = None, threads: int = 4,
                 clock: Callable[[], float] = time.monotonic, many_sockets: bool = False,
                 inline_blocking: bool = False):
        self.name = name
        # zmq_poll costs a look at every socket on every turn: a loop hosting thousands (a
        # benchmark's simulated workers) waits on their descriptors in epoll instead (_Ready).
        self.many_sockets = many_sockets
        self._ready = _Ready() if many_sockets else None
        # "Blocking" calls that return at once (a simulated runtime's): run on the loop's own
        # thread, their `done` on the next turn; a thread hop each would cost more than the call.
        self.inline_blocking = inline_blocking
        self.clock = clock  # timers read this: tests pass a clock they move instead of sleeping
        self.ctx = ctx or zmq.Context()
        self.poller = zmq.Poller()
        self.errors = 0
        self._readers: dict[Any, Callable[[Any], None]] = {}
        # (when, seq, timer): the heap compares tuples in C. Every request arms a timeout that is
        # cancelled when answered, so thousands of timers a second go through it.
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._calls: queue.SimpleQueue[Callable[[], Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.poller.register(self._wake_r, zmq.POLLIN)
        if self._ready is not None:
            self._ready.add_fd(self._wake_r)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        # Short blocking calls that must not queue behind long ones (e.g. a worker's container
        # listing for its hello, behind image pulls and container starts).
        self._urgent = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name + "-urgent")
        self._running = False

    # ---- registration ---------------------------------------------------------------------
    def add_reader(self, sock: Any, fn: Callable[[Any], None]) -> None:
        self._readers[sock] = fn
        if self._ready is not None:
            self._ready.add(sock)
        else:
            self.poller.register(sock, zmq.POLLIN)

    def remove_reader(self, sock: Any) -> None:
        if self._readers.pop(sock, None) is not None:
            if self._ready is not None:
                self._ready.remove(sock)
            else:
                self.poller.unregister(sock)

    def sent_on(self, sock: Any) -> None:
        """A send on `sock` may have taken in its pending signals: look at it again (_Ready)."""
        if self._ready is not None and sock in self._readers:
            self._ready.check.add(sock)

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        timer = Timer(self.clock() + delay, next(self._seq), fn)
        heapq.heappush(self._timers, (timer.when, timer.seq, timer))
        return timer

    def call_every(self, interval: float, fn: Callable[[], Any], first: float | None = None) -> Timer:
        timer = Timer(self.clock() + (interval if first is None else first), next(self._seq), fn, interval)
        heapq.heappush(self._timers, (timer.when, timer.seq, timer))
        return timer

    def call_soon_threadsafe(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the loop thread; safe to call from any thread."""
        self._calls.put(fn)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full, so the loop is already awake

    def run_blocking(self, fn: Callable[..., Any], *args: Any,
                     done: Callable[[Any, BaseException | None], None] | None = None, urgent: bool = False) -> None:
        """Run `fn(*args)` in the pool (`urgent`: in a thread of its own that long calls never
        hold); `done(result, error)` then runs on the loop thread."""
        def work() -> None:
            try:
                result, error = fn(*args), None
            except BaseException as e:  # handed to `done`, which decides
                result, error = None, e
            if done is not None:
                if self.inline_blocking:  # on the loop's thread already: no wake-up needed
                    self._calls.put(lambda: done(result, error))
                else:
                    self.call_soon_threadsafe(lambda: done(result, error))
            elif error is not None:
                log.error("%s: background call %s failed: %s", self.name, getattr(fn, "__name__", fn), error)
        if self.inline_blocking:
            work()
            return
        (self._urgent if urgent else self._executor).submit(work)

    # ---- running ----------------------------------------------------------------------------
    def stop(self) -> None:
        self._running = False
        self.call_soon_threadsafe(lambda: None)

    def run(self) -> None:
        self._running = True
        while self._running:
            self.run_once()

    def run_once(self, max_wait: float = 1.0) -> None:
        timeout = self._next_timeout(max_wait)
        if self._ready is not None:
            readable = self._ready.wait(timeout)
        else:
            readable = [sock for sock, _ in self.poller.poll(timeout * 1000)]
        for sock in readable:
            if sock == self._wake_r:
                self._drain_wakeups()
                continue
            fn = self._readers.get(sock)
            if fn is not None:
                self._safely(fn, sock)
        self._run_calls()
        self._run_timers()

    def drain(self) -> None:
        """Wait for the blocking calls in flight (so none writes to the wake pipe once closed)."""
        self._executor.shutdown(wait=True)
        self._urgent.shutdown(wait=True)

    def close(self) -> None:
        self._running = False
        if self._ready is not None:
            self._ready.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._urgent.shutdown(wait=False, cancel_futures=True)
        for sock in list(self._readers):
            if isinstance(sock, zmq.Socket):
                sock.close(linger=0)
        self._readers.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _next_timeout(self, max_wait: float) -> float:
        if not self._calls.empty():
            return 0.0
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if not timers:
            return max_wait
        return max(0.0, min(max_wait, timers[0][0] - self.clock()))

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _run_calls(self) -> None:
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            self._safely(fn)

    def _run_timers(self) -> None:
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)[2]
            if timer.cancelled:
                continue
            if timer.interval is not None:
                timer.when = now + timer.interval
                timer.seq = next(self._seq)
                heapq.heappush(self._timers, (timer.when, timer.seq, timer))
            self._safely(timer.fn)

    def safely(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call `fn(*args)`; an exception is logged and counted, never raised."""
        self._safely(fn, *args)

    def _safely(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.errors += 1
            log.exception("%s: callback %s failed; the actor carries on", self.name, getattr(fn, "__name__", fn))


class _Ready:
    """Which sockets have messages, from epoll over their ZMQ_FD descriptors: the cost of a turn
    follows the sockets that are busy, not how many there are.

    ZMQ_FD is edge-like: it signals that the socket's state changed, and reading ZMQ_EVENTS
    takes the signal. So a socket is looked at (ZMQ_EVENTS) when its descriptor fires, again on
    the next turn after it was read (it may hold more than one batch), and after anything was
    sent on it (a send can take in the signal of a message that arrived meanwhile)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.by_fd: dict[int, Any] = {}
        self.fd_of: dict[Any, int] = {}
        self.check: set[Any] = set()  # zmq sockets to look at on the next turn

    def add_fd(self, fd: int, sock: Any = None) -> None:
        self.by_fd[fd] = fd if sock is None else sock
        self.fd_of[fd if sock is None else sock] = fd
        try:
            self.epoll.register(fd, select.EPOLLIN)
        except FileExistsError:  # the number of a closed socket's descriptor, reused
            self.epoll.modify(fd, select.EPOLLIN)

    def add(self, sock: Any) -> None:
        if not isinstance(sock, zmq.Socket):
            self.add_fd(sock)
            return
        self.add_fd(sock.getsockopt(zmq.FD), sock)
        self.check.add(sock)  # messages may be waiting already

    def remove(self, sock: Any) -> None:
        self.check.discard(sock)
        fd = self.fd_of.pop(sock, None)
        if fd is not None and self.by_fd.get(fd) == sock:  # == : a plain descriptor is an int
            del self.by_fd[fd]
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass  # closed with its socket already

    def wait(self, timeout: float) -> list[Any]:
        """The readable sockets (and descriptors), waiting at most `timeout` seconds for one."""
        fired = self.epoll.poll(0 if self.check else timeout)
        out = []
        for fd, _ in fired:
            s = self.by_fd.get(fd)
            if isinstance(s, zmq.Socket):
                self.check.add(s)
            elif s is not None:
                out.append(s)
        check, self.check = self.check, set()
        for s in check:
            if s.closed:
                continue
            try:
                if not s.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    continue
            except zmq.ZMQError:
                continue
            self.check.add(s)  # read this turn: look again on the next
            out.append(s)
        return out

    def close(self) -> None:
        self.epoll.close()
