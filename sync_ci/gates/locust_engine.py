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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.errors import ExitCode, SyncCIError, UsageError

if TYPE_CHECKING:
    from sync_ci.config import Settings
    from sync_ci.gates.latency import RegionOutcome
    from sync_ci.gates.load import PhaseOutcome
    from sync_ci.report import Report

ENGINES = ("builtin", "locust")
GATES = ("load", "latency")
DEFAULT_MASTER_PORT = 5557
DEFAULT_EXPECT_WAIT_S = 60.0
# After the workers are connected: bound for every worker to plan, spawn its users and arm them.
ARM_BOUND_S = 60.0
# After the last answer is due: bound for the results to reach the master.
REPORT_MARGIN_S = 30.0
SECRET_ENV = "SYNC_CI_TENANT_SECRET"
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


def region_samples(samples: int, assignment: Mapping[str, Sequence[str]]) -> dict[str, dict[str, int]]:
    """Deal each region's samples over the workers that probe it: {worker: {region: count}}."""
    probers: dict[str, list[str]] = {}
    for worker in sorted(assignment):
        for region in assignment[worker]:
            probers.setdefault(region, []).append(worker)
    counts: dict[str, dict[str, int]] = {worker: {} for worker in assignment}
    for region, workers in probers.items():
        for index, worker in enumerate(workers):
            counts[worker][region] = share(samples, len(workers), index)
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
            RegionOutcome(name=name, colo=colos.get(name, "").upper(), planned=samples, unreachable=why)
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


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Add --engine and the Locust master/worker flags to a gate's parser."""
    group = parser.add_argument_group("engine (Locust: master and workers run the same scenario)")
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


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


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

