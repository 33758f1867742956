"""The one result model (`sync-ci/result@1`): `Result`, `Report`, and the exit code a report stands for.

Its renderers sit above it: `report_text` (terminal), `report_json`, `report_junit`,
`report_markdown`, `report_github`, and `report_emit` (where a report goes) on top of them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sync_ci import redaction
from sync_ci.clock import utc_stamp
from sync_ci.errors import ExitCode

SCHEMA = "sync-ci/result@1"
Status = Literal["pass", "fail", "skip", "error"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "skip", "error")


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """One row: a phase, a lint finding, a parity cell, a gate threshold."""

    id: str
    title: str
    status: Status
    duration_s: float = 0.0
    detail: str = ""
    observed: Mapping[str, Any] = field(default_factory=dict)
    threshold: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Secrets are masked where text enters the model, so every reader of `to_json()` (doctor's
        # last-doctor.json, alert bodies) is covered, not only the renderers (`report_*`).
        for name in ("id", "title", "detail"):
            object.__setattr__(self, name, redaction.redact(getattr(self, name)))
        object.__setattr__(self, "observed", redact_value(self.observed))
        object.__setattr__(self, "threshold", redact_value(self.threshold))

    def to_json(self) -> dict[str, Any]:
        """Render as the schema's result object."""
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "duration_s": round(self.duration_s, 6),
            "detail": self.detail,
            "observed": dict(self.observed),
            "threshold": dict(self.threshold),
        }


# Facts the Report holds as fields; in the JSON document they travel inside `extra` (the
# documented shape), so `extra` itself may not carry them.
EXTRA_FIELDS = ("unmeasured", "parity")


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """A whole suite's outcome.

    `unmeasured` says the suite could not measure (the target did not answer): exit 3, whatever
    the rows say. `parity` holds the parity-matrix cells (smoke), kept apart from the rows.
    `started_at` is when the run began, held as an aware UTC datetime in whole seconds (a naive
    one is taken to be UTC); every renderer writes it through `clock.utc_stamp`.
    """

    suite: str
    target: str
    mode: str
    sha: str
    started_at: datetime
    duration_s: float
    results: tuple[Result, ...]
    unmeasured: bool = False
    parity: tuple[Result, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.started_at, datetime):
            raise TypeError(f"started_at must be a datetime, not {type(self.started_at).__name__}")
        taken = [name for name in EXTRA_FIELDS if name in self.extra]
        if taken:
            raise ValueError(f"{', '.join(taken)}: a field of Report, not a key of extra")
        # Whole seconds in UTC, as the stamp says: what is held is what every renderer writes.
        at = self.started_at if self.started_at.tzinfo else self.started_at.replace(tzinfo=UTC)
        object.__setattr__(self, "started_at", at.astimezone(UTC).replace(microsecond=0))
        object.__setattr__(self, "extra", redact_value(self.extra))

    @property
    def started_stamp(self) -> str:
        """The start as every renderer writes it (`2026-11-27T06:00:00Z`)."""
        return utc_stamp(self.started_at)

    @property
    def counts(self) -> dict[str, int]:
        """Count results by status."""
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status] += 1
        return counts

    @property
    def ok(self) -> bool:
        """True when nothing failed or errored."""
        counts = self.counts
        return counts["fail"] == 0 and counts["error"] == 0

    def failing(self) -> tuple[Result, ...]:
        """Return the rows that failed or errored."""
        return tuple(r for r in self.results if r.status in ("fail", "error"))

    def to_json(self) -> dict[str, Any]:
        """Render as the `sync-ci/result@1` document."""
        document: dict[str, Any] = {
            "schema": SCHEMA,
            "suite": self.suite,
            "target": self.target,
            "mode": self.mode,
            "sha": self.sha,
            "started_at": self.started_stamp,
            "duration_s": round(self.duration_s, 6),
            "ok": self.ok,
            "counts": self.counts,
            "results": [r.to_json() for r in self.results],
        }
        extra = dict(self.extra)
        if self.parity:
            extra["parity"] = [cell.to_json() for cell in self.parity]
        if self.unmeasured:
            extra["unmeasured"] = True
        if extra:
            document["extra"] = extra
        return document


def redact_value(value: Any) -> Any:
    """Mask registered secrets in every string of a JSON-like value (keys included)."""
    if isinstance(value, str):
        return redaction.redact(value)
    if isinstance(value, Mapping):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(redact_value(v) for v in value)
    return value


def make_report(
    *,
    suite: str,
    target: str,
    mode: str,
    sha: str,
    started_at: datetime,
    duration_s: float,
    results: Iterable[Result],
    unmeasured: bool = False,
    parity: Iterable[Result] = (),
    extra: Mapping[str, Any] | None = None,
) -> Report:
    """Build a Report from any iterable of results."""
    return Report(
        suite=suite,
        target=target,
        mode=mode,
        sha=sha,
        started_at=started_at,
        duration_s=duration_s,
        results=tuple(results),
        unmeasured=unmeasured,
        parity=tuple(parity),
        extra=dict(extra or {}),
    )


def exit_code(report: Report) -> ExitCode:
    """Return the exit code a report stands for: UNMEASURED beats FAILED beats OK."""
    if report.unmeasured:
        return ExitCode.UNMEASURED
    return ExitCode.OK if report.ok else ExitCode.FAILED
