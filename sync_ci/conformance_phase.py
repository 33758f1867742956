"""The write smoke's conformance phase, judged: a conformance report folded into one smoke row
(status, detail and values), the seed derived from the commit, and the command that replays it.

Pure functions of the report; the phase's run itself is `sync_ci.conformance.run_smoke_phase`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sync_ci.report import Report, Status

SMOKE_FINDINGS_SHOWN = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseVerdict:
    """What the smoke's conformance phase concluded: its status, detail line and values."""

    status: Status
    detail: str
    observed: dict[str, Any] = field(default_factory=dict)


def smoke_seed(sha: str) -> int:
    """The seed of a smoke's conformance phase: derived from the commit, so a re-run replays it."""
    digest = hashlib.sha256(f"sync-ci smoke conformance {sha}".encode()).hexdigest()
    return int(digest[:8], 16)


def rerun_command(target: str, seed: int, max_examples: int) -> str:
    """The command that sends a run's cases again."""
    return f"sync-ci conformance --target {target} --seed {seed} --max-examples {max_examples}"


def summarize_notes(notes: list[str]) -> str:
    """Why some cases were not sent, each reason once with the operations it cut."""
    by_reason: dict[str, list[str]] = {}
    for note in notes:
        where, _, reason = note.partition(": ")
        by_reason.setdefault(reason, []).append(where)
    return "; ".join(f"{reason} ({', '.join(where)})" for reason, where in by_reason.items())


def summarize_phase(report: Report, *, shown: int = SMOKE_FINDINGS_SHOWN) -> PhaseVerdict:
    """Fold a conformance report into one smoke row: its findings, each with its request."""
    seed = int(report.extra["seed"])
    cases = int(report.extra["cases"])
    rerun = rerun_command(report.target, seed, int(report.extra["max_examples"]))
    notes = [str(n) for n in report.extra.get("notes", [])]
    findings = [r for r in report.failing() if "check" in r.observed]
    observed = {"seed": seed, "cases": cases, "findings": len(findings), "notes": notes}
    if report.unmeasured:
        return PhaseVerdict(
            status="skip",
            detail=f"seed {seed}: the phase's budget was spent before any case was sent; "
            f"rerun: {rerun}",
            observed=observed,
        )
    if findings:
        parts = [
            f"{r.observed['check']} on {r.observed['operation']}: {r.detail}"
            for r in findings[:shown]
        ]
        more = f"; {len(findings) - shown} more" if len(findings) > shown else ""
        return PhaseVerdict(
            status="fail",
            detail=f"seed {seed}, {cases} generated cases, {len(findings)} finding(s): "
            + "; ".join(parts)
            + f"{more}; rerun: {rerun}",
            observed=observed,
        )
    cut = f"; not sent: {summarize_notes(notes)}" if notes else ""
    return PhaseVerdict(
        status="pass",
        detail=f"seed {seed}: {cases} generated cases, every answer conforms{cut}; rerun: {rerun}",
        observed=observed,
    )
