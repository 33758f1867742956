"""`sync-ci gate load|latency|platforms|all|record-cast`: wire settings, target, run and report."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sync_ci.cli import number, parse_assignments
from sync_ci.config import Settings
from sync_ci.errors import ContractError, SettingsError, UnreachableError, UsageError
from sync_ci.gates import thresholds as threshold_table
from sync_ci.gates.scenario import INSTALL, PUSH, LatencyScenario, LoadScenario
from sync_ci.gates.thresholds import MIN_COUNTS, Threshold
from sync_ci.report import Report, Result, make_report

GATES = ("load", "latency", "platforms")
PLATFORMS = ("ubuntu", "macos", "wsl2")
# The load gate pushes, so it cannot run on live (read-only): only these are offered.
WRITE_TARGETS = ("sandbox", "ci")
# Upper ends of the numeric options: far above any real run, low enough to refuse a typo.
MAX_BURST = 100_000
MAX_PROCESSES = 256
MAX_CONCURRENCY = 1_000
MAX_RATE = 100_000.0
MAX_DURATION_S = 86_400.0
NEVER_SHRUNK = "the gate's scenario may be enlarged, never shrunk"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@contextlib.contextmanager
def open_target(args: argparse.Namespace) -> Iterator[Settings]:
    """Load settings and attach to what they target (an ephemeral sandbox by default)."""
    from sync_ci.config import load_settings
    from sync_ci.sandbox.attach import attach

    settings = load_settings(config=args.config, target=args.target)
    faults = parse_assignments(getattr(args, "fault", []) or [], "--fault")
    with attach(settings, faults=faults or None, ci_worker=True) as attached:
        yield attached


def worker_base_url(settings: Settings) -> str:
    """Return the Worker the load gate drives."""
    url = (
        settings.preview_url
        if settings.target == "ci" and settings.preview_url
        else settings.worker_url
    )
    if not url:
        raise SettingsError(
            f"target {settings.target} names no Worker: set [worker] url (or preview_url) in "
            "sync-ci.toml or SYNC_CI_WORKER_URL"
        )
    return url.rstrip("/")


def _unmeasured(
    suite: str, target: str, sha: str, started: float, gate_id: str, why: str
) -> Report:
    return make_report(
        suite=suite,
        target=target,
        mode="gate",
        sha=sha,
        started_at=_now_iso(),
        duration_s=time.monotonic() - started,
        results=[
            Result(
                id=f"{gate_id}.reachable",
                title="the target answered, so something could be measured",
                status="error",
                detail=f"could not measure: {why}",
            )
        ],
        extra={"gate": gate_id, "unmeasured": True, "reason": why},
    )


def _progress(args: argparse.Namespace) -> Any:
    from sync_ci.gates.load import tty_progress

    return None if getattr(args, "quiet", False) else tty_progress()


def _end_progress(progress: Any) -> None:
    if progress is not None:
        progress("")


def _check_timeout(args: argparse.Namespace) -> None:
    if not 0 < args.timeout <= 600:
        raise UsageError(f"--timeout {args.timeout:g} must be between 0 and 600 seconds")


# --- load ---------------------------------------------------------------------------------------


def load_options(args: argparse.Namespace) -> tuple[LoadScenario, dict[str, Threshold]]:
    """Return the scenario and thresholds the flags ask for (only ever stricter than canonical)."""
    scenario = LoadScenario(
        installs=threshold_table.check_count("installs", args.installs),
        pushes=threshold_table.check_count("pushes", args.pushes),
    )
    table = threshold_table.resolve(threshold_table.parse_overrides(args.threshold))
    if (args.rate > 0) != (args.duration > 0):
        raise UsageError("--rate and --duration go together (the open-model phase needs both)")
    if args.processes < 1:
        raise UsageError("--processes must be at least 1")
    _check_timeout(args)
    return scenario, table


def confirm_writes_land(settings: Settings, job: Any, scenario: LoadScenario) -> None:
    """Push once and read it back from the bucket under the CI prefix before the burst writes."""
    from sync_ci import guards
    from sync_ci.gates import load
    from sync_ci.store import endpoint_from_settings, open_store

    if job.policy.read_only:
        return
    store = open_store(endpoint_from_settings(settings), guards.read_only_policy())
    load.confirm_first_push(
        scenario,
        settings.secrets.tenant_secret,
        job.base_url,
        policy=job.policy,
        read_back=store.get,
        timeout_s=job.timeout_s,
    )


def run_load_gate(settings: Settings, args: argparse.Namespace) -> Report:
    """Run the load gate against attached settings and judge it."""
    from sync_ci.gates import load
    from sync_ci.gates.http import policy_for

    started = time.monotonic()
    scenario, table = load_options(args)
    if settings.read_only:
        raise UsageError(
            f"the load gate pushes, so it cannot run on target {settings.target} (read-only); "
            "use --target sandbox or ci"
        )
    base_url = worker_base_url(settings)
    job = load.plan_job(
        scenario,
        base_url,
        settings.secrets.tenant_secret,
        policy=policy_for(settings),
        timeout_s=args.timeout,
        rate=args.rate,
        duration_s=args.duration,
    )
    import asyncio

    problem = asyncio.run(load.preflight(base_url))
    if problem:
        return _unmeasured("gate.load", settings.target, settings.sha, started, "load", problem)
    confirm_writes_land(settings, job, scenario)
    progress = _progress(args)
    try:
        phases = load.run_load(job, processes=args.processes, progress=progress)
    finally:
        _end_progress(progress)
    return load_report(
        phases,
        table,
        scenario,
        target=settings.target,
        sha=settings.sha,
        duration_s=time.monotonic() - started,
    )


def load_report(
    phases: Sequence[Any],
    table: Mapping[str, Threshold],
    scenario: LoadScenario,
    *,
    target: str,
    sha: str,
    duration_s: float,
    required: Mapping[str, int] | None = None,
    merged_from: Sequence[str] = (),
) -> Report:
    """Build the load gate's result document from measured phases."""
    from sync_ci.gates.load import evaluate_phase

    rows = [row for phase in phases for row in evaluate_phase(phase, table, required)]
    extra: dict[str, Any] = {
        "gate": "load",
        "scenario": scenario.to_json(),
        "phases": {phase.phase: phase.to_json() for phase in phases},
        "thresholds": {t.id: t.to_json() for t in table.values() if t.id.startswith("load.")},
    }
    if merged_from:
        extra["merged_from"] = list(merged_from)
    return make_report(
        suite="gate.load",
        target=target,
        mode="+".join(p.phase for p in phases),
        sha=sha,
        started_at=_now_iso(),
        duration_s=duration_s,
        results=rows,
        extra=extra,
    )


def _read_documents(paths: Sequence[str], gate: str) -> list[Report]:
    from sync_ci.report import read_json

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


def merge_load(args: argparse.Namespace) -> Report:
    """Combine load results from several machines exactly, then judge the whole."""
    from sync_ci.gates.load import PhaseOutcome, merge_phase

    started = time.monotonic()
    scenario, table = load_options(args)
    reports = _read_documents(args.merge, "load")
    if any(r.extra.get("unmeasured") for r in reports):
        bad = [p for p, r in zip(args.merge, reports, strict=True) if r.extra.get("unmeasured")]
        return _unmeasured(
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
    return load_report(
        merged,
        table,
        scenario,
        target="+".join(sorted({r.target for r in reports})),
        sha=reports[0].sha,
        duration_s=time.monotonic() - started,
        required={INSTALL: scenario.installs, PUSH: scenario.pushes},
        merged_from=args.merge,
    )


# --- latency ------------------------------------------------------------------------------------


def latency_options(args: argparse.Namespace) -> tuple[LatencyScenario, dict[str, Threshold]]:
    """Return the probe scenario and thresholds the flags ask for."""
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    _check_timeout(args)
    scenario = LatencyScenario(
        samples=threshold_table.check_count("samples", args.samples), concurrency=args.concurrency
    )
    return scenario, threshold_table.resolve(threshold_table.parse_overrides(args.threshold))


def latency_report(
    regions: Mapping[str, Any],
    table: Mapping[str, Threshold],
    scenario: LatencyScenario,
    *,
    target: str,
    sha: str,
    duration_s: float,
    merged_from: Sequence[str] = (),
) -> Report:
    """Build the latency gate's result document."""
    from sync_ci.gates.latency import evaluate_latency

    extra: dict[str, Any] = {
        "gate": "latency",
        "scenario": scenario.to_json(),
        "regions": {name: outcome.to_json() for name, outcome in regions.items()},
        "thresholds": {t.id: t.to_json() for t in table.values() if t.id.startswith("latency.")},
    }
    if regions and all(o.unreachable for o in regions.values()):
        extra["unmeasured"] = True
    if merged_from:
        extra["merged_from"] = list(merged_from)
    return make_report(
        suite="gate.latency",
        target=target,
        mode="cold-kv",
        sha=sha,
        started_at=_now_iso(),
        duration_s=duration_s,
        results=evaluate_latency(regions, table),
        extra=extra,
    )


def run_latency_gate(settings: Settings, args: argparse.Namespace) -> Report:
    """Probe every configured region and judge it."""
    from sync_ci.gates.latency import measure_latency

    started = time.monotonic()
    scenario, table = latency_options(args)
    if not settings.regions:
        raise SettingsError(
            "no regions to probe: add [[regions]] tables (name, url, colo, optional proxy) to sync-ci.toml"
        )
    progress = _progress(args)
    try:
        regions = measure_latency(
            settings.regions, scenario, timeout_s=args.timeout, progress=progress
        )
    finally:
        _end_progress(progress)
    return latency_report(
        regions,
        table,
        scenario,
        target=settings.target,
        sha=settings.sha,
        duration_s=time.monotonic() - started,
    )


def merge_latency(args: argparse.Namespace) -> Report:
    """Combine probe results from several machines (e.g. one per region) and judge the whole."""
    from sync_ci.gates.latency import RegionOutcome, merge_regions

    started = time.monotonic()
    scenario, table = latency_options(args)
    reports = _read_documents(args.merge, "latency")
    parts: list[RegionOutcome] = []
    for path, report in zip(args.merge, reports, strict=True):
        regions = report.extra.get("regions")
        if not isinstance(regions, dict):
            raise UsageError(f"{path} has no regions to merge")
        parts.extend(RegionOutcome.from_json(doc) for doc in regions.values())
    return latency_report(
        merge_regions(parts),
        table,
        scenario,
        target="+".join(sorted({r.target for r in reports})),
        sha=reports[0].sha,
        duration_s=time.monotonic() - started,
        merged_from=args.merge,
    )


# --- platforms ----------------------------------------------------------------------------------


def run_platforms_gate(args: argparse.Namespace, *, target: str = "-", sha: str = "") -> Report:
    """Judge the three platform recordings against the version being launched."""
    from sync_ci import __version__
    from sync_ci.gates.platforms import check_platforms, recording_paths, unmeasured

    started = time.monotonic()
    version = args.launch_version or __version__
    explicit: dict[str, str] = {}
    for item in args.cast:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--cast {item!r}: expected PLATFORM=PATH")
        explicit[name.strip().lower()] = path
    paths = recording_paths(Path(args.casts), explicit)
    results = check_platforms(paths, version)
    return make_report(
        suite="gate.platforms",
        target=target,
        mode="recordings",
        sha=sha,
        started_at=_now_iso(),
        duration_s=time.monotonic() - started,
        results=results,
        extra={
            "gate": "platforms",
            "version": version,
            "recordings": {k: str(v) for k, v in paths.items()},
            "unmeasured": unmeasured(results),
        },
    )


# --- commands -----------------------------------------------------------------------------------


def _emit(report: Report, args: argparse.Namespace) -> int:
    from sync_ci.report import emit

    code = emit(report, args)
    html_path = getattr(args, "html_path", "")
    if html_path:
        import sys

        from sync_ci.gates.html_report import write_report

        write_report(Path(html_path), report.to_json())
        if not getattr(args, "quiet", False):
            print(f"wrote {html_path}", file=sys.stderr)
    return code


def _attached_gate(args: argparse.Namespace, suite: str, gate: str, run: Any) -> Report:
    started = time.monotonic()
    try:
        with open_target(args) as settings:
            report: Report = run(settings, args)
            return report
    except UnreachableError as exc:
        return _unmeasured(suite, args.target or "settings", "", started, gate, str(exc))


def load_command(args: argparse.Namespace) -> int:
    """`sync-ci gate load`."""
    if args.merge:
        return _emit(merge_load(args), args)
    load_options(args)  # refuse a loosening flag before starting anything
    from sync_ci.gates.locust_engine import check_engine_options, locust_command

    if check_engine_options(args):
        return locust_command(args, "load")
    return _emit(_attached_gate(args, "gate.load", "load", run_load_gate), args)


def latency_command(args: argparse.Namespace) -> int:
    """`sync-ci gate latency`."""
    if args.merge:
        return _emit(merge_latency(args), args)
    latency_options(args)
    from sync_ci.gates.locust_engine import check_engine_options, locust_command

    if check_engine_options(args):
        return locust_command(args, "latency")
    return _emit(_attached_gate(args, "gate.latency", "latency", run_latency_gate), args)


def platforms_command(args: argparse.Namespace) -> int:
    """`sync-ci gate platforms`."""
    return _emit(run_platforms_gate(args), args)


def combine(reports: Sequence[Report], *, target: str, sha: str, duration_s: float) -> Report:
    """Put every gate's rows into one report; unmeasured if any gate could not measure."""
    extra: dict[str, Any] = {"gate": "all", "gates": {r.suite: dict(r.extra) for r in reports}}
    if any(r.extra.get("unmeasured") for r in reports):
        extra["unmeasured"] = True
    return make_report(
        suite="gate.all",
        target=target,
        mode="+".join(r.suite.removeprefix("gate.") for r in reports),
        sha=sha,
        started_at=_now_iso(),
        duration_s=duration_s,
        results=[row for r in reports for row in r.results],
        extra=extra,
    )


def all_command(args: argparse.Namespace) -> int:
    """`sync-ci gate all`: load, latency and platforms; one table; non-zero if any fails."""
    started = time.monotonic()
    load_options(args)
    latency_options(args)
    reports: list[Report] = []
    target, sha = args.target or "settings", ""
    try:
        with open_target(args) as settings:
            target, sha = settings.target, settings.sha
            reports.append(run_load_gate(settings, args))
            reports.append(run_latency_gate(settings, args))
    except UnreachableError as exc:
        reports.append(_unmeasured("gate.load", target, sha, started, "load", str(exc)))
    reports.append(run_platforms_gate(args, target=target, sha=sha))
    return _emit(
        combine(reports, target=target, sha=sha, duration_s=time.monotonic() - started), args
    )


def record_cast_command(args: argparse.Namespace) -> int:
    """`sync-ci gate record-cast`: record the standard script on this machine."""
    from sync_ci.gates.platforms import record_cast

    out = args.output or str(Path(args.casts) / f"{args.platform.lower()}.cast")
    code = record_cast(
        args.platform, out, script_cmd=args.command or None, version=args.launch_version
    )
    print(f"recorded {out}: {'passes' if code == 0 else 'FAILS'} the platforms gate")
    return code


# --- parser -------------------------------------------------------------------------------------


def _add_target_options(parser: argparse.ArgumentParser, *, merge: bool) -> None:
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sandbox only: inject a fault (5xx_rate, latency_ms, bucket_latency_ms, kv_miss_ms.COLO)",
    )
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="tighten a threshold (loosening is refused, exit 2); ids: "
        + ", ".join(t.id for t in threshold_table.CANONICAL),
    )
    parser.add_argument(
        "--timeout",
        type=number(float, minimum=0, above=True, maximum=600, unit="seconds"),
        default=60.0,
        metavar="SECONDS",
        help="per-request bound, 0 < SECONDS <= 600; a request over it counts as an error "
        "(default %(default)s)",
    )
    if merge:
        parser.add_argument(
            "--merge",
            nargs="+",
            default=[],
            metavar="RESULT.json",
            help="judge the union of result files from several machines instead of measuring",
        )
    parser.add_argument(
        "--html",
        metavar="PATH",
        dest="html_path",
        default="",
        help="also write the gates report page: latency percentile curves per operation and "
        "region with thresholds marked, the burst's start spread, the verdicts",
    )


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--installs",
        type=number(int, minimum=MIN_COUNTS["installs"], maximum=MAX_BURST, why=NEVER_SHRUNK),
        default=MIN_COUNTS["installs"],
        metavar="N",
        help=f"concurrent GET /install, {MIN_COUNTS['installs']} to {MAX_BURST} "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--pushes",
        type=number(int, minimum=MIN_COUNTS["pushes"], maximum=MAX_BURST, why=NEVER_SHRUNK),
        default=MIN_COUNTS["pushes"],
        metavar="N",
        help=f"concurrent POST /_push, {MIN_COUNTS['pushes']} to {MAX_BURST} (default %(default)s)",
    )
    parser.add_argument(
        "--processes",
        type=number(int, minimum=1, maximum=MAX_PROCESSES),
        default=1,
        metavar="N",
        help=f"client processes to spread the burst over, 1 to {MAX_PROCESSES} (with --engine "
        "locust: local workers; default %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=number(float, minimum=0, maximum=MAX_RATE, unit="requests/s"),
        default=0.0,
        metavar="PER_SECOND",
        help="open-model phase after the burst: requests per second (0: no such phase; "
        "with --duration)",
    )
    parser.add_argument(
        "--duration",
        type=number(float, minimum=0, maximum=MAX_DURATION_S, unit="seconds"),
        default=0.0,
        metavar="SECONDS",
        help="open-model phase: how long (0: no such phase; with --rate)",
    )


def _add_latency_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--samples",
        type=number(int, minimum=MIN_COUNTS["samples"], maximum=MAX_BURST, why=NEVER_SHRUNK),
        default=MIN_COUNTS["samples"],
        metavar="N",
        help=f"cold reads per region, {MIN_COUNTS['samples']} to {MAX_BURST} (default %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=number(int, minimum=1, maximum=MAX_CONCURRENCY),
        default=8,
        metavar="N",
        help=f"probes in flight per region, 1 to {MAX_CONCURRENCY} (default %(default)s)",
    )


def _add_platform_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--casts", default="casts", metavar="DIR", help="where NAME.cast recordings live"
    )
    parser.add_argument(
        "--cast",
        action="append",
        default=[],
        metavar="PLATFORM=PATH",
        help="a recording for one platform (ubuntu, macos, wsl2)",
    )
    parser.add_argument(
        "--version",
        dest="launch_version",
        default=None,
        metavar="VERSION",
        help="the version being launched, which every recording must show (default: this "
        "sync-ci's)",
    )


def add_parser(sub: Any) -> None:
    """Register `sync-ci gate load|latency|platforms|all|record-cast`."""
    from sync_ci.cli import add_common
    from sync_ci.gates.locust_engine import add_engine_options

    gate = sub.add_parser(
        "gate",
        help="pre-launch gates: load, latency, platforms, all (they fail closed)",
        description="Pre-launch gates. Thresholds come from one canonical table; flags only tighten it. "
        "Exit 0 all passed, 1 a gate failed, 2 usage, 3 could not measure.",
    )
    gates = gate.add_subparsers(dest="gate", metavar="GATE", required=True)

    load = gates.add_parser(
        "load",
        help="1,000 installs + 100 pushes in one burst; exact p95s",
        description="1,000 GET /install and 100 POST /_push in one burst against the Worker, "
        "judged on exact p95s, 5xx and errors. It pushes, so it runs on sandbox or ci only "
        "(pushes go under snappy-os-ci/<sha>/); live is read-only.",
    )
    add_common(load, targets=WRITE_TARGETS)
    _add_target_options(load, merge=True)
    _add_load_options(load)
    add_engine_options(load)
    load.set_defaults(func=load_command)

    latency = gates.add_parser(
        "latency",
        help="cold-KV reads in every region; p95/p99 per region",
        description="Cold KV-miss reads (GET /_probe/kv/<nonce>) in every configured region, "
        "judged on p95 and p99 per region. GETs only, so live is allowed.",
    )
    add_common(latency)
    _add_target_options(latency, merge=True)
    _add_latency_options(latency)
    add_engine_options(latency, processes=True)
    latency.set_defaults(func=latency_command)

    platforms = gates.add_parser(
        "platforms",
        help="judge the ubuntu, macos and wsl2 recordings",
        description="Judge the three asciinema recordings of the standard launch script: each "
        "must exist, show the version being launched and end green. A missing or unreadable "
        "recording is exit 3 (nothing to judge).",
    )
    add_common(platforms)
    _add_platform_options(platforms)
    platforms.set_defaults(func=platforms_command)

    every = gates.add_parser(
        "all",
        help="run the three gates; one table; non-zero if any fails",
        description="Run load, latency and platforms and print one table. The load gate pushes, "
        "so this runs on sandbox or ci only.",
    )
    add_common(every, targets=WRITE_TARGETS)
    _add_target_options(every, merge=False)
    _add_load_options(every)
    _add_latency_options(every)
    _add_platform_options(every)
    every.set_defaults(merge=[])
    every.set_defaults(func=all_command)

    record = gates.add_parser(
        "record-cast",
        help="record the standard script with asciinema",
        description="Record the standard launch script on this machine with asciinema, for the "
        "platforms gate.",
    )
    record.add_argument(
        "--platform", required=True, choices=PLATFORMS, help="which recording this is"
    )
    record.add_argument(
        "--output",
        default="",
        metavar="PATH",
        help="recording path (default: CASTS/PLATFORM.cast)",
    )
    record.add_argument(
        "--casts", default="casts", metavar="DIR", help="where recordings live (default casts)"
    )
    record.add_argument(
        "--command", default="", help="record this command instead of the standard script"
    )
    record.add_argument(
        "--version",
        dest="launch_version",
        default=None,
        metavar="VERSION",
        help="the version the script installs (default: this sync-ci's)",
    )
    record.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    record.set_defaults(func=record_cast_command)
