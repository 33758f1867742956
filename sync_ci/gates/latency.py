"""The latency gate: cold-KV probes of never-used keys in every region, colo-checked, exact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sync_ci.config import Region
from sync_ci.contract import colo_from_ray
from sync_ci.errors import UsageError
from sync_ci.gates import histogram
from sync_ci.gates.http import GuardedSession, new_session, read_only_policy
from sync_ci.gates.scenario import LatencyScenario, probe_nonces, probe_path
from sync_ci.gates.thresholds import Threshold
from sync_ci.report import Result

if TYPE_CHECKING:
    from sync_ci.gates.load import ProgressFn

PROBE_TIMEOUT_S = 30.0
NO_COLO = "none"


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
        return {
            "name": self.name,
            "colo": self.colo,
            "planned": self.planned,
            "ok": self.ok,
            "status_5xx": self.status_5xx,
            "status_4xx": self.status_4xx,
            "network": self.network,
            "warm": self.warm,
            "other_colos": dict(self.other_colos),
            "histogram": self.histogram,
            "first_error": self.first_error,
            "unreachable": self.unreachable,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RegionOutcome:
        """Parse what `to_json` wrote."""
        try:
            return cls(
                name=str(data["name"]),
                colo=str(data["colo"]),
                planned=int(data["planned"]),
                ok=int(data["ok"]),
                status_5xx=int(data["status_5xx"]),
                status_4xx=int(data["status_4xx"]),
                network=int(data["network"]),
                warm=int(data.get("warm", 0)),
                other_colos={str(k): int(v) for k, v in dict(data.get("other_colos", {})).items()},
                histogram=str(data["histogram"]),
                first_error=str(data.get("first_error", "")),
                unreachable=str(data.get("unreachable", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"latency result has a malformed region record ({exc})") from None


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
            planned=sum(g.planned for g in group),
            ok=sum(g.ok for g in group),
            status_5xx=sum(g.status_5xx for g in group),
            status_4xx=sum(g.status_4xx for g in group),
            network=sum(g.network for g in group),
            warm=sum(g.warm for g in group),
            other_colos=others,
            histogram=histogram.merge_encoded(encoded) if encoded else "",
            first_error=next((g.first_error for g in group if g.first_error), ""),
            unreachable="" if measured else group[0].unreachable,
        )
    return merged


# --- pure evaluation ----------------------------------------------------------------------------


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


# --- the probe (edge) ----------------------------------------------------------------------------


async def _health(session: GuardedSession, region: Region) -> str:
    import aiohttp

    try:
        async with session.get(
            f"{region.url}/_health", proxy=region.proxy or None, allow_redirects=False
        ) as response:
            await response.read()
            return ""
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return f"{region.url}: {type(exc).__name__}: {str(exc)[:160]}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())[:24] or "region"


async def probe_region(
    session: GuardedSession,
    region: Region,
    scenario: LatencyScenario,
    progress: ProgressFn | None = None,
) -> RegionOutcome:
    """Probe one region: every sample a never-used key, at most `concurrency` in flight."""
    import aiohttp

    unreachable = await _health(session, region)
    if unreachable:
        return RegionOutcome(
            name=region.name, colo=region.colo, planned=scenario.samples, unreachable=unreachable
        )
    hist = histogram.new()
    counts = dict.fromkeys(("ok", "status_5xx", "status_4xx", "network", "warm"), 0)
    others: dict[str, int] = {}
    first_error: list[str] = []
    limiter = asyncio.Semaphore(scenario.concurrency)
    expected = region.colo.upper()

    async def sample(nonce: str) -> None:
        async with limiter:
            started = time.perf_counter_ns()
            try:
                async with session.get(
                    f"{region.url}{probe_path(nonce)}",
                    proxy=region.proxy or None,
                    allow_redirects=False,
                ) as response:
                    await response.read()
                    elapsed = time.perf_counter_ns() - started
                    status = response.status
                    colo = colo_from_ray(response.headers.get("cf-ray", "")) or NO_COLO
                    cache = response.headers.get("x-cache", "").lower()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                counts["network"] += 1
                first_error.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                return
        if status >= 300:
            counts["status_5xx" if status >= 500 else "status_4xx"] += 1
            first_error.append(f"probe answered {status}")
        elif colo != expected:
            others[colo] = others.get(colo, 0) + 1
        elif cache == "hit":
            counts["warm"] += 1
            first_error.append("a never-used key was answered from a warm cache")
        else:
            counts["ok"] += 1
            histogram.record_us(hist, elapsed // 1000)
        if progress:
            done = sum(counts.values()) + sum(others.values())
            progress(f"latency {region.name}: {done}/{scenario.samples}")

    await asyncio.gather(*(sample(n) for n in probe_nonces(_slug(region.name), scenario.samples)))
    return RegionOutcome(
        name=region.name,
        colo=expected,
        planned=scenario.samples,
        other_colos=others,
        histogram=histogram.encode(hist),
        first_error=first_error[0] if first_error else "",
        ok=counts["ok"],
        status_5xx=counts["status_5xx"],
        status_4xx=counts["status_4xx"],
        network=counts["network"],
        warm=counts["warm"],
    )


async def probe_regions(
    regions: Sequence[Region],
    scenario: LatencyScenario,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    progress: ProgressFn | None = None,
) -> dict[str, RegionOutcome]:
    """Probe every region at once (each at bounded concurrency) on one session."""
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise UsageError(f"region names must be unique: {names}")
    async with new_session(read_only_policy(), timeout_s) as session:
        outcomes = await asyncio.gather(
            *(probe_region(session, r, scenario, progress) for r in regions)
        )
    return {o.name: o for o in outcomes}


def measure_latency(
    regions: Sequence[Region],
    scenario: LatencyScenario,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    progress: ProgressFn | None = None,
) -> dict[str, RegionOutcome]:
    """Run the probes to completion."""
    if scenario.samples < 1 or scenario.concurrency < 1:
        raise UsageError("--samples and --concurrency must be at least 1")
    return asyncio.run(probe_regions(regions, scenario, timeout_s=timeout_s, progress=progress))
