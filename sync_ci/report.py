"""The one result model (`sync-ci/result@1`) and every renderer of it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """A whole suite's outcome."""

    suite: str
    target: str
    mode: str
    sha: str
    started_at: str
    duration_s: float
    results: tuple[Result, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Count results by status."""
        counts = dict.fromkeys(STATUSES, 0)
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
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 6),
            "ok": self.ok,
            "counts": self.counts,
            "results": [r.to_json() for r in self.results],
        }
        if self.extra:
            document["extra"] = dict(self.extra)
        return document


def make_report(
    *,
    suite: str,
    target: str,
    mode: str,
    sha: str,
    started_at: str,
    duration_s: float,
    results: Iterable[Result],
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
        extra=dict(extra or {}),
    )
