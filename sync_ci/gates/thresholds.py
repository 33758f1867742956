"""The one canonical table of gate thresholds; command-line flags may only tighten it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from sync_ci.assignments import parse_assignments
from sync_ci.errors import UsageError

if TYPE_CHECKING:
    from sync_ci.report import Result

# below: pass iff observed < limit (so "observed == limit" fails);
# at_most: pass iff observed <= limit; at_least: pass iff observed >= limit.
Kind = Literal["below", "at_most", "at_least"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Threshold:
    """One limit a gate enforces."""

    id: str
    title: str
    kind: Kind
    limit: float
    unit: str

    def passes(self, observed: float) -> bool:
        """Return True when `observed` satisfies the limit (strictly, for `below`)."""
        if self.kind == "below":
            return observed < self.limit
        if self.kind == "at_most":
            return observed <= self.limit
        return observed >= self.limit

    def describe(self) -> str:
        """Render as e.g. '< 2000 ms'."""
        sign = {"below": "<", "at_most": "<=", "at_least": ">="}[self.kind]
        return f"{sign} {self.limit:g} {self.unit}".rstrip()

    def to_json(self) -> dict[str, object]:
        """Render for a result row's `threshold` field."""
        return {"id": self.id, "kind": self.kind, "limit": self.limit, "unit": self.unit}

    def check(
        self, value: float, *, result_id: str, title: str, detail: str, observed: Mapping[str, Any]
    ) -> Result:
        """Return the result row for `value`: failing rows name the threshold they breached."""
        from sync_ci.report import Result

        passed = self.passes(value)
        return Result(
            id=result_id,
            title=title,
            status="pass" if passed else "fail",
            detail=detail if passed else f"breached {self.id} {self.describe()}: {detail}",
            observed=observed,
            threshold=self.to_json(),
        )

    def is_tighter_or_equal(self, limit: float) -> bool:
        """True when replacing this limit with `limit` makes the gate no easier to pass."""
        return limit <= self.limit if self.kind in ("below", "at_most") else limit >= self.limit


CANONICAL: tuple[Threshold, ...] = (
    Threshold(id="load.install.p95_ms", title="install p95", kind="below", limit=2000, unit="ms"),
    Threshold(id="load.push.p95_ms", title="push p95", kind="below", limit=5000, unit="ms"),
    Threshold(id="load.5xx", title="5xx answers", kind="at_most", limit=0, unit=""),
    Threshold(
        id="load.errors", title="4xx, network and other errors", kind="at_most", limit=0, unit=""
    ),
    Threshold(id="load.missing", title="missing samples", kind="at_most", limit=0, unit=""),
    # A burst spread over seconds is not 1,100 concurrent requests; passing it would soften the gate.
    Threshold(
        id="load.start_spread_ms", title="burst start spread", kind="below", limit=1000, unit="ms"
    ),
    Threshold(id="latency.region.p95_ms", title="region p95", kind="below", limit=500, unit="ms"),
    Threshold(id="latency.region.p99_ms", title="region p99", kind="below", limit=1500, unit="ms"),
    Threshold(id="latency.region.errors", title="region errors", kind="at_most", limit=0, unit=""),
    Threshold(
        id="latency.region.other_colo_fraction",
        title="answered by another colo",
        kind="at_most",
        limit=0.05,
        unit="",
    ),
    Threshold(id="latency.regions", title="regions measured", kind="at_least", limit=5, unit=""),
)

# The scenario's sizes are part of the gate: they may be raised, never lowered.
MIN_COUNTS: Mapping[str, int] = {"installs": 1000, "pushes": 100, "samples": 200}


def canonical() -> dict[str, Threshold]:
    """Return the canonical table keyed by id."""
    return {t.id: t for t in CANONICAL}


def parse_overrides(items: Iterable[str]) -> dict[str, float]:
    """Parse `ID=VALUE` strings from `--threshold`."""
    table = canonical()
    overrides: dict[str, float] = {}
    pairs = parse_assignments(
        items, "--threshold", form="ID=VALUE", example="load.install.p95_ms=1500"
    )
    for name, raw in pairs.items():
        item = f"{name}={raw}"
        if name not in table:
            raise UsageError(f"--threshold {item!r}: ID must be one of {', '.join(sorted(table))}")
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"--threshold {item!r}: {raw!r} is not a number") from None
        # Every limit is a latency, a count or a fraction: a negative or infinite one is a typo.
        if not math.isfinite(value) or value < 0:
            raise UsageError(
                f"--threshold {item!r}: VALUE must be a finite number of at least 0 "
                f"({name} is {table[name].describe()})"
            )
        overrides[name] = value
    return overrides


def resolve(overrides: Mapping[str, float] | None = None) -> dict[str, Threshold]:
    """Return the canonical table with `overrides` applied; refuse any that loosens a limit."""
    table = canonical()
    for name, limit in (overrides or {}).items():
        if name not in table:
            raise UsageError(f"unknown threshold {name!r}; known: {', '.join(sorted(table))}")
        base = table[name]
        if not base.is_tighter_or_equal(limit):
            raise UsageError(
                f"threshold {name} {base.describe()} cannot be loosened to {limit:g}: "
                "gates are gates; flags may only tighten them"
            )
        table[name] = replace(base, limit=limit)
    return table


def check_count(name: str, value: int) -> int:
    """Return `value` if it is at least the scenario's canonical size, else raise UsageError."""
    floor = MIN_COUNTS[name]
    if value < floor:
        raise UsageError(
            f"--{name} {value} is below the gate's {floor}; the scenario may be enlarged, never shrunk"
        )
    return value
