"""The Locust run's plan, shared by master and worker: the job, each worker's share, the bounds.

The orchestrator (`locust_engine`) writes the job, the master deals it into shares and the workers
read them; all three import this module and nothing of each other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync_ci.errors import UsageError
from sync_ci.files import write_private
from sync_ci.gates.scenario import LatencyScenario, LoadScenario

GATES = ("load", "latency")
DEFAULT_MASTER_PORT = 5557
DEFAULT_EXPECT_WAIT_S = 60.0


class Msg:
    """Custom messages between master and workers (Locust's register_message / send_message)."""

    HELLO = "sync_ci_hello"
    JOB = "sync_ci_job"
    READY = "sync_ci_ready"
    ARMED = "sync_ci_armed"
    GO = "sync_ci_go"
    RESULT = "sync_ci_result"
    FAILED = "sync_ci_failed"
    ABORT = "sync_ci_abort"


# After the workers are connected: bound for every worker to plan, spawn its users and arm them.
ARM_BOUND_S = 60.0
# After the last answer is due: bound for the results to reach the master.
REPORT_MARGIN_S = 30.0


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
class WorkerShare:
    """One worker's part of a job: which slice of the burst, how many users, samples per region."""

    part: int = 0
    parts: int = 1
    users: int = 1
    samples: Mapping[str, int] = field(default_factory=dict)
    limits: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Render as the JOB message's fields."""
        return {
            "part": self.part,
            "parts": self.parts,
            "users": self.users,
            "samples": dict(self.samples),
            "limits": dict(self.limits),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerShare:
        """Parse what `to_json` wrote."""
        return cls(
            part=int(data["part"]),
            parts=int(data["parts"]),
            users=int(data["users"]),
            samples={str(k): int(v) for k, v in dict(data["samples"]).items()},
            limits={str(k): int(v) for k, v in dict(data["limits"]).items()},
        )


def load_scenario(data: Mapping[str, Any]) -> LoadScenario:
    """Rebuild the load scenario a job carries (its `to_json` form)."""
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


def deal(
    job: EngineJob, workers: Sequence[str], tags: Mapping[str, str]
) -> tuple[dict[str, WorkerShare], dict[str, str]]:
    """Deal a job over the connected workers (in order); return their shares and uncovered regions.

    `tags` names each worker's region (latency; '' for none). Uncovered maps a region no worker
    can probe to why.
    """
    parts = len(workers)
    if job.gate != "latency":
        total = sum(int(v) for k, v in job.scenario.items() if k in ("installs", "pushes"))
        users = max(burst_users_per_worker(total, parts) if job.burst else 1, 1)
        shares = {w: WorkerShare(part=i, parts=parts, users=users) for i, w in enumerate(workers)}
        return shares, {}
    assignment, missing = assign_regions([r["name"] for r in job.regions], tags)
    probe = latency_scenario(job.scenario)
    samples = region_samples(probe.samples, assignment)
    # The scenario's bound on probes in flight holds per region, however many workers share it.
    limits = region_samples(probe.concurrency, assignment, floor=1)
    users = max(probe.concurrency * max((len(r) for r in assignment.values()), default=1), 1)
    uncovered = {
        name: f"no Locust worker tagged with region {name} (and no untagged worker) connected"
        for name in missing
    }
    shares = {
        w: WorkerShare(part=i, parts=parts, users=users, samples=samples[w], limits=limits[w])
        for i, w in enumerate(workers)
    }
    return shares, uncovered


def write_document(path: Path, document: Mapping[str, Any]) -> None:
    """Write a JSON document the other side of the run reads (job, ready file, outcome), owner-only."""
    write_private(path, json.dumps(document))
