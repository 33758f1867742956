"""What the gate flags mean: typed options built once from the parsed flags, and the engine flags."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from sync_ci.errors import UsageError
from sync_ci.gates import thresholds as threshold_table
from sync_ci.gates.locust_plan import DEFAULT_EXPECT_WAIT_S, DEFAULT_MASTER_PORT
from sync_ci.gates.scenario import LatencyScenario, LoadScenario
from sync_ci.gates.thresholds import Threshold

ENGINES = ("builtin", "locust")
MAX_TIMEOUT_S = 600.0


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


def check_timeout(timeout_s: float) -> float:
    """Refuse a per-request bound outside (0, 600] seconds."""
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise UsageError(f"--timeout {timeout_s:g} must be between 0 and 600 seconds")
    return timeout_s


def load_options(args: argparse.Namespace) -> LoadOptions:
    """Return the load run the flags ask for (only ever stricter than canonical)."""
    scenario = LoadScenario(
        installs=threshold_table.check_count("installs", args.installs),
        pushes=threshold_table.check_count("pushes", args.pushes),
    )
    table = threshold_table.resolve(threshold_table.parse_overrides(args.threshold))
    if (args.rate > 0) != (args.duration > 0):
        raise UsageError("--rate and --duration go together (the open-model phase needs both)")
    if args.processes < 1:
        raise UsageError("--processes must be at least 1")
    return LoadOptions(
        scenario=scenario,
        thresholds=table,
        timeout_s=check_timeout(args.timeout),
        rate=args.rate,
        duration_s=args.duration,
        processes=args.processes,
        quiet=bool(getattr(args, "quiet", False)),
    )


def latency_options(args: argparse.Namespace) -> LatencyOptions:
    """Return the probe run the flags ask for."""
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    timeout_s = check_timeout(args.timeout)
    scenario = LatencyScenario(
        samples=threshold_table.check_count("samples", args.samples), concurrency=args.concurrency
    )
    return LatencyOptions(
        scenario=scenario,
        thresholds=threshold_table.resolve(threshold_table.parse_overrides(args.threshold)),
        timeout_s=timeout_s,
        quiet=bool(getattr(args, "quiet", False)),
    )


def check_engine_options(args: argparse.Namespace) -> bool:
    """Validate the engine flags; return True when the Locust engine is asked for."""
    engine = getattr(args, "engine", "builtin")
    master, worker = getattr(args, "master", False), getattr(args, "worker", False)
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine != "locust":
        if master or worker:
            raise UsageError("--master and --worker need --engine locust")
        return False
    from sync_ci.extras import require_extra

    require_extra("locust", "locust", needed_by="--engine locust")
    require_extra("gevent", "locust", needed_by="--engine locust")
    if master and worker:
        raise UsageError("a process is either the Locust --master or a --worker, not both")
    if worker and not getattr(args, "master_host", ""):
        raise UsageError("--worker needs --master-host HOST (where `--master` runs)")
    if getattr(args, "expect_workers", 1) < 1:
        raise UsageError("--expect-workers must be at least 1")
    if not 0 < getattr(args, "expect_workers_max_wait", DEFAULT_EXPECT_WAIT_S) <= 3600:
        raise UsageError("--expect-workers-max-wait must be between 0 and 3600 seconds")
    for name in ("master_port", "master_bind_port"):
        port = getattr(args, name, DEFAULT_MASTER_PORT)
        if not 0 <= port <= 65535:
            raise UsageError(f"--{name.replace('_', '-')} {port} is not a TCP port")
    return True


def locust_mode(args: argparse.Namespace) -> LocustMode:
    """Return the master's mode: --master waits for remote workers, else --processes local ones."""
    if args.master:
        return LocustMode(
            expect_workers=args.expect_workers,
            local_workers=0,
            bind_host=args.master_bind_host,
            bind_port=args.master_bind_port,
            expect_wait_s=args.expect_workers_max_wait,
        )
    if args.processes < 1:
        raise UsageError("--processes must be at least 1")
    return LocustMode(
        expect_workers=args.processes,
        local_workers=args.processes,
        expect_wait_s=args.expect_workers_max_wait,
    )


def worker_options(args: argparse.Namespace, gate: str) -> WorkerOptions:
    """Return the worker the `--engine locust --worker` flags describe."""
    return WorkerOptions(
        gate=gate,
        config=args.config,
        target=args.target,
        master_host=args.master_host,
        master_port=args.master_port,
        region=args.region,
        connect_wait_s=args.expect_workers_max_wait,
        debug=bool(args.debug),
        quiet=bool(getattr(args, "quiet", False)),
    )


def add_engine_options(parser: argparse.ArgumentParser, *, processes: bool = False) -> None:
    """Add --engine and the Locust master/worker flags (and --processes, if asked) to a parser."""
    from sync_ci.options import number

    group = parser.add_argument_group("engine (Locust: master and workers run the same scenario)")
    if processes:
        group.add_argument(
            "--processes",
            type=number(int, minimum=1, maximum=256),
            default=1,
            metavar="N",
            help="with --engine locust: local workers, 1 to 256 (default %(default)s)",
        )
    group.add_argument(
        "--engine",
        choices=ENGINES,
        default="builtin",
        help="builtin: aiohttp in this process (default); locust: Locust master and workers, "
        "with --processes N local workers unless --master or --worker",
    )
    group.add_argument(
        "--master", action="store_true", help="locust: run the master; workers connect to it"
    )
    group.add_argument(
        "--expect-workers",
        type=int,
        default=1,
        metavar="N",
        help="locust --master: refuse to start with fewer than N workers (default %(default)s)",
    )
    group.add_argument(
        "--expect-workers-max-wait",
        type=float,
        default=DEFAULT_EXPECT_WAIT_S,
        metavar="SECONDS",
        help="locust --master: give up (exit 3) when the workers are not there by then",
    )
    group.add_argument(
        "--master-bind-host", default="*", metavar="HOST", help="locust --master: interface"
    )
    group.add_argument(
        "--master-bind-port",
        type=int,
        default=DEFAULT_MASTER_PORT,
        metavar="PORT",
        help="locust --master: port (default %(default)s)",
    )
    group.add_argument("--worker", action="store_true", help="locust: run one worker")
    group.add_argument("--master-host", default="", metavar="HOST", help="locust --worker: master")
    group.add_argument(
        "--master-port",
        type=int,
        default=DEFAULT_MASTER_PORT,
        metavar="PORT",
        help="locust --worker: master port (default %(default)s)",
    )
    group.add_argument(
        "--region",
        default="",
        metavar="NAME",
        help="locust --worker (latency): the region this worker probes",
    )
