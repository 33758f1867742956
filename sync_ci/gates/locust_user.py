"""The Locust worker: User classes made from the scenario, exact tallies, its side of the protocol.

Only the `python -m sync_ci.gates.locust_engine master|worker` subprocesses import this module,
after locust has monkey-patched them with gevent. Every sample is recorded from Locust's request
events into our own HdrHistograms; Locust's own (rounded) statistics are never read. Over 400
lines because `WorkerState` is one worker's whole side of the protocol: plan, users, listener.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections import deque
from typing import Any, cast

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore
from locust import FastHttpUser, constant
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
from locust.exception import StopUser
from locust.rpc.protocol import Message
from locust.runners import WorkerRunner

from sync_ci.contract import colo_from_ray
from sync_ci.errors import ExitCode, SyncCIError, UsageError
from sync_ci.gates import histogram
from sync_ci.gates.http import HttpPolicy, read_only_policy
from sync_ci.gates.load import (
    DESCRIPTOR_MARGIN,
    LoadJob,
    check_plan_allowed,
    ensure_descriptors,
)
from sync_ci.gates.locust_plan import (
    ARM_BOUND_S,
    EngineJob,
    Msg,
    WorkerShare,
    latency_scenario,
    load_scenario,
)
from sync_ci.gates.outcome import BURST, NO_COLO, OPEN, PhaseOutcome, RegionTally, Tally
from sync_ci.gates.scenario import (
    OPERATIONS,
    PUSH_PATH,
    PlannedRequest,
    open_schedule,
    probe_nonces,
    probe_path,
)

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


def setup_logging(debug: bool) -> None:
    """Log to stderr: everything with --debug, else only what is fatal."""
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
        self.tallies: dict[str, Tally] = {}
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
        runner.register_message(Msg.JOB, self.on_job, concurrent=True)
        runner.register_message(Msg.GO, self.on_go)
        runner.register_message(Msg.ABORT, self.on_abort)
        environment.events.request.add_listener(self.on_request)  # type: ignore[no-untyped-call]

    def send(self, kind: str, data: dict[str, Any]) -> None:
        """Send one custom message to the master."""
        assert self.runner is not None
        self.runner.send_message(kind, data)

    # master -> worker

    def on_job(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        """Plan this worker's share; answer READY, or FAILED with the reason and exit code."""
        try:
            planned = self.prepare(
                EngineJob.from_json(msg.data["job"]), WorkerShare.from_json(msg.data)
            )
        except SyncCIError as exc:
            self.refused = (str(exc), int(exc.exit_code))
            self.send(Msg.FAILED, {"error": str(exc), "exit": int(exc.exit_code)})
            return
        except Exception as exc:  # reported to the master, which turns it into one error line
            self.send(Msg.FAILED, {"error": f"{type(exc).__name__}: {exc}", "exit": 3})
            return
        self.send(Msg.READY, {"planned": planned})

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

    def prepare(self, job: EngineJob, part: WorkerShare) -> int:
        """Build this worker's requests from the scenario; return how many answers it owes."""
        self.job, self.parts = job, part.parts
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
                    part=part.part,
                    parts=self.parts,
                ).plan()
                if job.burst
                else []
            )
            check_plan_allowed(plan, job.base_url, self.policy)
            ensure_descriptors(max(len(plan), part.users) + DESCRIPTOR_MARGIN)
            self.burst_items = deque(plan)
            self.tallies[BURST] = Tally(
                {name: sum(1 for r in plan if r.operation == name) for name in OPERATIONS},
                self.policy.write_root,
            )
            self.expected = len(plan)
            return self.expected
        probe = latency_scenario(job.scenario)
        counts, limits = part.samples, part.limits
        regions = {r["name"]: r for r in job.regions}
        queues: list[list[tuple[str, str]]] = []
        for name, count in counts.items():
            region = regions[name]
            tally = self.regions[name] = RegionTally(name, region["colo"], count)
            self.urls[name] = region["url"]
            self.limits[name] = BoundedSemaphore(limits.get(name, probe.concurrency))
            tally.unreachable = self.health(region["url"])
            if not tally.unreachable:
                queues.append([(name, nonce) for nonce in probe_nonces(name, count)])
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
            self.send(Msg.ARMED, {"users": self.armed})

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
        rate = job.rate / self.parts
        schedule = open_schedule(
            load_scenario(job.scenario), self.tenant_secret, rate=rate, duration_s=job.duration_s
        )
        total = len(schedule.operations)
        self.tallies[OPEN] = Tally(schedule.planned(), self.policy.write_root)
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
        lags: list[int] = []
        sent: list[gevent.Greenlet] = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        begin = time.perf_counter_ns() + 5_000_000
        for offset, request in schedule.requests():
            intended = begin + offset
            delay = intended - time.perf_counter_ns()
            if delay > 0:
                gevent.sleep(delay / 1e9)
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
        self.send(Msg.RESULT, {"samples": self.samples, "result": result})


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
    setup_logging(debug)
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
        Msg.HELLO,
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
