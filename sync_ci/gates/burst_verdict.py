"""Whether the load generator, not the target, bounded a measurement: then the gate says so (exit 3).

A client that sends late reports its own delay as the server's latency. When the burst's start
spread breaches its threshold, or the open model's sends lag their schedule beyond a bound, the
speed rows are not judged and the gate could not measure, naming the cause and the fix.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from sync_ci.gates import histogram, verdict
from sync_ci.gates.outcome import BURST, PhaseOutcome
from sync_ci.gates.thresholds import Threshold
from sync_ci.report import Report, Result

# The open model's p95 send lag (actual minus intended send time) above which its latencies
# measure the client: a tenth of a second is more than any scheduler hiccup and well below the
# seconds of a real latency breach.
SEND_LAG_LIMIT_MS = 100.0
FIX = (
    "spread the client over more processes (--processes N, one per core), over Locust workers "
    "(--engine locust) or over several machines (--merge)"
)
ROW_ID = "load.generator"
SPEED_ROWS = ("p95_ms", "start_spread_ms")


def generator_limit(outcome: PhaseOutcome, thresholds: Mapping[str, Threshold]) -> str:
    """Return why the client, not the target, bounded a phase ('' when it kept up)."""
    busy = f"client CPU {outcome.cpu_s:.2f} s over {outcome.wall_s:.2f} s"
    if outcome.phase == BURST:
        limit = thresholds["load.start_spread_ms"]
        spread = outcome.start_spread_ms
        if limit.passes(spread):
            return ""
        return (
            f"the load generator was the bottleneck: its {outcome.processes} process(es) took "
            f"{spread:.0f} ms to send the burst (start spread {limit.describe()}; {busy})"
        )
    if not outcome.lag:
        return ""
    lag = histogram.summarize(histogram.decode(outcome.lag))
    if not lag.count or lag.p95_ms <= SEND_LAG_LIMIT_MS:
        return ""
    return (
        f"the load generator was the bottleneck: it sent the open model's requests "
        f"{lag.p95_ms:.0f} ms (p95) after their intended time (bound {SEND_LAG_LIMIT_MS:g} ms); "
        f"the highest rate it offered on this machine was {outcome.sent_rate:.0f}/s of the "
        f"{outcome.rate:g}/s asked ({busy})"
    )


def _not_judged(row: Result) -> Result:
    if row.id.endswith(SPEED_ROWS):
        return replace(
            row,
            status="skip",
            detail=f"not judged (the client was the bottleneck): {row.detail}",
        )
    return row


def judge_generator(
    report: Report,
    phases: Sequence[PhaseOutcome],
    thresholds: Mapping[str, Threshold],
    started: float,
) -> Report:
    """Return the load report, or, when the client bounded a phase, the same with its speed rows
    not judged: unmeasured (exit 3), unless the target failed a count row all the same (a 5xx, an
    error or a missing answer is the target's whatever the client's speed: exit 1)."""
    causes = [why for why in (generator_limit(p, thresholds) for p in phases) if why]
    if not causes:
        return report
    why = f"{causes[0]}; fix: {FIX}"
    rows = tuple(_not_judged(r) for r in report.results)
    if any(r.status in ("fail", "error") for r in rows):
        skipped = Result(
            id=ROW_ID,
            title="the load generator kept up (speed rows not judged: it did not)",
            status="skip",
            detail=f"speed not judged: {why}",
            observed={"causes": causes, "send_lag_limit_ms": SEND_LAG_LIMIT_MS},
        )
        return replace(
            report, results=(skipped, *rows), extra={**report.extra, "generator_bound": causes}
        )
    shell = verdict.unmeasured(report.suite, report.target, report.sha, started, "load", why)
    row = Result(
        id=ROW_ID,
        title="the load generator kept up (it, not the target, was measured otherwise)",
        status="error",
        detail=f"could not measure: {why}",
        observed={"causes": causes, "send_lag_limit_ms": SEND_LAG_LIMIT_MS},
    )
    extra = {**report.extra, **shell.extra, "generator_bound": causes}
    return replace(
        shell,
        mode=report.mode,
        duration_s=max(report.duration_s, time.monotonic() - started),
        results=(row, *rows),
        extra=extra,
    )
