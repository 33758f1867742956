"""What the gates measured, as exact, mergeable values, and the tallies that fill them.

Both engines (the built-in one and the Locust workers) count into these same tallies, so a
request or a probe is classified in one place whichever engine sent it. Just over 400 lines:
each value is a dataclass with its JSON form and its exact merge, for both gates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from sync_ci.errors import UsageError
from sync_ci.gates import histogram
from sync_ci.gates.scenario import FULL_CHECK_EVERY, PlannedRequest, answer_problem

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

BURST = "burst"
OPEN = "open"
NO_COLO = "none"
# The counters both gates keep, whatever they send: required in every stored record.
COUNTERS = ("planned", "ok", "status_5xx", "status_4xx", "network")


def _record(value: Any) -> dict[str, Any]:
    """A counts dataclass as its JSON record (mappings copied), field by field."""
    return {
        f.name: dict(v) if isinstance(v := getattr(value, f.name), Mapping) else v
        for f in fields(value)
    }


def _parsed(cls: type[Any], data: Mapping[str, Any], required: Sequence[str], what: str) -> Any:
    """Build `cls` from what `_record` wrote: `required` must be there, the rest default."""
    try:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in required and f.name not in data:
                continue
            raw = data[f.name]
            kind = str(f.type)
            if kind == "int":
                values[f.name] = int(raw)
            elif kind == "str":
                values[f.name] = str(raw)
            else:  # a Mapping[str, int]
                values[f.name] = {str(k): int(v) for k, v in dict(raw).items()}
        return cls(**values)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{what} ({exc})") from None


def _sums(parts: Sequence[Any], names: Iterable[str]) -> dict[str, int]:
    """Each counter in `names` summed over `parts`."""
    return {name: sum(getattr(p, name) for p in parts) for name in names}


# --- load ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OpStats:
    """One operation's outcome in one phase; sums and merges exactly."""

    planned: int = 0
    ok: int = 0
    status_5xx: int = 0
    status_4xx: int = 0
    network: int = 0
    other: int = 0
    invalid: int = 0
    histogram: str = ""
    first_error: str = ""

    @property
    def errors(self) -> int:
        """Failures that are not 5xx: 4xx, network errors, wrong answers, unexpected 1xx/3xx."""
        return self.status_4xx + self.network + self.other + self.invalid

    @property
    def missing(self) -> int:
        """Planned requests with no successful sample."""
        return max(self.planned - self.ok, 0)

    def to_json(self) -> dict[str, Any]:
        """Render for the result document's `extra`."""
        return _record(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpStats:
        """Parse what `to_json` wrote."""
        required = (*COUNTERS, "other", "histogram")
        parsed: OpStats = _parsed(
            cls, data, required, "load result has a malformed operation record"
        )
        return parsed


def merge_ops(parts: Iterable[OpStats]) -> OpStats:
    """Sum counts and merge histograms."""
    parts = list(parts)
    encoded = [p.histogram for p in parts if p.histogram]
    return OpStats(
        **_sums(parts, (*COUNTERS, "other", "invalid")),
        histogram=histogram.merge_encoded(encoded)
        if encoded
        else histogram.encode(histogram.new()),
        first_error=next((p.first_error for p in parts if p.first_error), ""),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseOutcome:
    """One phase (burst or open model) as measured by one or more client processes."""

    phase: str
    ops: Mapping[str, OpStats]
    start_first_ns: int = 0
    start_last_ns: int = 0
    # Spread already combined across machines, whose clocks cannot be compared.
    spread_floor_ms: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    processes: int = 1
    rate: float = 0.0
    duration_s: float = 0.0
    max_lag_ms: float = 0.0
    raw: Mapping[str, str] = field(default_factory=dict)
    # The client's own send lag (actual minus intended send time, us, encoded histogram) and the
    # rate it really sent at: what tells a saturated generator from a slow server.
    lag: str = ""
    sent_rate: float = 0.0

    @property
    def start_spread_ms(self) -> float:
        """Time between the first and the last request leaving the client(s)."""
        return max((self.start_last_ns - self.start_first_ns) / 1e6, self.spread_floor_ms)

    def to_json(self) -> dict[str, Any]:
        """Render for the result document's `extra`."""
        return {
            "phase": self.phase,
            "ops": {name: op.to_json() for name, op in self.ops.items()},
            "start_first_ns": self.start_first_ns,
            "start_last_ns": self.start_last_ns,
            "start_spread_ms": round(self.start_spread_ms, 3),
            "wall_s": round(self.wall_s, 6),
            "cpu_s": round(self.cpu_s, 6),
            "processes": self.processes,
            "rate": self.rate,
            "duration_s": self.duration_s,
            "max_lag_ms": round(self.max_lag_ms, 3),
            "raw": dict(self.raw),
            "lag": self.lag,
            "sent_rate": round(self.sent_rate, 3),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PhaseOutcome:
        """Parse what `to_json` wrote."""
        try:
            return cls(
                phase=str(data["phase"]),
                ops={str(k): OpStats.from_json(v) for k, v in dict(data["ops"]).items()},
                start_first_ns=int(data["start_first_ns"]),
                start_last_ns=int(data["start_last_ns"]),
                spread_floor_ms=float(data.get("start_spread_ms", 0.0)),
                wall_s=float(data.get("wall_s", 0.0)),
                cpu_s=float(data.get("cpu_s", 0.0)),
                processes=int(data.get("processes", 1)),
                rate=float(data.get("rate", 0.0)),
                duration_s=float(data.get("duration_s", 0.0)),
                max_lag_ms=float(data.get("max_lag_ms", 0.0)),
                raw={str(k): str(v) for k, v in dict(data.get("raw", {})).items()},
                lag=str(data.get("lag", "")),
                sent_rate=float(data.get("sent_rate", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"load result has a malformed phase record ({exc})") from None


def merge_phase(parts: Sequence[PhaseOutcome], *, same_clock: bool) -> PhaseOutcome:
    """Combine one phase measured by several processes (same clock) or machines (not)."""
    if not parts:
        raise UsageError("nothing to merge")
    names = sorted({name for p in parts for name in p.ops})
    ops = {name: merge_ops(p.ops[name] for p in parts if name in p.ops) for name in names}
    raw_names = sorted({name for p in parts for name in p.raw})
    raw = {n: histogram.merge_encoded(p.raw[n] for p in parts if n in p.raw) for n in raw_names}
    if same_clock:
        first = min(p.start_first_ns for p in parts)
        last = max(p.start_last_ns for p in parts)
        floor = max(p.spread_floor_ms for p in parts)
    else:
        first = last = 0
        floor = max(p.start_spread_ms for p in parts)
    return PhaseOutcome(
        phase=parts[0].phase,
        ops=ops,
        start_first_ns=first,
        start_last_ns=last,
        spread_floor_ms=floor,
        wall_s=max(p.wall_s for p in parts),
        cpu_s=sum(p.cpu_s for p in parts),
        processes=sum(p.processes for p in parts),
        rate=sum(p.rate for p in parts),
        duration_s=max(p.duration_s for p in parts),
        max_lag_ms=max(p.max_lag_ms for p in parts),
        raw=raw,
        lag=histogram.merge_encoded(p.lag for p in parts if p.lag)
        if any(p.lag for p in parts)
        else "",
        sent_rate=sum(p.sent_rate for p in parts),
    )


class Tally:
    """Mutable per-operation counters and histograms for one process."""

    def __init__(self, planned: Mapping[str, int], root: str = "") -> None:
        self.planned = dict(planned)
        self.root = root
        self.hist: dict[str, HdrHistogram] = {name: histogram.new() for name in planned}
        self.raw: dict[str, HdrHistogram] = {}
        self.counts: dict[str, dict[str, int]] = {
            name: dict.fromkeys(
                ("ok", "status_5xx", "status_4xx", "network", "other", "invalid"), 0
            )
            for name in planned
        }
        self.first_error: dict[str, str] = {}
        self.done = 0
        self.judged = 0

    def judge(self, request: PlannedRequest, status: int, body: bytes) -> str:
        """Return why a 2xx answer is wrong ('' if right): every one by shape, a sample in full."""
        if not 200 <= status < 300:
            return ""
        self.judged += 1
        full = self.judged % FULL_CHECK_EVERY == 1
        return answer_problem(request, status, body, root=self.root, full=full)

    def record(
        self, operation: str, status: int, latency_ns: int, error: str = "", problem: str = ""
    ) -> None:
        counts = self.counts[operation]
        self.done += 1
        if status == 0:
            counts["network"] += 1
            self.first_error.setdefault(operation, error)
            return
        histogram.record_us(self.hist[operation], latency_ns // 1000)
        if 200 <= status < 300:
            if problem:
                counts["invalid"] += 1
                self.first_error.setdefault(operation, f"{operation} {problem}{error}")
            else:
                counts["ok"] += 1
            return
        kind = "status_5xx" if status >= 500 else "status_4xx" if status >= 400 else "other"
        counts[kind] += 1
        self.first_error.setdefault(operation, f"{operation} answered {status}{error}")

    def record_raw(self, operation: str, latency_ns: int) -> None:
        # Not setdefault: its default argument would build a histogram (~1.3 ms) on every call.
        if operation not in self.raw:
            self.raw[operation] = histogram.new()
        histogram.record_us(self.raw[operation], latency_ns // 1000)

    def ops(self) -> dict[str, OpStats]:
        return {
            name: OpStats(
                planned=self.planned[name],
                histogram=histogram.encode(self.hist[name]),
                first_error=self.first_error.get(name, ""),
                **self.counts[name],
            )
            for name in self.planned
        }


# --- latency -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RegionOutcome:
    """One region's probes; sums and merges exactly."""

    name: str
    colo: str
    planned: int = 0
    ok: int = 0
    status_5xx: int = 0
    status_4xx: int = 0
    network: int = 0
    warm: int = 0
    other_colos: Mapping[str, int] = field(default_factory=dict)
    histogram: str = ""
    first_error: str = ""
    unreachable: str = ""

    @property
    def other_colo(self) -> int:
        """Samples answered by a colo other than the expected one (excluded)."""
        return sum(self.other_colos.values())

    @property
    def errors(self) -> int:
        """Failed probes, and probes answered from a warm cache (not a cold read)."""
        return self.status_5xx + self.status_4xx + self.network + self.warm

    def to_json(self) -> dict[str, Any]:
        """Render for the result document's `extra`."""
        return _record(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RegionOutcome:
        """Parse what `to_json` wrote."""
        required = ("name", "colo", *COUNTERS, "histogram")
        parsed: RegionOutcome = _parsed(
            cls, data, required, "latency result has a malformed region record"
        )
        return parsed


def merge_regions(parts: Iterable[RegionOutcome]) -> dict[str, RegionOutcome]:
    """Merge region outcomes by name (one machine per region, or several per region)."""
    grouped: dict[str, list[RegionOutcome]] = {}
    for part in parts:
        grouped.setdefault(part.name, []).append(part)
    merged: dict[str, RegionOutcome] = {}
    for name, group in grouped.items():
        colos = {g.colo for g in group}
        if len(colos) > 1:
            raise UsageError(
                f"region {name} expects different colos in the merged results: {sorted(colos)}"
            )
        others: dict[str, int] = {}
        for g in group:
            for colo, count in g.other_colos.items():
                others[colo] = others.get(colo, 0) + count
        encoded = [g.histogram for g in group if g.histogram]
        measured = [g for g in group if not g.unreachable]
        merged[name] = RegionOutcome(
            name=name,
            colo=group[0].colo,
            **_sums(group, (*COUNTERS, "warm")),
            other_colos=others,
            histogram=histogram.merge_encoded(encoded) if encoded else "",
            first_error=next((g.first_error for g in group if g.first_error), ""),
            unreachable="" if measured else group[0].unreachable,
        )
    return merged


class RegionTally:
    """One region's probes in one process, classified (the one place that decides what a probe shows)."""

    def __init__(self, name: str, colo: str, planned: int) -> None:
        self.name, self.colo, self.planned = name, colo.upper(), planned
        self.hist = histogram.new()
        self.counts = dict.fromkeys(("ok", "status_5xx", "status_4xx", "network", "warm"), 0)
        self.others: dict[str, int] = {}
        self.first_error = ""
        self.unreachable = ""

    def _error(self, text: str) -> None:
        self.first_error = self.first_error or text

    def record(self, status: int, latency_ns: int, colo: str, cache: str, error: str) -> None:
        """Count one probe: status 0 is a network error, else its colo and cache decide."""
        if status == 0:
            self.counts["network"] += 1
            self._error(error)
        elif status >= 300:
            self.counts["status_5xx" if status >= 500 else "status_4xx"] += 1
            self._error(f"probe answered {status}")
        elif colo != self.colo:
            self.others[colo] = self.others.get(colo, 0) + 1
        elif cache == "hit":
            self.counts["warm"] += 1
            self._error("a never-used key was answered from a warm cache")
        else:
            self.counts["ok"] += 1
            histogram.record_us(self.hist, latency_ns // 1000)

    @property
    def answered(self) -> int:
        """Probes recorded so far, whatever they showed."""
        return sum(self.counts.values()) + sum(self.others.values())

    def outcome(self) -> RegionOutcome:
        """Return the region's outcome in this process (merges exactly with the others)."""
        return RegionOutcome(
            name=self.name,
            colo=self.colo,
            planned=self.planned,
            other_colos=dict(self.others),
            histogram=histogram.encode(self.hist),
            first_error=self.first_error,
            unreachable=self.unreachable,
            **self.counts,
        )
