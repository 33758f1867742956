"""The gates' verdicts: measured outcomes judged against the thresholds, and the result documents.

One place judges, whichever engine measured and however many machines' results were merged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sync_ci.gates import histogram
from sync_ci.gates.outcome import BURST, OPEN, OpStats, PhaseOutcome, RegionOutcome
from sync_ci.gates.scenario import OPERATIONS, LatencyScenario, LoadScenario
from sync_ci.gates.thresholds import Threshold
from sync_ci.report import Report, Result, make_report


def _start_of(duration_s: float, started_at: datetime | None = None) -> datetime:
    """When a run began: `started_at` when the caller knows it (a merge: the earliest part's),
    else now less the `duration_s` the run took (documents are built when the run ends)."""
    return started_at or datetime.now(UTC) - timedelta(seconds=duration_s)


# --- judging ------------------------------------------------------------------------------------


def evaluate_phase(
    outcome: PhaseOutcome,
    thresholds: Mapping[str, Threshold],
    required: Mapping[str, int] | None = None,
) -> list[Result]:
    """Judge one phase against the thresholds; `required` raises the planned counts (merges)."""
    prefix = f"load.{outcome.phase}"
    label = "burst" if outcome.phase == BURST else "open model"
    rows: list[Result] = []
    for name in OPERATIONS:
        op = outcome.ops.get(name, OpStats())
        summary = (
            histogram.summarize(histogram.decode(op.histogram))
            if op.histogram
            else (histogram.summarize(histogram.new()))
        )
        limit = thresholds[f"load.{name}.p95_ms"]
        observed = {
            **summary.to_json(),
            **{k: v for k, v in op.to_json().items() if k != "histogram"},
        }
        detail = (
            f"p95 {summary.p95_ms:.1f} ms over {summary.count} answers"
            if summary.count
            else "no answers measured"
        )
        if outcome.phase == OPEN and summary.count:
            # Coordinated omission: the verdict uses latency from the intended send time.
            raw = (
                histogram.summarize(histogram.decode(outcome.raw[name]))
                if name in outcome.raw
                else None
            )
            observed["raw_p95_ms"] = raw.p95_ms if raw else None
            detail += " from intended send time" + (
                f" (raw p95 {raw.p95_ms:.1f} ms)" if raw else ""
            )
        rows.append(
            limit.check(
                # No answers is no data: infinity fails every latency limit (fail closed).
                summary.p95_ms if summary.count else math.inf,
                result_id=f"{prefix}.{name}.p95_ms",
                title=f"{label}: {name} p95 {limit.describe()}",
                detail=detail,
                observed=observed,
            )
        )
    ops = [outcome.ops.get(name, OpStats()) for name in OPERATIONS]
    planned = {name: outcome.ops.get(name, OpStats()).planned for name in OPERATIONS}
    for name, floor in (required or {}).items():
        planned[name] = max(planned.get(name, 0), floor)
    missing = sum(
        max(planned[name] - outcome.ops.get(name, OpStats()).ok, 0) for name in OPERATIONS
    )
    counts = (
        ("load.5xx", sum(op.status_5xx for op in ops), "5xx answers"),
        (
            "load.errors",
            sum(op.errors for op in ops),
            "4xx, network, wrong-answer and other errors",
        ),
        ("load.missing", missing, "planned requests without a successful sample"),
    )
    for threshold_id, value, what in counts:
        limit = thresholds[threshold_id]
        example = next((op.first_error for op in ops if op.first_error), "")
        detail = f"{value} {what}" + (f" (first: {example})" if value and example else "")
        per_op = {
            name: {
                "planned": planned[name],
                "ok": op.ok,
                "5xx": op.status_5xx,
                "4xx": op.status_4xx,
                "network": op.network,
                "other": op.other,
                "invalid": op.invalid,
            }
            for name, op in zip(OPERATIONS, ops, strict=True)
        }
        rows.append(
            limit.check(
                value,
                result_id=f"{prefix}.{threshold_id.removeprefix('load.')}",
                title=f"{label}: {what} {limit.describe()}",
                detail=detail,
                observed={"value": value, "by_operation": per_op},
            )
        )
    if outcome.phase == BURST:
        limit = thresholds["load.start_spread_ms"]
        spread = outcome.start_spread_ms
        rows.append(
            limit.check(
                spread,
                result_id=f"{prefix}.start_spread_ms",
                title=f"burst: start spread {limit.describe()}",
                detail=f"all requests left within {spread:.1f} ms (client CPU {outcome.cpu_s:.2f} s)",
                observed={
                    "start_spread_ms": round(spread, 3),
                    "cpu_s": round(outcome.cpu_s, 4),
                    "wall_s": round(outcome.wall_s, 4),
                    "processes": outcome.processes,
                },
            )
        )
    return rows


def _summary(outcome: RegionOutcome) -> histogram.LatencySummary:
    return histogram.summarize(
        histogram.decode(outcome.histogram) if outcome.histogram else histogram.new()
    )


def evaluate_region(outcome: RegionOutcome, thresholds: Mapping[str, Threshold]) -> Result:
    """Judge one region: p95, p99, errors and the share answered by another colo."""
    summary = _summary(outcome)
    p95, p99 = thresholds["latency.region.p95_ms"], thresholds["latency.region.p99_ms"]
    errors, other = (
        thresholds["latency.region.errors"],
        thresholds["latency.region.other_colo_fraction"],
    )
    answered = outcome.ok + outcome.other_colo
    fraction = outcome.other_colo / answered if answered else 0.0
    breaches: list[str] = []
    if outcome.unreachable:
        breaches.append(f"unreachable: {outcome.unreachable}")
    elif summary.count == 0:
        breaches.append(f"no cold read answered by {outcome.colo}")
    else:
        if not p95.passes(summary.p95_ms):
            breaches.append(f"breached {p95.id} {p95.describe()}: p95 {summary.p95_ms:.1f} ms")
        if not p99.passes(summary.p99_ms):
            breaches.append(f"breached {p99.id} {p99.describe()}: p99 {summary.p99_ms:.1f} ms")
    if not errors.passes(outcome.errors):
        example = f" (first: {outcome.first_error})" if outcome.first_error else ""
        breaches.append(
            f"breached {errors.id} {errors.describe()}: {outcome.errors} failed probes{example}"
        )
    if not other.passes(fraction):
        seen = ", ".join(f"{c} x{n}" for c, n in sorted(outcome.other_colos.items()))
        breaches.append(
            f"breached {other.id} {other.describe()}: {outcome.other_colo} of {answered} "
            f"answered by another colo ({seen})"
        )
    detail = "; ".join(breaches) or (
        f"{summary.count} cold reads at {outcome.colo}: p50 {summary.p50_ms:.1f} / "
        f"p95 {summary.p95_ms:.1f} / p99 {summary.p99_ms:.1f} ms"
        + (f"; {outcome.other_colo} other-colo excluded" if outcome.other_colo else "")
    )
    return Result(
        id=f"latency.region.{outcome.name}",
        title=f"region {outcome.name} ({outcome.colo}) p95 {p95.describe()}, p99 {p99.describe()}",
        status="fail" if breaches else "pass",
        detail=detail,
        observed={
            **summary.to_json(),
            "colo": outcome.colo,
            "planned": outcome.planned,
            "ok": outcome.ok,
            "status_5xx": outcome.status_5xx,
            "status_4xx": outcome.status_4xx,
            "network": outcome.network,
            "warm": outcome.warm,
            "other_colo": outcome.other_colo,
            "other_colo_fraction": round(fraction, 6),
            "other_colos": dict(outcome.other_colos),
        },
        threshold={t.id: t.to_json() for t in (p95, p99, errors, other)},
    )


def evaluate_latency(
    regions: Mapping[str, RegionOutcome], thresholds: Mapping[str, Threshold]
) -> list[Result]:
    """Judge every region, the overall distribution and the number of regions measured."""
    rows = [evaluate_region(regions[name], thresholds) for name in sorted(regions)]
    encoded = [r.histogram for r in regions.values() if r.histogram]
    overall = histogram.summarize(histogram.merge(histogram.decode(e) for e in encoded))
    rows.append(
        Result(
            id="latency.overall",
            title="all regions together (reported; limits apply per region)",
            status="pass" if overall.count else "fail",
            detail=(
                f"{overall.count} cold reads: p50 {overall.p50_ms:.1f} / p95 {overall.p95_ms:.1f} / "
                f"p99 {overall.p99_ms:.1f} ms"
                if overall.count
                else "no cold reads measured"
            ),
            observed=overall.to_json(),
        )
    )
    measured = sorted(
        name for name, r in regions.items() if not r.unreachable and _summary(r).count > 0
    )
    limit = thresholds["latency.regions"]
    rows.append(
        limit.check(
            len(measured),
            result_id="latency.regions",
            title=f"regions measured {limit.describe()}",
            detail=f"{len(measured)} regions measured: {', '.join(measured) or 'none'}",
            observed={"measured": len(measured), "regions": measured},
        )
    )
    return rows


# --- documents -----------------------------------------------------------------------------------


def unmeasured(suite: str, target: str, sha: str, started: float, gate_id: str, why: str) -> Report:
    """Return the document of a gate that could not measure (exit 3): one error row saying why."""
    duration_s = time.monotonic() - started
    return make_report(
        suite=suite,
        target=target,
        mode="gate",
        sha=sha,
        started_at=_start_of(duration_s),
        duration_s=duration_s,
        results=[
            Result(
                id=f"{gate_id}.reachable",
                title="the target answered, so something could be measured",
                status="error",
                detail=f"could not measure: {why}",
            )
        ],
        unmeasured=True,
        extra={"gate": gate_id, "reason": why},
    )


def load_report(
    phases: Sequence[PhaseOutcome],
    table: Mapping[str, Threshold],
    scenario: LoadScenario,
    *,
    target: str,
    sha: str,
    duration_s: float,
    required: Mapping[str, int] | None = None,
    merged_from: Sequence[str] = (),
    engine: Mapping[str, Any] | None = None,
    started_at: datetime | None = None,
) -> Report:
    """Build the load gate's result document from measured phases (`engine`: who measured)."""
    rows = [row for phase in phases for row in evaluate_phase(phase, table, required)]
    extra: dict[str, Any] = {
        "gate": "load",
        "scenario": scenario.to_json(),
        "phases": {phase.phase: phase.to_json() for phase in phases},
        "thresholds": {t.id: t.to_json() for t in table.values() if t.id.startswith("load.")},
    }
    if merged_from:
        extra["merged_from"] = list(merged_from)
    extra.update(engine or {})
    return make_report(
        suite="gate.load",
        target=target,
        mode="+".join(p.phase for p in phases),
        sha=sha,
        started_at=_start_of(duration_s, started_at),
        duration_s=duration_s,
        results=rows,
        extra=extra,
    )


def latency_report(
    regions: Mapping[str, RegionOutcome],
    table: Mapping[str, Threshold],
    scenario: LatencyScenario,
    *,
    target: str,
    sha: str,
    duration_s: float,
    merged_from: Sequence[str] = (),
    engine: Mapping[str, Any] | None = None,
    started_at: datetime | None = None,
) -> Report:
    """Build the latency gate's result document (`engine`: who measured)."""
    extra: dict[str, Any] = {
        "gate": "latency",
        "scenario": scenario.to_json(),
        "regions": {name: outcome.to_json() for name, outcome in regions.items()},
        "thresholds": {t.id: t.to_json() for t in table.values() if t.id.startswith("latency.")},
    }
    if merged_from:
        extra["merged_from"] = list(merged_from)
    extra.update(engine or {})
    return make_report(
        suite="gate.latency",
        target=target,
        mode="cold-kv",
        sha=sha,
        started_at=_start_of(duration_s, started_at),
        duration_s=duration_s,
        results=evaluate_latency(regions, table),
        unmeasured=bool(regions) and all(o.unreachable for o in regions.values()),
        extra=extra,
    )


def platforms_report(
    results: Sequence[Result],
    extra: Mapping[str, Any],
    *,
    target: str,
    sha: str,
    duration_s: float,
    unmeasured: bool = False,
) -> Report:
    """Build the platforms gate's result document from the judged recordings."""
    return make_report(
        suite="gate.platforms",
        target=target,
        mode="recordings",
        sha=sha,
        started_at=_start_of(duration_s),
        duration_s=duration_s,
        results=list(results),
        unmeasured=unmeasured,
        extra={"gate": "platforms", **extra},
    )


def combine(reports: Sequence[Report], *, target: str, sha: str, duration_s: float) -> Report:
    """Put every gate's rows into one report; unmeasured if any gate could not measure."""
    # Each gate's facts as its own document carries them (`unmeasured` inside extra).
    gates = {r.suite: r.to_json().get("extra", {}) for r in reports}
    return make_report(
        suite="gate.all",
        target=target,
        mode="+".join(r.suite.removeprefix("gate.") for r in reports),
        sha=sha,
        started_at=min((r.started_at for r in reports), default=_start_of(duration_s)),
        duration_s=duration_s,
        results=[row for r in reports for row in r.results],
        unmeasured=any(r.unmeasured for r in reports),
        extra={"gate": "all", "gates": gates},
    )
