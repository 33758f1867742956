"""The Locust side of the gate engine: User classes made from the scenario, exact tallies, coordination.

Only the `python -m sync_ci.gates.locust_engine master|worker` subprocesses import this module,
after locust has monkey-patched them with gevent. Every sample is recorded from Locust's request
events into our own HdrHistograms; Locust's own (rounded) statistics are never read.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore
from locust import FastHttpUser, constant
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
from locust.exception import StopUser
from locust.rpc.protocol import Message
from locust.runners import MasterRunner, WorkerRunner

from sync_ci.contract import colo_from_ray
from sync_ci.errors import ExitCode, SyncCIError, UsageError
from sync_ci.files import write_private
from sync_ci.gates import histogram
from sync_ci.gates.http import HttpPolicy, read_only_policy
from sync_ci.gates.latency import NO_COLO, RegionOutcome, _slug
from sync_ci.gates.load import (
    BURST,
    DESCRIPTOR_MARGIN,
    OPEN,
    LoadJob,
    PhaseOutcome,
    _Tally,
    check_plan_allowed,
    ensure_descriptors,
)
from sync_ci.gates.locust_engine import (
    ARM_BOUND_S,
    EngineJob,
    assign_regions,
    burst_users_per_worker,
    latency_scenario,
    load_scenario,
    region_samples,
)
from sync_ci.gates.scenario import (
    OPERATIONS,
    PUSH,
    PUSH_PATH,
    PlannedRequest,
    install_request,
    open_model_operations,
    probe_nonces,
    probe_path,
    push_request,
)

# Custom messages between master and workers (Locust's register_message / send_message).
HELLO, JOB, READY, ARMED, GO = (
    "sync_ci_hello",
    "sync_ci_job",
    "sync_ci_ready",
    "sync_ci_armed",
    "sync_ci_go",
)
RESULT, FAILED, ABORT = "sync_ci_result", "sync_ci_failed", "sync_ci_abort"
USER_CLASS_NAMES = {"load": "LoadGateUser", "latency": "LatencyGateUser"}
# Keys of the request context that tell our listener what a request was.
OPERATION, PHASE, INTENDED, REGION, PLANNED = (
    "sync_ci_op",
    "sync_ci_phase",
    "sync_ci_intended",
    "sync_ci_region",
    "sync_ci_planned",
)
USER_AGENT = "sync-ci-gate (locust)"
HEALTH_TIMEOUT_S = 5.0

log = logging.getLogger("sync_ci.locust")


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if debug else logging.CRITICAL,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def _header(response: Any, name: str) -> str:
    headers = getattr(response, "headers", None)
    if not headers:
        return ""
    value = headers.get(name)
    return str(value) if value else ""


def _network_error(exception: BaseException | None, prefix: str) -> str:
    if exception is None:
        return f"{prefix}no answer"
    return f"{prefix}{type(exception).__name__}: {str(exception)[:120]}"


class RegionTally:
    """One region's probes on this worker, classified exactly as the built-in probe does."""

    def __init__(self, name: str, colo: str, planned: int) -> None:
        self.name, self.colo, self.planned = name, colo.upper(), planned
        self.hist = histogram.new()
        self.counts = dict.fromkeys(("ok", "status_5xx", "status_4xx", "network", "warm"), 0)
        self.others: dict[str, int] = {}
        self.first_error = ""
        self.unreachable = ""

    def _error(self, text: str) -> None:
        self.first_error = self.first_error or text

    def record(self, status: int, latency_ns: int, colo: str, cache: str, error: str) -> None:
        """Count one answered (or failed) probe."""
        if status == 0:
            self.counts["network"] += 1
            self._error(error)
        elif status >= 300:
            self.counts["status_5xx" if status >= 500 else "status_4xx"] += 1
            self._error(f"probe answered {status}")
        elif colo != self.colo:
            self.others[colo] = self.others.get(colo, 0) + 1
        elif cache == "hit":
            self.counts["warm"] += 1
            self._error("a never-used key was answered from a warm cache")
        else:
            self.counts["ok"] += 1
            histogram.record_us(self.hist, latency_ns // 1000)

    def outcome(self) -> RegionOutcome:
        """Return the region's outcome on this worker (merges exactly with the others)."""
        return RegionOutcome(
            name=self.name,
            colo=self.colo,
            planned=self.planned,
            other_colos=dict(self.others),
            histogram=histogram.encode(self.hist),
            first_error=self.first_error,
            unreachable=self.unreachable,
            **self.counts,
        )


class GuardedSession(FastHttpSession):
    """Locust's HTTP session with this worker's own target policy applied to every request.

    The policy comes from the worker's settings, never from the master: a worker on a read-only
    target refuses a POST whatever job it was sent, before a byte leaves the process.
    """

    def __init__(self, base_url: str | None, *, policy: HttpPolicy, **kwargs: Any) -> None:
        super().__init__(base_url, user=kwargs.pop("user", None), **kwargs)
        self.policy = policy

    def request(  # type: ignore[override]
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        """Check the request against the policy (naming the CI root on writes), then send it."""
        headers = dict(headers or {})
        full = url if "://" in url else f"{self.base_url or ''}{url}"
        self.policy.apply(method, full, headers)
        return super().request(method, url, headers=headers, **kwargs)


def user_class(gate: str, state: WorkerState | None) -> type[FastHttpUser]:
    """Generate the gate's User class: each user serves the worker's share of the scenario, then stops."""

    def fire(user: FastHttpUser) -> None:
        if state is not None:
            state.serve(user)
        raise StopUser()

    def init(user: FastHttpUser, environment: Environment) -> None:
        FastHttpUser.__init__(user, environment)
        policy = state.policy if state is not None else read_only_policy()
        user.client = GuardedSession(
            user.host,
            policy=policy,
            request_event=environment.events.request,
            user=user,
            network_timeout=user.network_timeout,
            connection_timeout=user.connection_timeout,
            concurrency=user.concurrency,
            headers=user.default_headers,
        )

    attributes: dict[str, Any] = {
        "__init__": init,
        "__module__": __name__,
        "__doc__": f"A {gate} gate user, generated from the scenario at run time.",
        "abstract": False,
        "wait_time": constant(0),
        "tasks": [fire],
        "concurrency": 1,
        "default_headers": {"user-agent": USER_AGENT},
    }
    return cast("type[FastHttpUser]", type(USER_CLASS_NAMES[gate], (FastHttpUser,), attributes))


# --- worker ---------------------------------------------------------------------------------------


class WorkerState:
    """This worker's share of the scenario, its exact tallies, and its side of the protocol."""

    def __init__(
        self, *, gate: str, region: str, tenant_secret: str, policy: HttpPolicy | None = None
    ) -> None:
        self.gate, self.region, self.tenant_secret = gate, region, tenant_secret
        self.policy = policy or read_only_policy()
        self.refused: tuple[str, int] | None = None
        self.environment: Environment | None = None
        self.runner: WorkerRunner | None = None
        self.users: type[FastHttpUser] | None = None
        self.job: EngineJob | None = None
        self.parts = 1
        self.burst_items: deque[PlannedRequest] = deque()
        self.probe_items: deque[tuple[str, str]] = deque()
        self.urls: dict[str, str] = {}
        self.limits: dict[str, BoundedSemaphore] = {}
        self.tallies: dict[str, _Tally] = {}
        self.regions: dict[str, RegionTally] = {}
        self.phases: list[PhaseOutcome] = []
        self.go = Event()
        self.armed = 0
        self.armed_sent = False
        self.expected = 0
        self.answered = 0
        self.samples = 0
        self.first_start = self.last_start = 0
        self.cpu0 = self.wall0 = 0.0
        self.result_sent = False
        self.aborted = ""
        self.wall_offset = time.time_ns() - time.perf_counter_ns()

    def attach(self, environment: Environment, runner: WorkerRunner) -> None:
        """Register our messages and the request listener."""
        self.environment, self.runner = environment, runner
        runner.register_message(JOB, self.on_job, concurrent=True)
        runner.register_message(GO, self.on_go)
        runner.register_message(ABORT, self.on_abort)
        environment.events.request.add_listener(self.on_request)  # type: ignore[no-untyped-call]

    def send(self, kind: str, data: dict[str, Any]) -> None:
        """Send one custom message to the master."""
        assert self.runner is not None
        self.runner.send_message(kind, data)

    # master -> worker

    def on_job(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        """Plan this worker's share; answer READY, or FAILED with the reason and exit code."""
        try:
            planned = self.prepare(EngineJob.from_json(msg.data["job"]), msg.data)
        except SyncCIError as exc:
            self.refused = (str(exc), int(exc.exit_code))
            self.send(FAILED, {"error": str(exc), "exit": int(exc.exit_code)})
            return
        except Exception as exc:  # reported to the master, which turns it into one error line
            self.send(FAILED, {"error": f"{type(exc).__name__}: {exc}", "exit": 3})
            return
        self.send(READY, {"planned": planned})

    def on_go(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        """Open the gate: every armed user fires its first request now."""
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        self.go.set()
        if self.expected == 0:
            self.phase_done()

    def on_abort(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        """The master gave up; remember why (it quits this worker next)."""
        self.aborted = str((msg.data or {}).get("error", "the master stopped the run"))

    # planning

    def prepare(self, job: EngineJob, data: dict[str, Any]) -> int:
        """Build this worker's requests from the scenario; return how many answers it owes."""
        self.job, self.parts = job, int(data["parts"])
        assert self.users is not None
        self.users.network_timeout = job.timeout_s
        self.users.connection_timeout = job.timeout_s
        if job.gate != self.gate:
            raise UsageError(f"this worker runs the {self.gate} gate, the master {job.gate}")
        if job.gate == "load":
            scenario = load_scenario(job.scenario)
            if scenario.pushes:
                # This worker's own policy, whatever the master asked: refuse before anything is sent.
                self.policy.apply("POST", f"{job.base_url}{PUSH_PATH}", {})
            plan = (
                LoadJob(
                    base_url=job.base_url,
                    timeout_s=job.timeout_s,
                    scenario=scenario,
                    tenant_secret=self.tenant_secret,
                    part=int(data["part"]),
                    parts=self.parts,
                ).plan()
                if job.burst
                else []
            )
            check_plan_allowed(plan, job.base_url, self.policy)
            ensure_descriptors(max(len(plan), int(data["users"])) + DESCRIPTOR_MARGIN)
            self.burst_items = deque(plan)
            self.tallies[BURST] = _Tally(
                {name: sum(1 for r in plan if r.operation == name) for name in OPERATIONS},
                self.policy.write_root,
            )
            self.expected = len(plan)
            return self.expected
        probe = latency_scenario(job.scenario)
        counts: dict[str, int] = {str(k): int(v) for k, v in dict(data["samples"]).items()}
        limits: dict[str, int] = {str(k): int(v) for k, v in dict(data["limits"]).items()}
        regions = {r["name"]: r for r in job.regions}
        queues: list[list[tuple[str, str]]] = []
        for name, count in counts.items():
            region = regions[name]
            tally = self.regions[name] = RegionTally(name, region["colo"], count)
            self.urls[name] = region["url"]
            self.limits[name] = BoundedSemaphore(limits.get(name, probe.concurrency))
            tally.unreachable = self.health(region["url"])
            if not tally.unreachable:
                queues.append([(name, nonce) for nonce in probe_nonces(_slug(name), count)])
        # Interleave the regions so every one of them starts at once.
        longest = max((len(q) for q in queues), default=0)
        self.probe_items = deque(q[i] for i in range(longest) for q in queues if i < len(q))
        self.expected = len(self.probe_items)
        return self.expected

    def health(self, url: str) -> str:
        """Return '' when the region answers GET /_health, else why not (as the built-in probe)."""
        assert self.environment is not None
        session = GuardedSession(
            url,
            policy=read_only_policy(),
            request_event=self.environment.events.request,
            user=None,
            network_timeout=HEALTH_TIMEOUT_S,
            connection_timeout=HEALTH_TIMEOUT_S,
            headers={"user-agent": USER_AGENT},
        )
        response = session.request("GET", "/_health", name="_health", allow_redirects=False)
        if int(getattr(response, "status_code", 0) or 0):
            return ""
        return _network_error(getattr(response, "error", None), f"{url}: ")

    # users

    def arm(self) -> None:
        """Count a user at the gate; tell the master once all of this worker's users are there."""
        self.armed += 1
        assert self.runner is not None
        target = self.runner.target_user_count
        if not self.armed_sent and target and self.armed >= target:
            self.armed_sent = True
            self.send(ARMED, {"users": self.armed})

    def serve(self, user: FastHttpUser) -> None:
        """One user's life: wait at the gate, then take requests from the worker's share until none remain."""
        self.arm()
        if not self.go.wait(timeout=2 * ARM_BOUND_S):
            return
        while self.burst_items:
            request = self.burst_items.popleft()
            started = time.perf_counter_ns()
            self.first_start = self.first_start or started
            self.last_start = started
            user.client.request(
                request.method,
                request.path,
                data=cast(Any, request.body or None),  # geventhttpclient sends bytes as they are
                headers=request.headers,
                name=request.operation,
                allow_redirects=False,
                context={OPERATION: request.operation, PHASE: BURST, PLANNED: request},
            )
        while self.probe_items:
            region, nonce = self.probe_items.popleft()
            with self.limits[region]:
                user.client.request(
                    "GET",
                    f"{self.urls[region]}{probe_path(nonce)}",
                    name=f"probe {region}",
                    allow_redirects=False,
                    context={REGION: region},
                )

    # measurement

    def on_request(
        self,
        response_time: float,
        response: Any = None,
        context: dict[str, Any] | None = None,
        exception: BaseException | None = None,
        **_kw: Any,
    ) -> None:
        """Record one sample from Locust's request event into our exact tallies."""
        context = context or {}
        ended = time.perf_counter_ns()
        latency_ns = int(response_time * 1_000_000)
        status = int(getattr(response, "status_code", 0) or 0)
        if REGION in context:
            error = _network_error(exception, "") if status == 0 else ""
            colo = colo_from_ray(_header(response, "cf-ray")) or NO_COLO
            cache = _header(response, "x-cache").lower()
            self.regions[context[REGION]].record(status, latency_ns, colo, cache, error)
        elif OPERATION in context:
            operation = str(context[OPERATION])
            if status == 0:
                error = _network_error(exception, f"{operation}: ")
            elif status >= 400:
                error = f" ({_header(response, 'cf-ray') or 'no cf-ray'})"
            else:
                error = ""
            tally = self.tallies[str(context[PHASE])]
            body = getattr(response, "content", b"") if status else b""
            problem = tally.judge(context[PLANNED], status, body or b"")
            if context[PHASE] == OPEN:
                # Coordinated omission: the verdict counts from the intended send time.
                tally.record(operation, status, ended - int(context[INTENDED]), error, problem)
                if status:
                    tally.record_raw(operation, latency_ns)
            else:
                tally.record(operation, status, latency_ns, error, problem)
        else:
            return
        self.samples += 1
        if context.get(PHASE) != OPEN:
            self.answered += 1
            if self.answered == self.expected:
                self.phase_done()

    def phase_done(self) -> None:
        """The burst (or the probes) are all answered: report, or go on to the open-model phase."""
        assert self.job is not None
        cpu, wall = time.process_time() - self.cpu0, time.perf_counter() - self.wall0
        if self.gate == "latency":
            self.send_result({"regions": [t.outcome().to_json() for t in self.regions.values()]})
            return
        self.phases.append(
            PhaseOutcome(
                phase=BURST,
                ops=self.tallies[BURST].ops(),
                start_first_ns=self.first_start + self.wall_offset if self.first_start else 0,
                start_last_ns=self.last_start + self.wall_offset if self.last_start else 0,
                wall_s=wall,
                cpu_s=cpu,
            )
        )
        if self.job.rate > 0:
            gevent.spawn(self.open_model)
        else:
            self.send_result({"phases": [p.to_json() for p in self.phases]})

    def open_model(self) -> None:
        """Send this worker's share of the open-model phase on a fixed schedule (wrk2-style)."""
        assert self.job is not None and self.environment is not None
        job = self.job
        scenario = load_scenario(job.scenario)
        rate = job.rate / self.parts
        total = round(rate * job.duration_s)
        schedule = open_model_operations(scenario)
        operations = [next(schedule) for _ in range(total)]
        self.tallies[OPEN] = _Tally(
            {name: operations.count(name) for name in OPERATIONS}, self.policy.write_root
        )
        pool = max(10, min(total, 4000))
        ensure_descriptors(pool + DESCRIPTOR_MARGIN)
        session = GuardedSession(
            job.base_url,
            policy=self.policy,
            request_event=self.environment.events.request,
            user=None,
            network_timeout=job.timeout_s,
            connection_timeout=job.timeout_s,
            concurrency=pool,
            headers={"user-agent": USER_AGENT},
        )
        tenants, run, pushes = scenario.tenant_ids(), secrets.token_hex(4), 0
        interval_ns = 1e9 / rate
        lags: list[int] = []
        sent: list[gevent.Greenlet] = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        begin = time.perf_counter_ns() + 5_000_000
        for i, operation in enumerate(operations):
            intended = begin + int(i * interval_ns)
            delay = intended - time.perf_counter_ns()
            if delay > 0:
                gevent.sleep(delay / 1e9)
            if operation == PUSH:
                tenant = tenants[pushes % len(tenants)]
                request = push_request(
                    tenant, self.tenant_secret, scenario.body_bytes, f"{run}-o{pushes}"
                )
                pushes += 1
            else:
                request = install_request()
            lags.append(time.perf_counter_ns() - intended)
            sent.append(gevent.spawn(self._send_open, session, request, intended))
        gevent.joinall(sent, timeout=job.timeout_s + 5)
        self.phases.append(
            PhaseOutcome(
                phase=OPEN,
                ops=self.tallies[OPEN].ops(),
                wall_s=time.perf_counter() - wall0,
                cpu_s=time.process_time() - cpu0,
                rate=rate,
                duration_s=job.duration_s,
                max_lag_ms=max(lags, default=0) / 1e6,
                raw={name: histogram.encode(h) for name, h in self.tallies[OPEN].raw.items()},
            )
        )
        self.send_result({"phases": [p.to_json() for p in self.phases]})

    @staticmethod
    def _send_open(session: GuardedSession, request: PlannedRequest, intended: int) -> None:
        session.request(
            request.method,
            request.path,
            data=cast(Any, request.body or None),  # geventhttpclient sends bytes as they are
            headers=request.headers,
            name=request.operation,
            allow_redirects=False,
            context={
                OPERATION: request.operation,
                PHASE: OPEN,
                INTENDED: intended,
                PLANNED: request,
            },
        )

    def send_result(self, result: dict[str, Any]) -> None:
        """Ship this worker's exact outcome (encoded histograms and counts) to the master, once."""
        if self.result_sent:
            return
        self.result_sent = True
        self.send(RESULT, {"samples": self.samples, "result": result})


def worker_main(
    *,
    gate: str,
    master_host: str,
    master_port: int,
    region: str,
    connect_wait_s: float,
    max_run_s: float,
    tenant_secret: str,
    policy: HttpPolicy,
    debug: bool = False,
    quiet: bool = False,
) -> int:
    """Connect to the master, run what it sends, and stay until it quits this worker."""
    _setup_logging(debug)
    state = WorkerState(gate=gate, region=region, tenant_secret=tenant_secret, policy=policy)
    state.users = user_class(gate, state)
    environment = Environment(user_classes=[state.users])
    where = f"{master_host}:{master_port}"
    try:
        with gevent.Timeout(connect_wait_s):
            runner = environment.create_worker_runner(master_host, master_port)
    except (gevent.Timeout, ConnectionError):
        print(
            f"sync-ci: error: no Locust master answered at {where} within {connect_wait_s:g} s",
            file=sys.stderr,
        )
        return int(ExitCode.UNMEASURED)
    state.attach(environment, runner)
    runner.send_message(
        HELLO,
        {"gate": gate, "region": region, "host": socket.gethostname(), "pid": os.getpid()},
    )
    runner.greenlet.join(timeout=max_run_s)
    if state.refused is not None:
        print(f"sync-ci: error: {state.refused[0]}", file=sys.stderr)
        return state.refused[1]
    if not state.result_sent:
        why = state.aborted or f"the master at {where} ended the run before this worker measured"
        print(f"sync-ci: error: {why}", file=sys.stderr)
        return int(ExitCode.UNMEASURED)
    if not quiet:
        print(f"sync-ci: locust worker sent {state.samples} samples to {where}", file=sys.stderr)
    return 0


# --- master ---------------------------------------------------------------------------------------


class GateMaster(MasterRunner):
    """Locust's master, closed to workers that arrive once the run has been planned."""

    closed = False

    def handle_message(self, client_id: str, msg: Message) -> None:
        """Turn away late workers instead of rebalancing users mid-burst."""
        if self.closed and msg.type == "client_ready" and client_id not in self.clients:
            self.server.send_to_client(Message("quit", None, client_id))  # type: ignore[no-untyped-call]
            return
        super().handle_message(client_id, msg)


class Refusal(SyncCIError):
    """The master cannot run the gate as planned; carries the exit code."""

    def __init__(self, message: str, exit_code: int = ExitCode.UNMEASURED) -> None:
        super().__init__(message)
        self.code = int(exit_code)


class Coordinator:
    """The master's side of the protocol: gather workers, deal the scenario, start, collect."""

    def __init__(self, job: EngineJob, runner: GateMaster, expect_workers: int) -> None:
        self.job, self.runner, self.expect = job, runner, expect_workers
        self.hellos: dict[str, dict[str, Any]] = {}
        self.ready: dict[str, int] = {}
        self.armed: set[str] = set()
        self.results: dict[str, dict[str, Any]] = {}
        self.failures: list[tuple[str, dict[str, Any]]] = []
        for kind, handler in (
            (HELLO, self._hello),
            (READY, self._ready),
            (ARMED, self._armed),
            (RESULT, self._result),
            (FAILED, self._failed),
        ):
            runner.register_message(kind, handler)
        self.workers: list[str] = []

    def _hello(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.hellos[msg.node_id] = dict(msg.data or {})

    def _ready(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.ready[msg.node_id] = int((msg.data or {}).get("planned", 0))

    def _armed(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.armed.add(msg.node_id)

    def _result(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.results[msg.node_id] = dict(msg.data or {})

    def _failed(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.failures.append((msg.node_id, dict(msg.data or {})))

    def _label(self, worker: str) -> str:
        hello = self.hellos.get(worker, {})
        return f"{hello.get('host', '?')} pid {hello.get('pid', '?')}"

    def _wait(self, done: Callable[[], bool], bound_s: float, what: str) -> None:
        deadline = time.monotonic() + bound_s
        while not done():
            if self.failures:
                worker, data = self.failures[0]
                raise Refusal(
                    f"Locust worker {self._label(worker)}: {data.get('error', 'failed')}",
                    int(data.get("exit", ExitCode.UNMEASURED)),
                )
            lost = [w for w in self.workers if w not in self.runner.clients]
            if lost:
                raise Refusal(f"Locust worker {self._label(lost[0])} was lost {what}")
            if time.monotonic() > deadline:
                raise Refusal(f"Locust workers did not finish {what} within {bound_s:g} s")
            gevent.sleep(0.02)

    def gather(self, wait_s: float) -> None:
        """Wait for the expected workers; refuse to run short-handed."""
        deadline = time.monotonic() + wait_s

        def present() -> list[str]:
            return sorted(w for w in self.hellos if w in self.runner.clients)

        while len(present()) < self.expect:
            if time.monotonic() > deadline:
                raise Refusal(
                    f"expected {self.expect} Locust workers but {len(present())} connected within "
                    f"{wait_s:g} s; refusing to run the {self.job.gate} gate short-handed"
                )
            gevent.sleep(0.05)
        self.runner.closed = True
        self.workers = present()
        wrong = [w for w in self.workers if self.hellos[w].get("gate") != self.job.gate]
        if wrong:
            raise Refusal(
                f"Locust worker {self._label(wrong[0])} runs the "
                f"{self.hellos[wrong[0]].get('gate')} gate, this master the {self.job.gate} gate",
                ExitCode.USAGE,
            )

    def run(self, wait_s: float) -> dict[str, Any]:
        """Run the whole protocol and return the master's output document."""
        self.gather(wait_s)
        job, parts = self.job, len(self.workers)
        samples: dict[str, dict[str, int]] = {w: {} for w in self.workers}
        limits: dict[str, dict[str, int]] = {w: {} for w in self.workers}
        uncovered: dict[str, str] = {}
        if job.gate == "latency":
            tags = {w: str(self.hellos[w].get("region", "")) for w in self.workers}
            try:
                assignment, missing = assign_regions([r["name"] for r in job.regions], tags)
            except UsageError as exc:
                raise Refusal(str(exc), ExitCode.USAGE) from None
            probe = latency_scenario(job.scenario)
            samples = region_samples(probe.samples, assignment)
            # The scenario's bound on probes in flight holds per region, however many workers share it.
            limits = region_samples(probe.concurrency, assignment, floor=1)
            uncovered = {
                name: f"no Locust worker tagged with region {name} (and no untagged worker) connected"
                for name in missing
            }
            users = probe.concurrency * max((len(r) for r in assignment.values()), default=1)
        else:
            total = sum(int(v) for k, v in job.scenario.items() if k in ("installs", "pushes"))
            users = burst_users_per_worker(total, parts) if job.burst else 1
        users = max(users, 1)
        for index, worker in enumerate(self.workers):
            self.runner.send_message(
                JOB,
                {
                    "job": job.to_json(),
                    "part": index,
                    "parts": parts,
                    "users": users,
                    "samples": samples[worker],
                    "limits": limits[worker],
                },
                client_id=worker,
            )
        self._wait(lambda: all(w in self.ready for w in self.workers), ARM_BOUND_S, "planning")
        gevent.spawn(self.runner.start, users * parts, users * parts)
        self._wait(lambda: all(w in self.armed for w in self.workers), ARM_BOUND_S, "spawning")
        for worker in self.workers:
            self.runner.send_message(GO, {}, client_id=worker)
        self._wait(
            lambda: all(w in self.results for w in self.workers), job.run_bound_s(), "the run"
        )
        here = socket.gethostname()
        return {
            "ok": True,
            "gate": job.gate,
            "same_clock": all(self.hellos[w].get("host") == here for w in self.workers),
            "uncovered": uncovered,
            "workers": [
                {
                    "id": worker,
                    "host": self.hellos[worker].get("host", ""),
                    "region": self.hellos[worker].get("region", ""),
                    "samples": int(self.results[worker].get("samples", 0)),
                    "result": self.results[worker].get("result", {}),
                }
                for worker in self.workers
            ],
        }

    def abort(self, why: str) -> None:
        """Tell every connected worker why the run stopped."""
        for worker in list(self.runner.clients):
            self.runner.send_message(ABORT, {"error": why}, client_id=worker)


def _write_private(path: Path, document: dict[str, Any]) -> None:
    write_private(path, json.dumps(document))


def master_main(
    job: EngineJob,
    *,
    out: Path,
    ready: Path,
    expect_workers: int,
    wait_s: float,
    bind_host: str,
    bind_port: int,
    debug: bool = False,
) -> int:
    """Run the Locust master for one gate; write the measured outcome (or the refusal) to `out`."""
    _setup_logging(debug)
    environment = Environment(user_classes=[user_class(job.gate, None)], host=job.base_url)
    try:
        runner = GateMaster(environment, bind_host, bind_port)
    except Exception as exc:  # zmq bind errors: the port is taken or the host is not ours
        _write_private(out, {"ok": False, "exit": 3, "error": f"Locust master: {exc}"})
        return int(ExitCode.UNMEASURED)
    environment.runner = runner
    coordinator = Coordinator(job, runner, expect_workers)
    _write_private(ready, {"port": runner.server.port, "pid": os.getpid()})
    try:
        document = coordinator.run(wait_s)
        code = 0
    except Refusal as exc:
        coordinator.abort(str(exc))
        document, code = {"ok": False, "exit": exc.code, "error": str(exc)}, exc.code
    finally:
        runner.quit()
    _write_private(out, document)
    return code
