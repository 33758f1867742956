"""Each gate's run, written once for every engine: check, plan, preflight, measure, judge.

An engine only sends the requests (the built-in one in this process, the Locust one through a
master and its workers); everything before and after is the same code for both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sync_ci.assignments import parse_assignments
from sync_ci.config import Settings
from sync_ci.errors import ContractError, SettingsError, UsageError
from sync_ci.gates import verdict
from sync_ci.gates.burst_verdict import judge_generator
from sync_ci.gates.scenario import INSTALL, PUSH, LatencyScenario
from sync_ci.report import Report

if TYPE_CHECKING:
    from sync_ci.gates.load import LoadJob, ProgressFn
    from sync_ci.gates.options import LatencyOptions, LoadOptions
    from sync_ci.gates.outcome import PhaseOutcome, RegionOutcome

# What an engine adds to the result document's `extra` about how it measured.
EngineFacts = dict[str, Any]


class Engine(Protocol):
    """Sends a planned gate's requests and returns exact outcomes (and facts about itself)."""

    def measure_load(
        self, job: LoadJob, progress: ProgressFn | None
    ) -> tuple[list[PhaseOutcome], EngineFacts]:
        """Run the burst (and the open-model phase, if the job has a rate)."""
        ...

    def measure_latency(
        self,
        settings: Settings,
        scenario: LatencyScenario,
        timeout_s: float,
        progress: ProgressFn | None,
    ) -> tuple[dict[str, RegionOutcome], EngineFacts]:
        """Probe every region the settings name."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BuiltinEngine:
    """aiohttp in this process, or the burst spread over `processes` client processes."""

    processes: int = 1

    def measure_load(
        self, job: LoadJob, progress: ProgressFn | None
    ) -> tuple[list[PhaseOutcome], EngineFacts]:
        """Run the job's phases here (or in `processes` children) and merge them exactly."""
        from sync_ci.gates.load import run_load

        return run_load(job, processes=self.processes, progress=progress), {}

    def measure_latency(
        self,
        settings: Settings,
        scenario: LatencyScenario,
        timeout_s: float,
        progress: ProgressFn | None,
    ) -> tuple[dict[str, RegionOutcome], EngineFacts]:
        """Probe every region at once from this process."""
        from sync_ci.gates.latency import measure_latency

        regions = measure_latency(
            settings.regions, scenario, timeout_s=timeout_s, progress=progress
        )
        return regions, {}


def worker_base_url(settings: Settings) -> str:
    """Return the Worker the gates drive (the one rule of `sync_ci.target`)."""
    from sync_ci.target import worker_url

    return worker_url(settings)


def _progress(quiet: bool) -> ProgressFn | None:
    from sync_ci.gates.load import tty_progress

    return None if quiet else tty_progress()


def _end_progress(progress: ProgressFn | None) -> None:
    if progress is not None:
        progress("")


def confirm_writes_land(settings: Settings, job: LoadJob) -> None:
    """Push once and read it back from the bucket under the CI prefix before the burst writes."""
    from sync_ci import guards
    from sync_ci.gates import load
    from sync_ci.store import endpoint_from_settings, open_store

    if job.policy.read_only:
        return
    store = open_store(endpoint_from_settings(settings), guards.read_only_policy())
    load.confirm_first_push(
        job.scenario,
        settings.secrets.tenant_secret,
        job.base_url,
        policy=job.policy,
        read_back=store.get,
        timeout_s=job.timeout_s,
    )


def run_load_gate(settings: Settings, options: LoadOptions, engine: Engine) -> Report:
    """Run the load gate against attached settings on `engine` and judge it."""
    from sync_ci.gates import load
    from sync_ci.gates.http import policy_for

    started = time.monotonic()
    scenario = options.scenario
    if settings.read_only:
        raise UsageError(
            f"the load gate pushes, so it cannot run on target {settings.target} (read-only); "
            "use --target sandbox or ci"
        )
    base_url = worker_base_url(settings)
    job = load.plan_job(  # refuses, before anything is sent, what the policy forbids
        scenario,
        base_url,
        settings.secrets.tenant_secret,
        policy=policy_for(settings),
        timeout_s=options.timeout_s,
        rate=options.rate,
        duration_s=options.duration_s,
    )
    problem = asyncio.run(load.preflight(base_url))
    if problem:
        return verdict.unmeasured(
            "gate.load", settings.target, settings.sha, started, "load", problem
        )
    confirm_writes_land(settings, job)
    progress = _progress(options.quiet)
    try:
        phases, facts = engine.measure_load(job, progress)
    finally:
        _end_progress(progress)
    report = verdict.load_report(
        phases,
        options.thresholds,
        scenario,
        target=settings.target,
        sha=settings.sha,
        duration_s=time.monotonic() - started,
        engine=facts,
    )
    return judge_generator(report, phases, options.thresholds, started)


def run_latency_gate(settings: Settings, options: LatencyOptions, engine: Engine) -> Report:
    """Probe every configured region on `engine` and judge it."""
    started = time.monotonic()
    if not settings.regions:
        raise SettingsError(
            "no regions to probe: add [[regions]] tables (name, url, colo, optional proxy) to sync-ci.toml"
        )
    progress = _progress(options.quiet)
    try:
        regions, facts = engine.measure_latency(
            settings, options.scenario, options.timeout_s, progress
        )
    finally:
        _end_progress(progress)
    return verdict.latency_report(
        regions,
        options.thresholds,
        options.scenario,
        target=settings.target,
        sha=settings.sha,
        duration_s=time.monotonic() - started,
        engine=facts,
    )


# --- judging results from several machines ------------------------------------------------------


def _read_documents(paths: Sequence[str], gate: str) -> list[Report]:
    from sync_ci.report_json import read_json

    if len(paths) < 1:
        raise UsageError("--merge needs at least one result file")
    reports = []
    for path in paths:
        try:
            report = read_json(path)
        except ContractError as exc:
            raise UsageError(f"--merge: {exc}") from None
        if report.extra.get("gate") != gate:
            raise UsageError(
                f"{path} is not a {gate} gate result (extra.gate is {report.extra.get('gate')!r})"
            )
        reports.append(report)
    return reports


def merge_load(paths: Sequence[str], options: LoadOptions) -> Report:
    """Combine load results from several machines exactly, then judge the whole."""
    from sync_ci.gates.outcome import PhaseOutcome, merge_phase

    started = time.monotonic()
    scenario = options.scenario
    reports = _read_documents(paths, "load")
    if any(r.unmeasured for r in reports):
        bad = [p for p, r in zip(paths, reports, strict=True) if r.unmeasured]
        return verdict.unmeasured(
            "gate.load", "merged", reports[0].sha, started, "load", f"{bad[0]} measured nothing"
        )
    by_phase: dict[str, list[PhaseOutcome]] = {}
    for report in reports:
        phases = report.extra.get("phases")
        if not isinstance(phases, dict) or "burst" not in phases:
            raise UsageError("a load result without a burst phase cannot be merged")
        for name, document in phases.items():
            by_phase.setdefault(name, []).append(PhaseOutcome.from_json(document))
    merged = [merge_phase(parts, same_clock=False) for _, parts in sorted(by_phase.items())]
    report = verdict.load_report(
        merged,
        options.thresholds,
        scenario,
        target="+".join(sorted({r.target for r in reports})),
        sha=reports[0].sha,
        duration_s=time.monotonic() - started,
        required={INSTALL: scenario.installs, PUSH: scenario.pushes},
        merged_from=paths,
        started_at=min(r.started_at for r in reports),
    )
    return judge_generator(report, merged, options.thresholds, started)


def merge_latency(paths: Sequence[str], options: LatencyOptions) -> Report:
    """Combine probe results from several machines (e.g. one per region) and judge the whole."""
    from sync_ci.gates.outcome import RegionOutcome, merge_regions

    started = time.monotonic()
    reports = _read_documents(paths, "latency")
    parts: list[RegionOutcome] = []
    for path, report in zip(paths, reports, strict=True):
        regions = report.extra.get("regions")
        if not isinstance(regions, dict):
            raise UsageError(f"{path} has no regions to merge")
        parts.extend(RegionOutcome.from_json(doc) for doc in regions.values())
    return verdict.latency_report(
        merge_regions(parts),
        options.thresholds,
        options.scenario,
        target="+".join(sorted({r.target for r in reports})),
        sha=reports[0].sha,
        duration_s=time.monotonic() - started,
        merged_from=paths,
        started_at=min(r.started_at for r in reports),
    )


def run_platforms_gate(
    casts: str,
    cast: Sequence[str],
    launch_version: str | None,
    *,
    target: str = "-",
    sha: str = "",
) -> Report:
    """Judge the three platform recordings against the version being launched."""
    from sync_ci import __version__
    from sync_ci.gates.platforms import check_platforms, recording_paths, unmeasured

    started = time.monotonic()
    version = launch_version or __version__
    pairs = parse_assignments(cast, "--cast", form="PLATFORM=PATH", example="wsl2=casts/wsl.cast")
    explicit = {name.lower(): path for name, path in pairs.items()}
    paths: Mapping[str, Path] = recording_paths(Path(casts), explicit)
    results = check_platforms(paths, version)
    return verdict.platforms_report(
        results,
        {
            "version": version,
            "recordings": {k: str(v) for k, v in paths.items()},
        },
        target=target,
        sha=sha,
        duration_s=time.monotonic() - started,
        unmeasured=unmeasured(results),
    )
