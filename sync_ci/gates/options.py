"""What the gate flags mean: one typed request per run, its ranges, and the checks it passes.

Both front ends build a `GateRequest` (`sync-ci gate ...` from its parsed flags, the invoke tasks
from their typed parameters) and `check_request` refuses what argparse would, worded as it words it.
Just over 400 lines: the request, every range and default and the engine flags are one vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from sync_ci.errors import UsageError
from sync_ci.gates import thresholds as threshold_table
from sync_ci.gates.locust_plan import DEFAULT_EXPECT_WAIT_S, DEFAULT_MASTER_PORT
from sync_ci.gates.scenario import LatencyScenario, LoadScenario
from sync_ci.gates.thresholds import MIN_COUNTS, Threshold
from sync_ci.options import TARGETS, choice, number, report_outputs, within

if TYPE_CHECKING:
    import argparse

    from sync_ci.report_emit import Outputs

ENGINES = ("builtin", "locust")
# The load gate pushes, so it cannot run on live (read-only): only these are offered.
WRITE_TARGETS = ("sandbox", "ci")
GATE_TARGETS: Mapping[str, Sequence[str]] = {"load": WRITE_TARGETS, "all": WRITE_TARGETS}

# The numeric options' ranges, each the one `type=` argparse uses and the one the typed path
# checks. Upper ends: far above any real run, low enough to refuse a typo.
MAX_BURST = 100_000
MAX_PROCESSES = 256
MAX_CONCURRENCY = 1_000
MAX_RATE = 100_000.0
MAX_DURATION_S = 86_400.0
MAX_TIMEOUT_S = 600.0
NEVER_SHRUNK = "the gate's scenario may be enlarged, never shrunk"
INSTALLS = number(int, minimum=MIN_COUNTS["installs"], maximum=MAX_BURST, why=NEVER_SHRUNK)
PUSHES = number(int, minimum=MIN_COUNTS["pushes"], maximum=MAX_BURST, why=NEVER_SHRUNK)
SAMPLES = number(int, minimum=MIN_COUNTS["samples"], maximum=MAX_BURST, why=NEVER_SHRUNK)
PROCESSES = number(int, minimum=1, maximum=MAX_PROCESSES)
CONCURRENCY = number(int, minimum=1, maximum=MAX_CONCURRENCY)
RATE = number(float, minimum=0, maximum=MAX_RATE, unit="requests/s")
DURATION = number(float, minimum=0, maximum=MAX_DURATION_S, unit="seconds")
TIMEOUT = number(float, minimum=0, above=True, maximum=MAX_TIMEOUT_S, unit="seconds")


@dataclass(frozen=True, slots=True)
class Number:
    """A numeric option: its range (argparse's `type=`, and the typed path's check), metavar, help."""

    parse: Callable[[str], float]
    metavar: str
    help: str


def _up_to(low: object, high: object) -> str:
    return f"{low} to {high} (default %(default)s)"


NUMBERS: Mapping[str, Number] = {
    "installs": Number(
        INSTALLS, "N", "concurrent GET /install, " + _up_to(MIN_COUNTS["installs"], MAX_BURST)
    ),
    "pushes": Number(
        PUSHES, "N", "concurrent POST /_push, " + _up_to(MIN_COUNTS["pushes"], MAX_BURST)
    ),
    "samples": Number(
        SAMPLES, "N", "cold reads per region, " + _up_to(MIN_COUNTS["samples"], MAX_BURST)
    ),
    "processes": Number(
        PROCESSES,
        "N",
        f"client processes to spread the burst over, 1 to {MAX_PROCESSES} (with --engine "
        "locust: local workers; default %(default)s)",
    ),
    "concurrency": Number(
        CONCURRENCY, "N", "probes in flight per region, " + _up_to(1, MAX_CONCURRENCY)
    ),
    "rate": Number(
        RATE,
        "PER_SECOND",
        "open-model phase after the burst: requests per second (0: no such phase; with --duration)",
    ),
    "duration": Number(
        DURATION, "SECONDS", "open-model phase: how long (0: no such phase; with --rate)"
    ),
    "timeout": Number(
        TIMEOUT,
        "SECONDS",
        f"per-request bound, 0 < SECONDS <= {MAX_TIMEOUT_S:g}; a request over it counts as an "
        "error (default %(default)s)",
    ),
}
# Which numbers each gate takes, so a request is checked for the options its command offers.
GATE_NUMBERS: Mapping[str, Sequence[str]] = {
    "load": ("timeout", "installs", "pushes", "processes", "rate", "duration"),
    "latency": ("timeout", "samples", "concurrency", "processes"),
    "all": (
        "timeout",
        "installs",
        "pushes",
        "processes",
        "rate",
        "duration",
        "samples",
        "concurrency",
    ),
    "platforms": (),
}
ENGINE_GATES = ("load", "latency")


@dataclass(frozen=True, slots=True, kw_only=True)
class GateRequest:
    """One `sync-ci gate load|latency|platforms|all` run as typed values, from either front end.

    Field names are the options' argparse dests and the defaults are theirs (`DEFAULTS`).
    """

    target: str | None = None
    config: str | None = None
    outputs: Outputs = field(default_factory=report_outputs)
    html_path: str = ""
    debug: bool = False
    fault: Sequence[str] = ()
    threshold: Sequence[str] = ()
    timeout: float = 60.0
    merge: Sequence[str] = ()
    installs: int = MIN_COUNTS["installs"]
    pushes: int = MIN_COUNTS["pushes"]
    processes: int = 1
    rate: float = 0.0
    duration: float = 0.0
    samples: int = MIN_COUNTS["samples"]
    concurrency: int = 8
    casts: str = "casts"
    cast: Sequence[str] = ()
    launch_version: str | None = None
    engine: str = "builtin"
    master: bool = False
    worker: bool = False
    expect_workers: int = 1
    expect_workers_max_wait: float = DEFAULT_EXPECT_WAIT_S
    master_bind_host: str = "*"
    master_bind_port: int = DEFAULT_MASTER_PORT
    master_host: str = ""
    master_port: int = DEFAULT_MASTER_PORT
    region: str = ""


DEFAULTS = GateRequest()
REQUEST_FIELDS = frozenset(f.name for f in fields(GateRequest))


def gate_request(values: Mapping[str, Any]) -> GateRequest:
    """The request option values describe, by dest: "" is not given, and a repeatable option
    given as one string is a comma list (invoke, which has no repeatable options, spells it so)."""
    given: dict[str, Any] = {}
    for name, value in values.items():
        if name not in REQUEST_FIELDS:
            raise TypeError(f"a gate request has no option {name!r}")
        default = getattr(DEFAULTS, name)
        if value == "" and default is None:
            continue
        if isinstance(default, tuple) and isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        given[name] = value
    return GateRequest(**given)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadOptions:
    """The load gate's run: scenario, thresholds (only ever stricter than canonical), bounds."""

    scenario: LoadScenario
    thresholds: Mapping[str, Threshold]
    timeout_s: float
    rate: float = 0.0
    duration_s: float = 0.0
    processes: int = 1
    quiet: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyOptions:
    """The latency gate's run: probe scenario, thresholds, per-request bound."""

    scenario: LatencyScenario
    thresholds: Mapping[str, Threshold]
    timeout_s: float
    quiet: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LocustMode:
    """How the Locust master runs: how many workers it waits for, and whether it starts them."""

    expect_workers: int
    local_workers: int
    bind_host: str = "127.0.0.1"
    bind_port: int = 0
    expect_wait_s: float = DEFAULT_EXPECT_WAIT_S


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """One Locust worker: the gate it runs, its own settings, and where its master is."""

    gate: str
    config: str | None
    target: str | None
    master_host: str
    master_port: int = DEFAULT_MASTER_PORT
    region: str = ""
    connect_wait_s: float = DEFAULT_EXPECT_WAIT_S
    debug: bool = False
    quiet: bool = False


def check_request(request: GateRequest, gate: str) -> GateRequest:
    """Refuse what `sync-ci gate GATE` refuses, worded as it words it, from either front end.

    Choices and ranges are argparse's own checks (so from the CLI they have passed already);
    the rules across options follow, and then the thresholds, which may only tighten.
    """
    choice(request.target, GATE_TARGETS.get(gate, TARGETS), "--target", command=f"gate {gate}")
    if gate in ENGINE_GATES:
        choice(request.engine, ENGINES, "--engine", command=f"gate {gate}")
    for name in GATE_NUMBERS[gate]:
        within(NUMBERS[name].parse, getattr(request, name), f"--{name}", f"gate {gate}")
    if (request.rate > 0) != (request.duration > 0):
        raise UsageError("--rate and --duration go together (the open-model phase needs both)")
    return request


def _thresholds(request: GateRequest) -> dict[str, Threshold]:
    return threshold_table.resolve(threshold_table.parse_overrides(request.threshold))


def load_options(request: GateRequest, gate: str = "load") -> LoadOptions:
    """Return the load run the request asks for (only ever stricter than canonical)."""
    check_request(request, gate)
    scenario = LoadScenario(
        installs=threshold_table.check_count("installs", request.installs),
        pushes=threshold_table.check_count("pushes", request.pushes),
    )
    return LoadOptions(
        scenario=scenario,
        thresholds=_thresholds(request),
        timeout_s=request.timeout,
        rate=request.rate,
        duration_s=request.duration,
        processes=request.processes,
        quiet=request.outputs.quiet,
    )


def latency_options(request: GateRequest, gate: str = "latency") -> LatencyOptions:
    """Return the probe run the request asks for."""
    check_request(request, gate)
    scenario = LatencyScenario(
        samples=threshold_table.check_count("samples", request.samples),
        concurrency=request.concurrency,
    )
    return LatencyOptions(
        scenario=scenario,
        thresholds=_thresholds(request),
        timeout_s=request.timeout,
        quiet=request.outputs.quiet,
    )


class EngineFlags(Protocol):
    """The engine flags a request carries (a `GateRequest`, or any object with these names)."""

    @property
    def engine(self) -> str: ...
    @property
    def master(self) -> bool: ...
    @property
    def worker(self) -> bool: ...
    @property
    def master_host(self) -> str: ...
    @property
    def expect_workers(self) -> int: ...
    @property
    def expect_workers_max_wait(self) -> float: ...
    @property
    def master_port(self) -> int: ...
    @property
    def master_bind_port(self) -> int: ...


def check_engine_options(flags: EngineFlags) -> bool:
    """Validate the engine flags; return True when the Locust engine is asked for."""
    choice(flags.engine, ENGINES, "--engine")
    if flags.engine != "locust":
        if flags.master or flags.worker:
            raise UsageError("--master and --worker need --engine locust")
        return False
    from sync_ci.extras import require_extra

    require_extra("locust", "locust", needed_by="--engine locust")
    require_extra("gevent", "locust", needed_by="--engine locust")
    if flags.master and flags.worker:
        raise UsageError("a process is either the Locust --master or a --worker, not both")
    if flags.worker and not flags.master_host:
        raise UsageError("--worker needs --master-host HOST (where `--master` runs)")
    if flags.expect_workers < 1:
        raise UsageError("--expect-workers must be at least 1")
    if not 0 < flags.expect_workers_max_wait <= 3600:
        raise UsageError("--expect-workers-max-wait must be between 0 and 3600 seconds")
    for flag, port in (
        ("--master-port", flags.master_port),
        ("--master-bind-port", flags.master_bind_port),
    ):
        if not 0 <= port <= 65535:
            raise UsageError(f"{flag} {port} is not a TCP port")
    return True


def locust_mode(request: GateRequest) -> LocustMode:
    """Return the master's mode: --master waits for remote workers, else --processes local ones."""
    if request.master:
        return LocustMode(
            expect_workers=request.expect_workers,
            local_workers=0,
            bind_host=request.master_bind_host,
            bind_port=request.master_bind_port,
            expect_wait_s=request.expect_workers_max_wait,
        )
    return LocustMode(
        expect_workers=request.processes,
        local_workers=request.processes,
        expect_wait_s=request.expect_workers_max_wait,
    )


def worker_options(request: GateRequest, gate: str) -> WorkerOptions:
    """Return the worker the `--engine locust --worker` flags describe."""
    return WorkerOptions(
        gate=gate,
        config=request.config,
        target=request.target,
        master_host=request.master_host,
        master_port=request.master_port,
        region=request.region,
        connect_wait_s=request.expect_workers_max_wait,
        debug=request.debug,
        quiet=request.outputs.quiet,
    )


def add_numbers(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the numeric options `names` (keys of `NUMBERS`), each with `DEFAULTS`' default."""
    for name in names:
        option = NUMBERS[name]
        parser.add_argument(
            f"--{name}",
            type=option.parse,
            default=getattr(DEFAULTS, name),
            metavar=option.metavar,
            help=option.help,
        )


# The Locust master's and worker's flags, as (flag, type, metavar, help); defaults are `DEFAULTS`'.
LOCUST_OPTIONS: tuple[tuple[str, Callable[[str], Any], str, str], ...] = (
    (
        "--expect-workers",
        int,
        "N",
        "locust --master: refuse to start with fewer than N workers (default %(default)s)",
    ),
    (
        "--expect-workers-max-wait",
        float,
        "SECONDS",
        "locust --master: give up (exit 3) when the workers are not there by then",
    ),
    ("--master-bind-host", str, "HOST", "locust --master: interface"),
    ("--master-bind-port", int, "PORT", "locust --master: port (default %(default)s)"),
    ("--master-host", str, "HOST", "locust --worker: master"),
    ("--master-port", int, "PORT", "locust --worker: master port (default %(default)s)"),
    ("--region", str, "NAME", "locust --worker (latency): the region this worker probes"),
)


def add_engine_options(parser: argparse.ArgumentParser, *, processes: bool = False) -> None:
    """Add --engine and the Locust master/worker flags (and --processes, if asked) to a parser."""
    group = parser.add_argument_group("engine (Locust: master and workers run the same scenario)")
    if processes:
        group.add_argument(
            "--processes",
            type=PROCESSES,
            default=DEFAULTS.processes,
            metavar="N",
            help=f"with --engine locust: local workers, 1 to {MAX_PROCESSES} (default %(default)s)",
        )
    group.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULTS.engine,
        help="builtin: this process, or --processes N forked children (default); locust: Locust "
        "master and workers, "
        "with --processes N local workers unless --master or --worker",
    )
    group.add_argument(
        "--master", action="store_true", help="locust: run the master; workers connect to it"
    )
    group.add_argument("--worker", action="store_true", help="locust: run one worker")
    for flag, kind, metavar, text in LOCUST_OPTIONS:
        dest = flag.removeprefix("--").replace("-", "_")
        group.add_argument(
            flag, type=kind, default=getattr(DEFAULTS, dest), metavar=metavar, help=text
        )
