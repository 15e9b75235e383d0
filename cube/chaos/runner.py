"""Plays a chaos script against a cluster and checks the invariants: `cube chaos run` and the tests.

The runner prints each step as it runs and each invariant as it is checked, then a PASS/FAIL
summary. It records what it needs to judge the cluster afterwards (docs/chaos.md, "Invariants"):
every task.start it attempted and its outcome (acknowledged, refused, unanswered) with the
desired state the manager acknowledged, stops that got no answer (they may still be applied),
every service request and the replicas and version the manager acknowledged (or an unanswered
request may still set),
the failures the script declared or caused with `container` steps, and the disruption windows
of its workers (when which worker was paused, killed or cut off: restart accounting and the
overlap rule). A Docker event watcher runs from before the first step to the end. A failed step
stops the script, but the invariants are still checked and the cluster is always torn down
(processes, containers, temp dir).
"""
from __future__ import annotations

import re
import signal as signals
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from cube.chaos import invariants, steps
from cube.chaos.script import ClusterSpec, Script, ScriptError, load
from cube.harness import ACTORS, Cluster
from cube.wire.client import Client, Unreachable
from cube.wire.errors import IN_DOUBT, UNAVAILABLE, CubeError, Unavailable

Out = Callable[[str], None]
_TEMPLATE = re.compile(r"\$\{([A-Za-z0-9_.\-\[\]]+)\}")


@dataclass
class Result:
    name: str
    passed: bool
    steps_run: int = 0
    steps_total: int = 0
    failed_step: str = ""
    invariants: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    acknowledged: int = 0
    services: int = 0


_RANK = {invariants.REFUSED: 0, invariants.UNANSWERED: 1, invariants.ACKED: 2}


class Run:
    """The state of one script run: the cluster, what the manager promised, aliases, faults."""

    def __init__(self, script: Script, cluster: Cluster, out: Out):
        self.script = script
        self.cluster = cluster
        self.out = out
        self.expect: dict[str, invariants.Expect] = {}  # every task id the runner tried to start
        self.services: dict[str, invariants.ServiceExpect] = {}  # every service the runner tried to create
        self.asked: set[str] = set()  # every task id a start was sent for (in flight included)
        self.unnamed_starts = 0  # task.starts without an id that got no answer: tasks of unknown ids, maybe
        self.allowance: Counter[str] = Counter()  # task id -> failures declared or caused by container steps
        self.windows: list[invariants.Window] = []  # disruption windows of the script's workers
        self.watcher = invariants.RunWatcher(cluster.token, self.disrupted_at)
        self.aliases: dict[str, list[str]] = {}
        self.background: list[threading.Thread] = []
        self.background_errors: list[str] = []
        self.paused: set[str] = set()
        self.down: set[str] = set()  # processes killed on purpose and not started again
        self.rule_seq = 0
        self.free_ports: dict[str, int] = {}  # ${free_port.NAME} -> the port chosen for it
        self.last_invariants: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    # ---- what the manager promised ----------------------------------------------------------------
    @property
    def acked(self) -> dict[str, str]:
        """Acknowledged task id -> the desired state the manager acknowledged last."""
        with self._lock:
            return {tid: e.desired for tid, e in self.expect.items() if e.start == invariants.ACKED}

    def acknowledge(self, task_id: str, desired: str) -> None:
        with self._lock:
            e = self.expect.setdefault(task_id, invariants.Expect())
            e.start, e.desired = invariants.ACKED, desired

    def record_start(self, task_id: str, tries: list[str], desired: str | None = None) -> str:
        """Record a task.start and what its tries got ("ok", "error" reply, "none" = no answer):
        acked if one was acknowledged, else unanswered if one got no answer, else refused."""
        outcome = (invariants.ACKED if "ok" in tries else invariants.UNANSWERED if "none" in tries
                   else invariants.REFUSED)
        with self._lock:
            e = self.expect.get(task_id)
            if e is None:
                e = self.expect[task_id] = invariants.Expect(start=outcome)
            elif _RANK[outcome] > _RANK[e.start]:
                e.start = outcome
            if outcome == invariants.ACKED and desired:
                e.desired = desired
        return outcome

    def asking(self, task_id: str) -> None:
        """A task.start for this id is about to be sent (a snapshot may see the task before the
        reply is recorded)."""
        with self._lock:
            self.asked.add(task_id)

    def doubt(self, task_id: str, desired: str) -> None:
        """A request that may change the desired state got no answer: it may still be applied."""
        with self._lock:
            e = self.expect.get(task_id)
            if e is not None and desired != e.desired:
                e.doubt.add(desired)

    def allow(self, task_id: str, n: int = 1) -> None:
        with self._lock:
            self.allowance[task_id] += n

    def expectations(self) -> dict[str, invariants.Expect]:
        with self._lock:
            return {tid: invariants.Expect(e.start, e.desired, set(e.doubt), self.allowance[tid])
                    for tid, e in self.expect.items()}

    # ---- services the script asked for (docs/chaos.md, "Services") -----------------------------------
    def record_service(self, action: str, body: dict[str, Any], tries: list[str],
                       reply: dict[str, Any] | None) -> str:
        """Record a service request and what its tries got ("ok", "error", "none" as for starts):
        an acknowledged reply sets the replicas and version the manager acknowledged; a request
        that got no answer may still be applied (its replicas or version become acceptable too);
        one refused by error replies only must not be. Returns acked, unanswered or refused."""
        outcome = (invariants.ACKED if "ok" in tries else invariants.UNANSWERED if "none" in tries
                   else invariants.REFUSED)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return outcome
        view = (reply or {}).get("service") if isinstance((reply or {}).get("service"), dict) else None
        with self._lock:
            e = self.services.get(name)
            if action == "create":
                if e is None or (e.removed and outcome != invariants.REFUSED):
                    e = self.services[name] = invariants.ServiceExpect(start=outcome)
                    replicas = body.get("replicas", 1)
                    e.replicas = replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 1
                elif _RANK[outcome] > _RANK[e.start]:
                    e.start = outcome
            if e is None:
                return outcome  # a request about a service the script never created: judged as unknown
            if outcome == invariants.ACKED and action == "rm":
                e.removed = invariants.ACKED
            elif outcome == invariants.UNANSWERED and action == "rm" and not e.removed:
                e.removed = invariants.UNANSWERED
            elif outcome == invariants.ACKED and view is not None:
                if action == "scale" or action == "create":
                    e.replicas_doubt.clear()
                if action in ("update", "rollback", "create"):
                    e.version_doubt.clear()
                e.replicas = int(view.get("replicas", e.replicas))
                e.version = int(view.get("version", e.version))
                e.previous_version = int(view.get("previous_version", e.previous_version))
            elif outcome == invariants.UNANSWERED:
                if action == "scale" and isinstance(body.get("replicas"), int):
                    e.replicas_doubt.add(body["replicas"])
                elif action == "update":  # the next version, if it is applied (docs/protocol.md)
                    e.version_doubt.add(max(e.version, e.previous_version, *e.version_doubt) + 1)
                elif action == "rollback" and e.previous_version:
                    e.version_doubt.add(e.previous_version)
        return outcome

    def allow_service(self, name: str, version: int, n: int) -> bool:
        """Each task of service `name` (of `version`; 0: any) may fail `n` more times; False if
        the script never asked for that service."""
        with self._lock:
            e = self.services.get(name)
            if e is None:
                return False
            e.allowance[version] = e.allowance.get(version, 0) + n
            return True

    def service_expectations(self) -> dict[str, invariants.ServiceExpect]:
        with self._lock:
            return {name: invariants.ServiceExpect(e.start, e.replicas, e.version, e.previous_version,
                                                   set(e.replicas_doubt), set(e.version_doubt), e.removed,
                                                   dict(e.allowance))
                    for name, e in self.services.items()}

    # ---- disruption windows (docs/chaos.md, "Disruption windows") -----------------------------------
    @property
    def slack(self) -> float:
        """How long a window still counts after its disruption ended: the grace period, plus a
        margin for the manager to notice the worker came back."""
        return self.script.cluster.grace + invariants.NOTICE_MARGIN

    def disrupt(self, worker: str, cause: str, key: str, end: float | None = None) -> str:
        """The script is about to disrupt a worker (full name) until `end_disruption(key)` (or
        wall-clock `end`): a task placed there meanwhile may fail once, and a container of its
        may overlap the task's next attempt. Called before the disruption starts."""
        with self._lock:
            self.windows.append(invariants.Window(worker, cause, time.time(), end, key))
        until = f"for {end - time.time():.1f}s" if end is not None else "until it ends"
        return f"{worker} disrupted ({cause}) {until}, + {self.slack:g}s"

    def end_disruption(self, key: str, prefix: bool = False) -> int:
        """The disruptions with this key (or key prefix) end now; returns how many were open."""
        now = time.time()
        n = 0
        with self._lock:
            for w in self.windows:
                if (w.key.startswith(key) if prefix else w.key == key) and (w.end is None or w.end > now):
                    w.end = now
                    n += 1
        return n

    def disrupted_at(self, worker: str, at: float) -> bool:
        """Whether `worker` was in a disruption window at wall-clock time `at` (the RunWatcher's
        excuse for an overlap with the next attempt)."""
        with self._lock:
            return any(w.worker == worker and w.covers(at, self.slack) for w in self.windows)

    def window_list(self) -> list[invariants.Window]:
        with self._lock:
            return [invariants.Window(w.worker, w.cause, w.start, w.end, w.key) for w in self.windows]

    def api_tries(self, msg_type: str, body: dict[str, Any], retries: int = 3,
                  timeout: float = 3.0) -> tuple[dict[str, Any] | None, CubeError | None, list[str]]:
        """Call the manager; an unanswered or `unavailable` request is re-sent as is (idempotent by
        task id). Returns the reply (or None), the last error, and what each try got: "ok",
        "error" (an error reply: not applied) or "none" (no answer at all, or the manager's own
        `in_doubt`: the request may still be applied)."""
        tries: list[str] = []
        error: CubeError | None = None
        for attempt in range(retries + 1):
            creds = self.cluster.credentials()
            client = Client(self.cluster.endpoints["api"], name="chaos", timeout=timeout,
                            curve=creds.curve() if creds else None)
            try:
                reply = client.call(msg_type, body)
                tries.append("ok")
                return reply, None, tries
            except Unreachable as e:  # connection refused: the request was never sent
                tries.append("error")
                error = e
            except Unavailable as e:  # raised by the Client when no answer came at all
                tries.append("none")
                error = e
            except CubeError as e:  # an error reply: `unavailable` = not applied, `in_doubt` = maybe
                tries.append("none" if e.code == IN_DOUBT else "error")
                error = e
            finally:
                client.close()
            if error.code not in (UNAVAILABLE, IN_DOUBT):
                break
            if attempt < retries:
                time.sleep(0.2)
        return None, error, tries

    def api(self, msg_type: str, body: dict[str, Any], retries: int = 3, timeout: float = 3.0) -> dict[str, Any]:
        reply, error, _ = self.api_tries(msg_type, body, retries, timeout)
        if reply is None:
            assert error is not None
            raise error
        return reply

    def task(self, task_id: str) -> dict[str, Any]:
        return self.cluster.call("task.inspect", {"id": task_id})["task"]

    # ---- names ----------------------------------------------------------------------------------------
    def task_ids(self, ref: Any) -> list[str]:
        refs = ref if isinstance(ref, list) else [ref]
        ids: list[str] = []
        for r in refs:
            if not isinstance(r, str) or not r:
                raise steps.StepFailed(f"task reference {r!r}: give an alias (start as=...) or an id")
            m = re.fullmatch(r"(.+)\[(\d+)\]", r)
            if r in self.aliases:
                ids += self.aliases[r]
            elif m and m.group(1) in self.aliases:
                ids.append(self._lookup(r))
            else:
                ids.append(str(self.resolve(r)))
        return ids

    def resolve(self, value: Any) -> Any:
        """Replace ${alias}, ${alias.field}, ${alias[i]}, ${w1} and ${token} in strings, recursively."""
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _TEMPLATE.fullmatch(value)
        if whole:
            return self._lookup(whole.group(1))  # keeps the type: ${a.attempt} is an int
        return _TEMPLATE.sub(lambda m: str(self._lookup(m.group(1))), value)

    def _lookup(self, expr: str) -> Any:
        if expr == "token":
            return self.cluster.token
        if expr.startswith("free_port.") and len(expr) > len("free_port."):
            return self.free_port(expr[len("free_port."):])
        if expr in self.script.cluster.workers:
            return self.cluster.worker_name(expr)
        base, _, attr = expr.partition(".")
        index = 0
        m = re.fullmatch(r"(.+)\[(\d+)\]", base)
        if m:
            base, index = m.group(1), int(m.group(2))
        if base not in self.aliases or index >= len(self.aliases[base]):
            raise steps.StepFailed(f"unknown name ${{{expr}}} (aliases: {', '.join(self.aliases) or 'none'})")
        task_id = self.aliases[base][index]
        return self.task(task_id)[attr] if attr else task_id

    def free_port(self, name: str) -> int:
        """`${free_port.NAME}`: a loopback TCP port that was free when the run first named it, below
        the ephemeral range and none of the cluster's own (docs/chaos.md); the same number for the
        same name for the rest of the run, so a script can pin a host port without colliding with
        whatever else the machine runs."""
        with self._lock:
            if name not in self.free_ports:
                taken = set(self.free_ports.values())
                self.free_ports[name] = next(p for p in iter(self.cluster._free_port, None) if p not in taken)
            return self.free_ports[name]

    def worker_names(self) -> list[str]:
        """The full names of the script's workers, started yet or not."""
        return [self.cluster.worker_name(w) for w in self.script.cluster.workers]

    def actor_name(self, name: str) -> str:
        """A worker's short name (w1) as the full name it uses on the wire; others unchanged."""
        return self.cluster.worker_name(name) if name in self.script.cluster.workers else name

    def target_name(self, name: str) -> str:
        known = (*ACTORS, "supervisor", "cube-manager", *self.script.cluster.workers)
        if name not in known:
            raise steps.StepFailed(f"unknown target {name!r}: use one of {', '.join(known)}")
        return name

    def process_targets(self) -> set[str]:
        return {"cube-manager", "supervisor", *self.script.cluster.workers}

    def live_workers(self) -> list[str]:
        return [w for w in self.script.cluster.workers if w not in self.down and w in self.cluster.workers]

    # ---- background and invariants -----------------------------------------------------------------------
    def join_background(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        threads, self.background = self.background, []
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                self.background_errors.append(f"{t.name} still running after {timeout:g}s")
        return len(threads)

    def collect(self) -> invariants.Snapshot:
        with self._lock:
            allowance, asked, unnamed = dict(self.allowance), set(self.asked), self.unnamed_starts
        s = invariants.snapshot(self.cluster, self.expectations(),
                                [self.cluster.worker_name(w) for w in self.live_workers()],
                                self.window_list(), self.slack, self.watcher,
                                service_expect=self.service_expectations(), allowance=allowance)
        s.asked, s.unnamed_starts = asked, unnamed
        return s

    def check_invariants(self, names: list[str] | None, bound: float) -> bool:
        unknown = [n for n in names or [] if n not in invariants.CHECKS]
        if unknown:
            raise steps.StepFailed(f"unknown invariant {unknown[0]!r}; known: {', '.join(invariants.CHECKS)}")
        results, took = invariants.settle(self.collect, bound, names)
        self.last_invariants = {k: v[0] for k, v in results.items()}
        for name, (problems, summary) in results.items():
            if problems:
                self.out(f"  FAIL {name}: {len(problems)} problems (after {took:.1f}s of a {bound:g}s bound)")
                for p in problems[:10]:
                    self.out(f"         - {p}")
                if len(problems) > 10:
                    self.out(f"         ... and {len(problems) - 10} more")
            else:
                self.out(f"  ok   {name}: {summary}")
        return all(not p for p, _ in results.values())


def start(cluster: Cluster, spec: ClusterSpec) -> None:
    """The manager, then the workers not started `later`, all at once, then wait for them."""
    cluster.start_manager()
    now = [w for w in spec.workers if w not in spec.later]
    for short in now:
        cluster.start_worker(short, wait=False)
    for short in now:
        cluster.wait_worker_ready(short)


def run_script(path_or_script: str | Script, out: Out = print, keep: bool = False,
               log_level: str = "INFO") -> Result:
    """Start a local cluster for the script, play it, check the invariants, tear it all down."""
    t0 = time.monotonic()
    try:
        script = load(path_or_script) if isinstance(path_or_script, str) else path_or_script
    except ScriptError as e:
        out(f"FAIL: {e}")
        return Result(str(path_or_script), False, failed_step=str(e))
    result = Result(script.name, False, steps_total=len(script.steps))
    c = script.cluster
    out(f"chaos script: {script.name}" + (f" ({script.path})" if script.path else ""))
    if script.description:
        out(f"  {' '.join(script.description.split())}")
    cluster = Cluster(scheduler=c.scheduler, grace=c.grace, heartbeat=c.heartbeat, store=c.store,
                      worker_args=c.worker_args, stop_timeout=c.stop_timeout, chaos=True, log_level=log_level,
                      prefix="x", keep=keep)
    out(f"cluster: manager + {len(c.workers)} workers ({', '.join(cluster.worker_name(w) for w in c.workers)}), "
        f"grace {c.grace:g}s, heartbeat {c.heartbeat:g}s, {c.scheduler}, chaos rules {cluster.rules.path}")
    run = Run(script, cluster, out)
    ok = True
    previous = _teardown_on_sigterm(out)
    try:
        try:
            run.watcher.start(cluster.containers)  # before the first container can start
            start(cluster, c)
        except Exception as e:
            out(f"FAIL: the cluster did not start: {e}")
            result.failed_step = "cluster start"
            ok = False
        if ok:
            ok = _play(run, result)
        ok = _finish(run, result) and ok
        if not ok:
            out(cluster.log_tail())
    finally:
        if previous is not None:
            signals.signal(signals.SIGTERM, signals.SIG_IGN)  # let the teardown finish
        run.watcher.stop()
        try:
            cluster.close()
        except Exception as e:  # teardown must not hide the verdict; say what was left
            out(f"warning: teardown of {cluster.tmp} incomplete: {e}")
        if previous is not None:
            signals.signal(signals.SIGTERM, previous)
    result.passed = ok
    result.seconds = time.monotonic() - t0
    result.acknowledged = len(run.acked)
    result.services = sum(1 for e in run.service_expectations().values() if e.start == invariants.ACKED)
    verdict = "PASS" if ok else "FAIL"
    out(f"{verdict} {script.name}: {result.steps_run}/{result.steps_total} steps, "
        f"{len(result.invariants)} invariants, {result.acknowledged} tasks"
        + (f" and {result.services} service{'s' if result.services != 1 else ''}" if result.services else "")
        + f" acknowledged, {result.seconds:.1f}s"
        + (f"; failed at {result.failed_step}" if result.failed_step else ""))
    return result


def _teardown_on_sigterm(out: Out) -> Any:
    """SIGTERM (e.g. the test pool giving up on a script) ends the run through its `finally`, so
    the cluster's processes and containers are still removed; returns the previous handler (None
    off the main thread, where signal handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        out("FAIL: terminated (SIGTERM); tearing the cluster down")
        raise KeyboardInterrupt("SIGTERM")
    return signals.signal(signals.SIGTERM, stop)


def _play(run: Run, result: Result) -> bool:
    for step in run.script.steps:
        run.out(f"[{step.number:2}] {step.describe()}")
        t = time.monotonic()
        try:
            said = steps.STEPS[step.do](run, step)
        except (steps.StepFailed, CubeError, TimeoutError, LookupError, ValueError) as e:
            run.out(f"     FAIL ({time.monotonic() - t:.2f}s): {e}")
            result.failed_step = f"step {step.number} ({step.do})"
            return False
        except Exception as e:  # a bug in the runner or a broken cluster: show it all
            run.out(f"     FAIL ({time.monotonic() - t:.2f}s): {type(e).__name__}: {e}\n{traceback.format_exc()}")
            result.failed_step = f"step {step.number} ({step.do})"
            return False
        result.steps_run += 1
        run.out(f"     ok ({time.monotonic() - t:.2f}s): {said}")
    return True


def _finish(run: Run, result: Result) -> bool:
    """Let background steps end, lift every fault, then check all invariants within the bound."""
    ok = True
    run.join_background(120)
    if run.background_errors:
        run.out(f"FAIL background steps: {'; '.join(run.background_errors)}")
        result.failed_step = result.failed_step or "background step"
        ok = False
    run.cluster.rules.remove()
    run.end_disruption("rule:", prefix=True)
    for target in sorted(run.paused):
        try:
            run.cluster.signal(target, signals.SIGCONT)
            run.out(f"(resumed {target}, still paused at the end)")
        except LookupError:
            pass
        run.end_disruption(f"paused:{target}")
    run.paused.clear()
    bound = run.script.cluster.settle
    run.out(f"invariants (within {bound:g}s):")
    try:
        ok = run.check_invariants(None, bound) and ok
    except Exception as e:
        run.out(f"  FAIL the invariants could not be checked: {type(e).__name__}: {e}")
        ok = False
    result.invariants = run.last_invariants
    return ok
