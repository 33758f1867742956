"""The latency gate: cold-KV probes of never-used keys in every region, colo-checked, exact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sync_ci.config import Region
from sync_ci.contract import colo_from_ray
from sync_ci.errors import UsageError
from sync_ci.gates.http import GuardedSession, new_session, read_only_policy
from sync_ci.gates.outcome import NO_COLO, RegionOutcome, RegionTally
from sync_ci.gates.scenario import LatencyScenario, probe_nonces, probe_path

if TYPE_CHECKING:
    from sync_ci.gates.load import ProgressFn

PROBE_TIMEOUT_S = 30.0


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
    tally = RegionTally(region.name, region.colo, scenario.samples)
    limiter = asyncio.Semaphore(scenario.concurrency)

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
                tally.record(0, 0, "", "", f"{type(exc).__name__}: {str(exc)[:120]}")
                return
        tally.record(status, elapsed, colo, cache, "")
        if progress:
            progress(f"latency {region.name}: {tally.answered}/{scenario.samples}")

    await asyncio.gather(*(sample(n) for n in probe_nonces(region.name, scenario.samples)))
    return tally.outcome()


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
