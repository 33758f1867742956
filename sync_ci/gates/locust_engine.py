"""The gates on Locust's distributed runner: master and workers run the scenario; we keep the verdict.

This module never imports locust (which monkey-patches a process with gevent): the Locust master
and workers run as `python -m sync_ci.gates.locust_engine master|worker` subprocesses, and only
those import `sync_ci.gates.locust_user`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.config import read_secret
from sync_ci.errors import ExitCode, SyncCIError, UsageError
from sync_ci.files import write_private
from sync_ci.sandbox.processes import spawn, stop_process_group

if TYPE_CHECKING:
    from sync_ci.config import Settings
    from sync_ci.gates.http import HttpPolicy
    from sync_ci.gates.latency import RegionOutcome
    from sync_ci.gates.load import PhaseOutcome
    from sync_ci.gates.scenario import LatencyScenario, LoadScenario
    from sync_ci.report import Report

ENGINES = ("builtin", "locust")
GATES = ("load", "latency")
DEFAULT_MASTER_PORT = 5557
DEFAULT_EXPECT_WAIT_S = 60.0
# After the workers are connected: bound for every worker to plan, spawn its users and arm them.
ARM_BOUND_S = 60.0
# After the last answer is due: bound for the results to reach the master.
REPORT_MARGIN_S = 30.0
# Starting the master imports Locust and gevent: seconds on a quiet machine, far more under load.
MASTER_START_S = 120.0
SECRET_ENV = "SYNC_CI_TENANT_SECRET"  # noqa: S105  (a variable name, not a secret)
ProgressFn = Callable[[str], None]


class EngineError(SyncCIError):
    """The Locust engine could not measure (workers missing, lost or failing): nothing judged."""

    exit_code = ExitCode.UNMEASURED


# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineJob:
    """What the master ships to every worker (no secrets: each worker holds its own)."""

    gate: str
    base_url: str
    timeout_s: float
    scenario: Mapping[str, Any]
    rate: float = 0.0
    duration_s: float = 0.0
    burst: bool = True
    regions: Sequence[Mapping[str, str]] = ()

    def to_json(self) -> dict[str, Any]:
        """Render as the JSON the master reads and the workers receive."""
        return {
            "gate": self.gate,
            "base_url": self.base_url,
            "timeout_s": self.timeout_s,
            "scenario": dict(self.scenario),
            "rate": self.rate,
            "duration_s": self.duration_s,
            "burst": self.burst,
            "regions": [dict(r) for r in self.regions],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EngineJob:
        """Parse what `to_json` wrote."""
        return cls(
            gate=str(data["gate"]),
            base_url=str(data["base_url"]),
            timeout_s=float(data["timeout_s"]),
            scenario=dict(data["scenario"]),
            rate=float(data.get("rate", 0.0)),
            duration_s=float(data.get("duration_s", 0.0)),
            burst=bool(data.get("burst", True)),
            regions=[{str(k): str(v) for k, v in r.items()} for r in data.get("regions", [])],
        )

    def run_bound_s(self) -> float:
        """Seconds from the start signal until every result must be in."""
        return self.timeout_s + self.duration_s + REPORT_MARGIN_S


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReport:
    """One worker's identity and what it measured."""

    id: str
    host: str = ""
    region: str = ""
    samples: int = 0
    result: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOutcome:
    """What the master measured: every worker's report, plus regions no worker could cover."""

    gate: str
    workers: Sequence[WorkerReport]
    same_clock: bool = True
    uncovered: Mapping[str, str] = field(default_factory=dict)

    def worker_samples(self) -> dict[str, dict[str, Any]]:
        """Per-worker sample counts for the result document."""
        return {
            w.id: {"samples": w.samples, "host": w.host, "region": w.region} for w in self.workers
        }


# --- pure planning and combining ----------------------------------------------------------------


def load_scenario(data: Mapping[str, Any]) -> LoadScenario:
    """Rebuild the load scenario a job carries (its `to_json` form)."""
    from sync_ci.gates.scenario import LoadScenario

    try:
        return LoadScenario(
            installs=int(data["installs"]),
            pushes=int(data["pushes"]),
            tenants=int(data["tenants"]),
            body_bytes=int(data["body_bytes"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"malformed load scenario in the Locust job ({exc})") from None


def latency_scenario(data: Mapping[str, Any]) -> LatencyScenario:
    """Rebuild the probe scenario a job carries (its `to_json` form)."""
    from sync_ci.gates.scenario import LatencyScenario

    try:
        return LatencyScenario(samples=int(data["samples"]), concurrency=int(data["concurrency"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"malformed latency scenario in the Locust job ({exc})") from None


def share(total: int, parts: int, index: int) -> int:
    """Return part `index`'s share when `total` is dealt over `parts` (the first ones get one more)."""
    if parts < 1 or not 0 <= index < parts:
        raise UsageError(f"cannot take share {index} of {parts}")
    return total // parts + (1 if index < total % parts else 0)


def burst_users_per_worker(total: int, workers: int) -> int:
    """Users each worker runs so that its whole slice of the burst is in flight at once."""
    return max(1, math.ceil(total / max(workers, 1)))


def assign_regions(
    regions: Sequence[str], tags: Mapping[str, str]
) -> tuple[dict[str, list[str]], list[str]]:
    """Give each region to the workers tagged with it, else to the untagged ones.

    Returns ({worker id: [region, ...]}, [regions no worker can probe]). Tags match region names
    case-insensitively; a tag naming no region is refused.
    """
    by_lower = {r.lower(): r for r in regions}
    unknown = sorted({t for t in tags.values() if t and t.lower() not in by_lower})
    if unknown:
        raise UsageError(
            f"Locust workers are tagged with regions the settings do not name: {', '.join(unknown)} "
            f"(known: {', '.join(regions) or 'none'})"
        )
    assignment: dict[str, list[str]] = {worker: [] for worker in sorted(tags)}
    untagged = [w for w in sorted(tags) if not tags[w]]
    uncovered: list[str] = []
    for region in regions:
        chosen = [w for w in sorted(tags) if tags[w].lower() == region.lower()] or untagged
        if not chosen:
            uncovered.append(region)
        for worker in chosen:
            assignment[worker].append(region)
    return assignment, uncovered


def region_samples(
    samples: int, assignment: Mapping[str, Sequence[str]], *, floor: int = 0
) -> dict[str, dict[str, int]]:
    """Deal a per-region total (samples, or probes in flight) over the workers that probe it.

    Returns {worker: {region: share}}; `floor` is the least share (1 for concurrency).
    """
    probers: dict[str, list[str]] = {}
    for worker in sorted(assignment):
        for region in assignment[worker]:
            probers.setdefault(region, []).append(worker)
    counts: dict[str, dict[str, int]] = {worker: {} for worker in assignment}
    for region, workers in probers.items():
        for index, worker in enumerate(workers):
            counts[worker][region] = max(share(samples, len(workers), index), floor)
    return counts


def combine_load(outcome: EngineOutcome) -> list[PhaseOutcome]:
    """Merge every worker's phases exactly (histograms merged, counts summed)."""
    from sync_ci.gates.load import PhaseOutcome, merge_phase

    by_phase: dict[str, list[PhaseOutcome]] = {}
    for worker in outcome.workers:
        for document in worker.result.get("phases", []):
            phase = PhaseOutcome.from_json(document)
            by_phase.setdefault(phase.phase, []).append(phase)
    if not by_phase:
        raise EngineError("no Locust worker reported a measurement")
    order = {"burst": 0, "open": 1}
    return [
        merge_phase(parts, same_clock=outcome.same_clock)
        for _, parts in sorted(by_phase.items(), key=lambda item: order.get(item[0], 9))
    ]


def combine_latency(
    outcome: EngineOutcome, regions: Sequence[Mapping[str, str]], samples: int
) -> dict[str, RegionOutcome]:
    """Merge every worker's per-region outcomes; a region nobody could probe is unreachable."""
    from sync_ci.gates.latency import RegionOutcome, merge_regions

    parts = [
        RegionOutcome.from_json(document)
        for worker in outcome.workers
        for document in worker.result.get("regions", [])
    ]
    colos = {r["name"]: r.get("colo", "") for r in regions}
    for name, why in outcome.uncovered.items():
        parts.append(
            RegionOutcome(
                name=name, colo=colos.get(name, "").upper(), planned=samples, unreachable=why
            )
        )
    merged = merge_regions(parts)
    return {name: merged[name] for name in sorted(merged)}


def with_engine(report: Report, outcome: EngineOutcome) -> Report:
    """Add the engine, the worker count and the per-worker sample counts to a result document."""
    extra = {
        **report.extra,
        "engine": "locust",
        "workers": len(outcome.workers),
        "worker_samples": outcome.worker_samples(),
    }
    return replace(report, extra=extra)


# --- options ------------------------------------------------------------------------------------


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


def add_engine_options(parser: argparse.ArgumentParser, *, processes: bool = False) -> None:
    """Add --engine and the Locust master/worker flags (and --processes, if asked) to a parser."""
    from sync_ci.cli import number

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


# --- subprocess orchestration (edge) ------------------------------------------------------------


def _module_command(role: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "sync_ci.gates.locust_engine", role, *options]


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], bound_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_size:
            with path.open(encoding="utf-8") as handle:
                loaded: dict[str, Any] = json.load(handle)
            return loaded
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise EngineError(f"the Locust master did not start within {bound_s:g} s")


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _write_private(path: Path, document: Mapping[str, Any]) -> None:
    write_private(path, json.dumps(document))


def _child_env(tenant_secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    if tenant_secret:
        # The environment, not argv: argv is visible to every user of the machine.
        env[SECRET_ENV] = tenant_secret
    return env


def _parse_master_output(document: Mapping[str, Any]) -> EngineOutcome:
    if not document.get("ok"):
        message = str(document.get("error") or "the Locust master failed")
        code = int(document.get("exit", ExitCode.UNMEASURED))
        if code == ExitCode.USAGE:
            raise UsageError(message)
        if code == ExitCode.FAILED:
            from sync_ci.errors import GuardViolation

            raise GuardViolation(message)
        raise EngineError(message)
    workers = [
        WorkerReport(
            id=str(w["id"]),
            host=str(w.get("host", "")),
            region=str(w.get("region", "")),
            samples=int(w.get("samples", 0)),
            result=dict(w.get("result", {})),
        )
        for w in document.get("workers", [])
    ]
    return EngineOutcome(
        gate=str(document["gate"]),
        workers=workers,
        same_clock=bool(document.get("same_clock", False)),
        uncovered={str(k): str(v) for k, v in dict(document.get("uncovered", {})).items()},
    )


def _policy_options(policy: HttpPolicy | None) -> list[str]:
    """The worker subprocess's policy flags: read-only unless it is told where it may write."""
    if policy is None or policy.read_only:
        return []
    return ["--write-root", policy.write_root]


def worker_policy(write_root: str) -> HttpPolicy:
    """The policy a worker subprocess enforces: pushes under `write_root`, or read-only without it."""
    from sync_ci.gates.http import push_policy, read_only_policy

    return push_policy(write_root) if write_root else read_only_policy()


def run_locust(
    job: EngineJob,
    *,
    expect_workers: int,
    local_workers: int = 0,
    bind_host: str = "127.0.0.1",
    bind_port: int = 0,
    expect_wait_s: float = DEFAULT_EXPECT_WAIT_S,
    tenant_secret: str = "",
    policy: HttpPolicy | None = None,
    debug: bool = False,
    progress: ProgressFn | None = None,
) -> EngineOutcome:
    """Run the Locust master (and `local_workers` workers) as subprocesses; return what it measured."""
    if local_workers and bind_host not in ("127.0.0.1", "localhost"):
        raise UsageError("local Locust workers connect over loopback only")
    with tempfile.TemporaryDirectory(prefix="sync-ci-locust-") as tmp:
        root = Path(tmp)
        job_path, ready_path, out_path = root / "job.json", root / "ready.json", root / "out.json"
        log_path = root / "master.log"
        _write_private(job_path, job.to_json())
        command = _module_command(
            "master",
            *("--job", str(job_path), "--out", str(out_path), "--ready", str(ready_path)),
            *("--expect-workers", str(expect_workers), "--wait", str(expect_wait_s)),
            *("--bind-host", bind_host, "--bind-port", str(bind_port)),
            *(["--debug"] if debug else []),
        )
        processes: list[subprocess.Popen[bytes]] = []
        with log_path.open("wb") as log:
            # Own process groups that die with this process and stop on SIGINT/SIGTERM.
            master = spawn(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(""),
            )
        try:
            port = int(_wait_for_file(ready_path, master, MASTER_START_S)["port"])
            if progress:
                progress(f"locust: master on port {port}, waiting for {expect_workers} workers")
            for index in range(local_workers):
                with (root / f"worker-{index}.log").open("wb") as worker_log:
                    processes.append(
                        spawn(
                            _module_command(
                                "worker",
                                *("--gate", job.gate, "--master-host", "127.0.0.1"),
                                *("--master-port", str(port), "--connect-wait", "30"),
                                *_policy_options(policy),
                                *(["--debug"] if debug else []),
                            ),
                            stdin=subprocess.DEVNULL,
                            stdout=worker_log,
                            stderr=subprocess.STDOUT,
                            env=_child_env(tenant_secret),
                        )
                    )
            bound = expect_wait_s + 2 * ARM_BOUND_S + job.run_bound_s() + 15
            started = time.monotonic()
            while master.poll() is None:
                elapsed = time.monotonic() - started
                if elapsed > bound:
                    raise EngineError(f"the Locust master did not finish within {bound:.0f} s")
                if progress:
                    progress(f"locust: running ({elapsed:.0f} s)")
                time.sleep(0.05)
        finally:
            for process in processes:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    stop_process_group(process)
            stop_process_group(master)
        if not out_path.is_file():
            raise EngineError(
                f"the Locust master exited with {master.returncode} and no result: "
                f"{_log_tail(log_path) or 'no output'}"
            )
        document = json.loads(out_path.read_text(encoding="utf-8"))
    return _parse_master_output(document)


def _mode(args: argparse.Namespace) -> dict[str, Any]:
    if args.master:
        return {
            "expect_workers": args.expect_workers,
            "local_workers": 0,
            "bind_host": args.master_bind_host,
            "bind_port": args.master_bind_port,
            "expect_wait_s": args.expect_workers_max_wait,
        }
    if args.processes < 1:
        raise UsageError("--processes must be at least 1")
    return {
        "expect_workers": args.processes,
        "local_workers": args.processes,
        "bind_host": "127.0.0.1",
        "bind_port": 0,
        "expect_wait_s": args.expect_workers_max_wait,
    }


def run_load_locust(settings: Settings, args: argparse.Namespace) -> Report:
    """Run the load gate's scenario on Locust against attached settings and judge it."""
    import asyncio

    from sync_ci.gates import cli as gate_cli
    from sync_ci.gates import load
    from sync_ci.gates.http import policy_for

    started = time.monotonic()
    scenario, table = gate_cli.load_options(args)
    base_url = gate_cli.worker_base_url(settings)
    policy = policy_for(settings)
    load_job = load.plan_job(  # refuses, before anything is sent, what the policy forbids
        scenario, base_url, settings.secrets.tenant_secret, policy=policy, timeout_s=args.timeout
    )
    problem = asyncio.run(load.preflight(base_url))
    if problem:
        return gate_cli._unmeasured(
            "gate.load", settings.target, settings.sha, started, "load", problem
        )
    gate_cli.confirm_writes_land(settings, load_job, scenario)
    job = EngineJob(
        gate="load",
        base_url=base_url,
        timeout_s=args.timeout,
        scenario=scenario.to_json(),
        rate=args.rate,
        duration_s=args.duration,
    )
    progress = gate_cli._progress(args)
    try:
        outcome = run_locust(
            job,
            **_mode(args),
            tenant_secret=settings.secrets.tenant_secret,
            policy=policy,
            debug=args.debug,
            progress=progress,
        )
    finally:
        gate_cli._end_progress(progress)
    phases = combine_load(outcome)
    planned = sum(op.planned for op in phases[0].ops.values())
    if planned != scenario.installs + scenario.pushes:
        raise EngineError(
            f"the Locust workers planned {planned} of the burst's "
            f"{scenario.installs + scenario.pushes} requests"
        )
    report = gate_cli.load_report(
        phases,
        table,
        scenario,
        target=settings.target,
        sha=settings.sha,
        duration_s=time.monotonic() - started,
    )
    return with_engine(report, outcome)


def run_latency_locust(settings: Settings, args: argparse.Namespace) -> Report:
    """Probe every configured region from Locust workers (tagged with their region) and judge it."""
    from sync_ci.errors import SettingsError
    from sync_ci.gates import cli as gate_cli

    started = time.monotonic()
    scenario, table = gate_cli.latency_options(args)
    if not settings.regions:
        raise SettingsError(
            "no regions to probe: add [[regions]] tables (name, url, colo, optional proxy) to sync-ci.toml"
        )
    proxied = [r.name for r in settings.regions if r.proxy]
    if proxied:
        raise UsageError(
            f"regions {', '.join(proxied)} go through an HTTP proxy, which the Locust engine does "
            "not route; run a worker in each region instead, or use --engine builtin"
        )
    regions = [{"name": r.name, "url": r.url.rstrip("/"), "colo": r.colo} for r in settings.regions]
    job = EngineJob(
        gate="latency",
        base_url=regions[0]["url"],
        timeout_s=args.timeout,
        scenario=scenario.to_json(),
        regions=regions,
    )
    progress = gate_cli._progress(args)
    try:
        outcome = run_locust(job, **_mode(args), debug=args.debug, progress=progress)
    finally:
        gate_cli._end_progress(progress)
    report = gate_cli.latency_report(
        combine_latency(outcome, regions, scenario.samples),
        table,
        scenario,
        target=settings.target,
        sha=settings.sha,
        duration_s=time.monotonic() - started,
    )
    return with_engine(report, outcome)


def worker_secret(args: argparse.Namespace, gate: str) -> tuple[str, HttpPolicy]:
    """Return this machine's tenant secret and target policy for a worker (never the master's)."""
    from sync_ci.config import load_settings
    from sync_ci.gates.http import policy_for, read_only_policy
    from sync_ci.sandbox.attach import attach

    if gate != "load":
        return "", read_only_policy()
    settings = load_settings(config=args.config, target=args.target)
    secret = settings.secrets.tenant_secret
    if settings.target == "sandbox" and settings.sandbox_file:
        with attach(settings) as attached:
            settings = attached
            secret = attached.secrets.tenant_secret
    policy = policy_for(settings)
    if not secret and not policy.read_only:
        raise UsageError(
            "a load worker pushes as tenants and needs the tenant secret on its own machine "
            f"({SECRET_ENV}); the master never sends it"
        )
    return secret, policy


WORKER_MAX_RUN_S = 1800.0


def worker_command(args: argparse.Namespace, gate: str) -> int:
    """`sync-ci gate load|latency --engine locust --worker`: run one worker until the master quits."""
    secret, policy = worker_secret(args, gate)
    command = _module_command(
        "worker",
        *(
            "--gate",
            gate,
            "--master-host",
            args.master_host,
            "--master-port",
            str(args.master_port),
        ),
        *("--region", args.region, "--connect-wait", str(args.expect_workers_max_wait)),
        *("--max-run", str(WORKER_MAX_RUN_S)),
        *_policy_options(policy),
        *(["--debug"] if args.debug else []),
        *(["--quiet"] if args.quiet else []),
    )
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            env=_child_env(secret),
            timeout=args.expect_workers_max_wait + WORKER_MAX_RUN_S + 30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EngineError("the Locust worker did not finish in time") from None
    return done.returncode


def locust_command(args: argparse.Namespace, gate: str) -> int:
    """Run `gate` on Locust: a worker, the master, or a master with --processes local workers."""
    from sync_ci.gates import cli as gate_cli

    if args.worker:
        return worker_command(args, gate)
    run = run_load_locust if gate == "load" else run_latency_locust
    return gate_cli._emit(gate_cli._attached_gate(args, f"gate.{gate}", gate, run), args)


# --- subprocess entry point ---------------------------------------------------------------------


def _subprocess_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sync_ci.gates.locust_engine",
        description="Locust master or worker for the sync-ci gates (started by `sync-ci gate`).",
    )
    roles = parser.add_subparsers(dest="role", required=True)
    master = roles.add_parser("master")
    master.add_argument("--job", required=True)
    master.add_argument("--out", required=True)
    master.add_argument("--ready", required=True)
    master.add_argument("--expect-workers", type=int, default=1)
    master.add_argument("--wait", type=float, default=DEFAULT_EXPECT_WAIT_S)
    master.add_argument("--bind-host", default="127.0.0.1")
    master.add_argument("--bind-port", type=int, default=0)
    master.add_argument("--debug", action="store_true")
    worker = roles.add_parser("worker")
    worker.add_argument("--gate", choices=GATES, required=True)
    worker.add_argument("--master-host", required=True)
    worker.add_argument("--master-port", type=int, default=DEFAULT_MASTER_PORT)
    worker.add_argument("--region", default="")
    worker.add_argument("--connect-wait", type=float, default=DEFAULT_EXPECT_WAIT_S)
    worker.add_argument("--max-run", type=float, default=WORKER_MAX_RUN_S)
    worker.add_argument("--write-root", default="", help="where pushes may go (else read-only)")
    worker.add_argument("--debug", action="store_true")
    worker.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of the Locust subprocesses: import locust (gevent) first, then run the role."""
    args = _subprocess_parser().parse_args(argv)
    import locust  # noqa: F401  # gevent patches this process before anything imports ssl

    from sync_ci.gates import locust_user

    if args.role == "master":
        with open(args.job, encoding="utf-8") as handle:
            job = EngineJob.from_json(json.load(handle))
        return locust_user.master_main(
            job,
            out=Path(args.out),
            ready=Path(args.ready),
            expect_workers=args.expect_workers,
            wait_s=args.wait,
            bind_host=args.bind_host,
            bind_port=args.bind_port,
            debug=args.debug,
        )
    return locust_user.worker_main(
        gate=args.gate,
        master_host=args.master_host,
        master_port=args.master_port,
        region=args.region,
        connect_wait_s=args.connect_wait,
        max_run_s=args.max_run,
        tenant_secret=read_secret(SECRET_ENV, os.environ.get(SECRET_ENV, "")),
        policy=worker_policy(args.write_root),
        debug=args.debug,
        quiet=args.quiet,
    )


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # zmq contexts can block interpreter shutdown; everything worth keeping is written and flushed.
    os._exit(code)
