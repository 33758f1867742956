"""The built-in engine of the load gate: one burst, an optional open-model phase, exact latencies.

Over 400 lines because the burst, the open-model schedule, the first-push check and the spread
over client processes share one session, one tally and one descriptor budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sync_ci.errors import ExitCode, SyncCIError, UnreachableError, UsageError
from sync_ci.gates import histogram
from sync_ci.gates.http import GuardedSession, HttpPolicy, new_session, read_only_policy
from sync_ci.gates.outcome import PhaseOutcome, merge_phase
from sync_ci.gates.scenario import (
    LoadScenario,
    PlannedRequest,
    answer_problem,
    open_schedule,
    plan_burst,
    push_request,
    split,
)

# Descriptors a process keeps beyond one socket per in-flight request (stdio, loop, pipes, imports).
DESCRIPTOR_MARGIN = 64
DEFAULT_TIMEOUT_S = 60.0
# How far ahead of the start signal the shared start instant lies: room for every child to wake.
START_LEAD_NS = 10_000_000
ProgressFn = Callable[[str], None]


class HostLimitError(SyncCIError):
    """This host cannot run the scenario as planned (too few file descriptors): nothing measured."""

    exit_code = ExitCode.UNMEASURED


# --- the engine (edge) ---------------------------------------------------------------------------


def ensure_descriptors(needed: int) -> int:
    """Raise the soft open-file limit to the hard one; refuse when it still is below `needed`."""
    try:
        import resource
    except ImportError:  # Windows: no RLIMIT_NOFILE; sockets are not bounded by it
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
        # macOS refuses values above OPEN_MAX; the check below decides.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise HostLimitError(
            f"this host allows {soft} open files per process (hard limit "
            f"{'unlimited' if hard == resource.RLIM_INFINITY else hard}) but the burst needs {needed}; "
            f"raise it (e.g. `ulimit -n {needed}`) or spread the client with --processes"
        )
    return int(soft)


def check_plan_allowed(plan: Iterable[PlannedRequest], base_url: str, policy: HttpPolicy) -> None:
    """Refuse (before any byte is sent) a plan the target's write policy forbids."""
    for method, path in sorted({(r.method, r.path) for r in plan}):
        policy.apply(method, f"{base_url}{path}", {})


def _cpu_s() -> float:
    return time.process_time()


async def _send(
    session: GuardedSession, base_url: str, request: PlannedRequest
) -> tuple[int, str, bytes]:
    """Send one request and read the whole answer; return (status, or 0 on a network error; error;
    body)."""
    import aiohttp

    try:
        async with session.request(
            request.method,
            f"{base_url}{request.path}",
            data=request.body or None,
            headers=request.headers,
            allow_redirects=False,
        ) as response:
            body = await response.read()
            ray = response.headers.get("cf-ray", "no cf-ray")
            return response.status, f" ({ray})" if response.status >= 400 else "", body
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return 0, f"{request.operation}: {type(exc).__name__}: {str(exc)[:120]}", b""


async def fire_burst(
    plan: Sequence[PlannedRequest],
    base_url: str,
    *,
    policy: HttpPolicy | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ready: Callable[[], None] | None = None,
    progress: ProgressFn | None = None,
) -> PhaseOutcome:
    """Fire every planned request at once (`sync_ci.gates.burst`); return exact outcomes.

    Without a `policy` the client is read-only: a planned push is refused before anything is sent.
    """
    from sync_ci.gates import burst

    return await burst.fire(
        plan,
        base_url,
        policy or read_only_policy(),
        timeout_s=timeout_s,
        ready=ready,
        progress=progress,
    )


async def run_open_model(
    scenario: LoadScenario,
    tenant_secret: str,
    base_url: str,
    *,
    policy: HttpPolicy | None = None,
    rate: float,
    duration_s: float,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: ProgressFn | None = None,
) -> PhaseOutcome:
    """Send on a fixed schedule; latency counts from each request's intended send time (wrk2-style).

    Without a `policy` the client is read-only: a scheduled push is refused before it is sent.
    """
    from sync_ci.gates import burst_open

    schedule = open_schedule(scenario, tenant_secret, rate=rate, duration_s=duration_s)
    return await burst_open.offer(
        schedule, base_url, policy or read_only_policy(), timeout_s=timeout_s, progress=progress
    )


async def preflight(base_url: str, timeout_s: float = 5.0) -> str:
    """Return '' when the Worker answers GET /_health, else why it could not be reached."""
    import aiohttp

    async with new_session(read_only_policy(), timeout_s) as session:
        try:
            async with session.get(f"{base_url}/_health", allow_redirects=False) as response:
                await response.read()
                return ""
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return f"{base_url}/_health: {type(exc).__name__}: {str(exc)[:160]}"


class MisplacedWrite(SyncCIError):
    """The Worker did not store the first push under the run's CI root: nothing more is sent."""

    exit_code = ExitCode.FAILED


FIRST_PUSH_ATTEMPTS = 3


async def _send_one(
    base_url: str, request: PlannedRequest, policy: HttpPolicy, timeout_s: float
) -> tuple[int, str, bytes]:
    async with new_session(policy, timeout_s) as session:
        return await _send(session, base_url, request)


def confirm_first_push(
    scenario: LoadScenario,
    tenant_secret: str,
    base_url: str,
    *,
    policy: HttpPolicy,
    read_back: Callable[[str], bytes | None],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Send one push and read it back from the bucket under the CI root before any other write.

    Returns the key it landed at; raises MisplacedWrite (exit 1) when the Worker answered anything
    but a push stored byte for byte at `<ci root>tenants/<tenant>/state.json`.
    """
    import secrets

    from sync_ci.contract import tenant_state_key

    if policy.read_only or not scenario.pushes:
        return ""
    tenant = scenario.tenant_ids()[0]
    request = push_request(
        tenant, tenant_secret, scenario.body_bytes, f"first-{secrets.token_hex(4)}"
    )
    key = tenant_state_key(policy.write_root, tenant)
    status, error, body = 0, "", b""
    for _ in range(FIRST_PUSH_ATTEMPTS):  # a 5xx or a dropped connection may be transient
        status, error, body = asyncio.run(_send_one(base_url, request, policy, timeout_s))
        if 0 < status < 500:
            break
    stop = "; stopped before sending any other write"
    if status == 0:
        raise UnreachableError(f"the first push could not be sent ({error.strip()}){stop}")
    problem = answer_problem(request, status, body, root=policy.write_root)
    if problem:
        raise MisplacedWrite(f"the first push {problem}{error}{stop}")
    stored = read_back(key)
    if stored != request.body:
        found = "nothing" if stored is None else f"{len(stored)} other bytes"
        raise MisplacedWrite(
            f"the Worker answered 201 to the first push but the bucket holds {found} at {key}: "
            f"it stores writes outside {policy.write_root}{stop}"
        )
    return key


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadJob:
    """Everything one client process needs (small and picklable for --processes)."""

    base_url: str
    policy: HttpPolicy = field(default_factory=read_only_policy)
    timeout_s: float = DEFAULT_TIMEOUT_S
    scenario: LoadScenario = field(default_factory=LoadScenario)
    tenant_secret: str = ""
    rate: float = 0.0
    duration_s: float = 0.0
    part: int = 0
    parts: int = 1

    def plan(self) -> list[PlannedRequest]:
        """Return this process's slice of the burst."""
        return split(plan_burst(self.scenario, self.tenant_secret), self.parts)[self.part]


async def _run_job(
    job: LoadJob,
    plan: Sequence[PlannedRequest],
    ready: Callable[[], None] | None,
    progress: ProgressFn | None,
) -> list[PhaseOutcome]:
    phases = [
        await fire_burst(
            plan,
            job.base_url,
            policy=job.policy,
            timeout_s=job.timeout_s,
            ready=ready,
            progress=progress,
        )
    ]
    if job.rate > 0:
        phases.append(
            await run_open_model(
                job.scenario,
                job.tenant_secret,
                job.base_url,
                policy=job.policy,
                rate=job.rate,
                duration_s=job.duration_s,
                timeout_s=job.timeout_s,
                progress=progress,
            )
        )
    return phases


def sleep_until(instant_ns: int) -> None:
    """Sleep until `time.monotonic_ns()` reaches `instant_ns` (at once if it has)."""
    while (left_ns := instant_ns - time.monotonic_ns()) > 0:
        time.sleep(left_ns / 1e9)


def _child(job: LoadJob, ready: Any, go: Any, start_at: Any, results: Any) -> None:
    """Entry point of one client process: fire its slice when every process is ready."""

    def wait_for_start() -> None:
        ready.put("ready")
        if not go.wait(timeout=120):
            raise HostLimitError("the parent never gave the start signal")
        # The Event wakes the children one after another; each then waits for one shared
        # instant, so under load they start together instead of in the order they woke.
        sleep_until(start_at.value)

    try:
        plan = job.plan()
        ensure_descriptors(len(plan) + DESCRIPTOR_MARGIN)
        phases = asyncio.run(_run_job(job, plan, wait_for_start, None))
        results.put(("ok", [p.to_json() for p in phases]))
    except Exception as exc:  # reported to the parent, which turns it into one error line
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _await_ready(ready: Any, results: Any, children: Sequence[Any], bound_s: float) -> str:
    """Wait until every child is ready; return why not ('' when all are)."""
    import queue

    pending = len(children)
    deadline = time.monotonic() + bound_s
    while pending:
        try:
            ready.get(timeout=0.1)
            pending -= 1
            continue
        except queue.Empty:
            pass
        try:
            kind, payload = results.get_nowait()
            return str(payload) if kind == "error" else "a client process finished before the start"
        except queue.Empty:
            pass
        if any(not c.is_alive() for c in children):
            return f"a client process exited early (exit code {[c.exitcode for c in children]})"
        if time.monotonic() > deadline:
            return f"client processes were not ready within {bound_s:g} s"
    return ""


def _import_before_fork(job: LoadJob) -> None:
    """Import (once, here) everything a client process runs, so a forked child imports nothing."""
    from sync_ci.gates import burst, burst_open

    del burst, burst_open
    histogram.new()


def run_load(
    job: LoadJob, *, processes: int = 1, progress: ProgressFn | None = None
) -> list[PhaseOutcome]:
    """Run the burst (and open phase) in this process or spread over `processes` children."""
    if processes < 1:
        raise UsageError(f"--processes {processes} must be at least 1")
    if processes == 1:
        plan = job.plan()
        ensure_descriptors(len(plan) + DESCRIPTOR_MARGIN)
        return asyncio.run(_run_job(job, plan, None, progress))
    import multiprocessing
    import queue

    _import_before_fork(job)
    # Forked after the imports, a child starts in milliseconds and shares the parent's pages;
    # spawn (re-importing everything) only where fork is unsafe.
    context: Any = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    start_at = context.Value("q", 0)  # the shared start instant, CLOCK_MONOTONIC nanoseconds
    children = [
        context.Process(
            target=_child,
            args=(
                replace(job, rate=job.rate / processes, part=part, parts=processes),
                ready,
                go,
                start_at,
                results,
            ),
            daemon=True,
        )
        for part in range(processes)
    ]
    for child in children:
        child.start()
    collected: list[list[PhaseOutcome]] = []
    errors: list[str] = []
    try:
        problem = _await_ready(ready, results, children, bound_s=60)
        if problem:
            errors.append(problem)
        else:
            start_at.value = time.monotonic_ns() + START_LEAD_NS
            go.set()
            if progress:
                progress(f"burst: fired by {processes} processes")
            deadline = time.monotonic() + job.timeout_s + job.duration_s + 120
            for _ in children:
                try:
                    kind, payload = results.get(timeout=max(deadline - time.monotonic(), 1))
                except queue.Empty:
                    errors.append("a client process returned nothing in time")
                    break
                if kind == "ok":
                    collected.append([PhaseOutcome.from_json(p) for p in payload])
                else:
                    errors.append(str(payload))
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)
    if errors:
        raise HostLimitError(f"client processes could not measure: {errors[0]}")
    return [
        merge_phase([c[i] for c in collected], same_clock=True) for i in range(len(collected[0]))
    ]


def plan_job(
    scenario: LoadScenario,
    base_url: str,
    tenant_secret: str,
    *,
    policy: HttpPolicy,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    rate: float = 0.0,
    duration_s: float = 0.0,
) -> LoadJob:
    """Plan the burst and check the target allows every request in it."""
    check_plan_allowed(plan_burst(scenario, tenant_secret), base_url, policy)
    return LoadJob(
        base_url=base_url,
        policy=policy,
        timeout_s=timeout_s,
        scenario=scenario,
        tenant_secret=tenant_secret,
        rate=rate,
        duration_s=duration_s,
    )


def tty_progress() -> ProgressFn | None:
    """Return a progress printer for stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        return None

    def show(message: str) -> None:
        sys.stderr.write(f"\r\x1b[2K{message}")
        sys.stderr.flush()

    return show
