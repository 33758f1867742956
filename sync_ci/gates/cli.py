"""`sync-ci gate load|latency|platforms|all|record-cast`: wire settings, target, run and report.

Each gate runs from a typed `GateRequest` (`load`, `latency`, `platforms`, `every`, and `record`
for record-cast): the parsed flags become one in `request_from`, and the invoke tasks build theirs
from their parameters, so both front ends pass the same checks and give the same exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sync_ci.assignments import parse_assignments
from sync_ci.config import Settings
from sync_ci.errors import UnreachableError
from sync_ci.gates import thresholds as threshold_table
from sync_ci.gates import verdict
from sync_ci.gates.engine import (
    BuiltinEngine,
    Engine,
    merge_latency,
    merge_load,
    run_latency_gate,
    run_load_gate,
    run_platforms_gate,
)
from sync_ci.gates.options import (
    DEFAULTS,
    REQUEST_FIELDS,
    WRITE_TARGETS,
    GateRequest,
    LatencyOptions,
    LoadOptions,
    add_numbers,
    check_engine_options,
    gate_request,
    latency_options,
    load_options,
    locust_mode,
    worker_options,
)
from sync_ci.gates.platforms import PLATFORMS
from sync_ci.report import Report

GateOptions = TypeVar("GateOptions", LoadOptions, LatencyOptions)


@contextlib.contextmanager
def open_target(request: GateRequest) -> Iterator[Settings]:
    """Load settings and open what they target for a gate (an ephemeral sandbox by default)."""
    from sync_ci.attachment import SUITE
    from sync_ci.attachment import open_target as open_resolved
    from sync_ci.config import load_settings

    settings = load_settings(config=request.config, target=request.target)
    faults = parse_assignments(request.fault, "--fault", example="5xx_rate=0.1")
    with open_resolved(settings, SUITE, faults=faults or None) as attached:
        yield attached


def _emit(report: Report, request: GateRequest) -> int:
    """Render a gate's document (table, --json, --junit, --html...); return its exit code."""
    from sync_ci.report_emit import emit

    code = emit(report, request.outputs)
    if request.html_path:
        import sys

        from sync_ci.gates.html_report import write_report

        write_report(Path(request.html_path), report.to_json())
        if not request.outputs.quiet:
            print(f"wrote {request.html_path}", file=sys.stderr)
    return code


def _attached_gate(request: GateRequest, gate: str, run: Callable[[Settings], Report]) -> Report:
    started = time.monotonic()
    try:
        with open_target(request) as settings:
            return run(settings)
    except UnreachableError as exc:
        target = request.target or "settings"
        return verdict.unmeasured(f"gate.{gate}", target, "", started, gate, str(exc))


def _engine(request: GateRequest) -> Engine | None:
    """The engine the flags ask for; None for a Locust worker, which runs no gate itself."""
    if not check_engine_options(request):
        return BuiltinEngine(processes=request.processes)
    if request.worker:
        return None
    from sync_ci.gates.locust_engine import LocustEngine

    return LocustEngine(mode=locust_mode(request), debug=request.debug)


def _locust_worker(request: GateRequest, gate: str) -> int:
    from sync_ci.gates.locust_engine import worker_command

    return worker_command(worker_options(request, gate))


def _measured(
    request: GateRequest,
    gate: str,
    options: GateOptions,
    merge: Callable[[Sequence[str], GateOptions], Report],
    run: Callable[[Settings, GateOptions, Engine], Report],
) -> int:
    """Judge the merged files, or run one Locust worker, or measure on the attached target."""
    if request.merge:
        return _emit(merge(request.merge, options), request)
    engine = _engine(request)
    if engine is None:
        return _locust_worker(request, gate)
    return _emit(_attached_gate(request, gate, lambda s: run(s, options, engine)), request)


def load(request: GateRequest) -> int:
    """Run `sync-ci gate load` as the request says; return its exit code."""
    options = load_options(request)  # refuse a loosening flag before starting anything
    return _measured(request, "load", options, merge_load, run_load_gate)


def latency(request: GateRequest) -> int:
    """Run `sync-ci gate latency` as the request says; return its exit code."""
    options = latency_options(request)
    return _measured(request, "latency", options, merge_latency, run_latency_gate)


def platforms(request: GateRequest) -> int:
    """Run `sync-ci gate platforms`: judge the recordings the request names."""
    return _emit(run_platforms_gate(request.casts, request.cast, request.launch_version), request)


def every(request: GateRequest) -> int:
    """Run `sync-ci gate all`: load, latency and platforms; one table; non-zero if any fails."""
    started = time.monotonic()
    load_run = load_options(request, "all")
    latency_run = latency_options(request, "all")
    engine = BuiltinEngine(processes=load_run.processes)
    reports: list[Report] = []
    target, sha = request.target or "settings", ""
    try:
        with open_target(request) as settings:
            target, sha = settings.target, settings.sha
            reports.append(run_load_gate(settings, load_run, engine))
            reports.append(run_latency_gate(settings, latency_run, engine))
    except UnreachableError as exc:
        reports.append(verdict.unmeasured("gate.load", target, sha, started, "load", str(exc)))
    reports.append(
        run_platforms_gate(
            request.casts, request.cast, request.launch_version, target=target, sha=sha
        )
    )
    combined = verdict.combine(
        reports, target=target, sha=sha, duration_s=time.monotonic() - started
    )
    return _emit(combined, request)


# What each `sync-ci gate GATE` runs; the invoke tasks look their gate up here.
RUNS: Mapping[str, Callable[[GateRequest], int]] = {
    "load": load,
    "latency": latency,
    "platforms": platforms,
    "all": every,
}


def record(
    *,
    platform: str,
    output: str = "",
    casts: str = "casts",
    command: str = "",
    launch_version: str | None = None,
) -> int:
    """Run `sync-ci gate record-cast`: record the standard script on this machine."""
    from sync_ci.gates.platforms import record_cast
    from sync_ci.options import choice

    choice(platform, PLATFORMS, "--platform", required=True, command="gate record-cast")
    out = output or str(Path(casts) / f"{platform.lower()}.cast")
    code = record_cast(platform, out, script_cmd=command or None, version=launch_version)
    print(f"recorded {out}: {'passes' if code == 0 else 'FAILS'} the platforms gate")
    return code


def request_from(args: argparse.Namespace) -> GateRequest:
    """The request the parsed flags describe: the one place a gate reads argparse's Namespace."""
    from sync_ci.options import outputs

    parsed = {name: value for name, value in vars(args).items() if name in REQUEST_FIELDS}
    return gate_request({**parsed, "outputs": outputs(args)})


def _handler(run: Callable[[GateRequest], int]) -> Callable[[argparse.Namespace], int]:
    return lambda args: run(request_from(args))


def _record_handler(args: argparse.Namespace) -> int:
    return record(
        platform=args.platform,
        output=args.output,
        casts=args.casts,
        command=args.command,
        launch_version=args.launch_version,
    )


# --- parser -------------------------------------------------------------------------------------

# The numeric options of each gate's own (options.GATE_NUMBERS names them all, for the checks).
LOAD_NUMBERS = ("installs", "pushes", "processes", "rate", "duration")
LATENCY_NUMBERS = ("samples", "concurrency")


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
    add_numbers(parser, "timeout")
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


def _add_recording_options(parser: argparse.ArgumentParser, *, casts: str, version: str) -> None:
    """Add --casts DIR and --version VERSION (the version the recordings show)."""
    parser.add_argument("--casts", default=DEFAULTS.casts, metavar="DIR", help=casts)
    parser.add_argument(
        "--version",
        dest="launch_version",
        default=DEFAULTS.launch_version,
        metavar="VERSION",
        help=version,
    )


def _add_platform_options(parser: argparse.ArgumentParser) -> None:
    _add_recording_options(
        parser,
        casts="where NAME.cast recordings live",
        version="the version being launched, which every recording must show (default: this "
        "sync-ci's)",
    )
    parser.add_argument(
        "--cast",
        action="append",
        default=[],
        metavar="PLATFORM=PATH",
        help="a recording for one platform (ubuntu, macos, wsl2)",
    )


def add_parser(sub: Any) -> None:
    """Register `sync-ci gate load|latency|platforms|all|record-cast`."""
    from sync_ci.gates.options import add_engine_options
    from sync_ci.options import add_common

    gate = sub.add_parser(
        "gate",
        help="pre-launch gates: load, latency, platforms, all (they fail closed)",
        description="Pre-launch gates. Thresholds come from one canonical table; flags only tighten it. "
        "Exit 0 all passed, 1 a gate failed, 2 usage, 3 could not measure.",
    )
    gates = gate.add_subparsers(dest="gate", metavar="GATE", required=True)

    load_parser = gates.add_parser(
        "load",
        help="1,000 installs + 100 pushes in one burst; exact p95s",
        description="1,000 GET /install and 100 POST /_push in one burst against the Worker, "
        "judged on exact p95s, 5xx and errors. It pushes, so it runs on sandbox or ci only "
        "(pushes go under snappy-os-ci/<sha>/); live is read-only.",
    )
    add_common(load_parser, targets=WRITE_TARGETS)
    _add_target_options(load_parser, merge=True)
    add_numbers(load_parser, *LOAD_NUMBERS)
    add_engine_options(load_parser)
    load_parser.set_defaults(func=_handler(load))

    latency_parser = gates.add_parser(
        "latency",
        help="cold-KV reads in every region; p95/p99 per region",
        description="Cold KV-miss reads (GET /_probe/kv/<nonce>) in every configured region, "
        "judged on p95 and p99 per region. GETs only, so live is allowed.",
    )
    add_common(latency_parser)
    _add_target_options(latency_parser, merge=True)
    add_numbers(latency_parser, *LATENCY_NUMBERS)
    add_engine_options(latency_parser, processes=True)
    latency_parser.set_defaults(func=_handler(latency))

    platforms_parser = gates.add_parser(
        "platforms",
        help="judge the ubuntu, macos and wsl2 recordings",
        description="Judge the three asciinema recordings of the standard launch script: each "
        "must exist, show the version being launched and end green. A missing or unreadable "
        "recording is exit 3 (nothing to judge).",
    )
    add_common(platforms_parser)
    _add_platform_options(platforms_parser)
    platforms_parser.set_defaults(func=_handler(platforms))

    every_parser = gates.add_parser(
        "all",
        help="run the three gates; one table; non-zero if any fails",
        description="Run load, latency and platforms and print one table. The load gate pushes, "
        "so this runs on sandbox or ci only.",
    )
    add_common(every_parser, targets=WRITE_TARGETS)
    _add_target_options(every_parser, merge=False)
    add_numbers(every_parser, *LOAD_NUMBERS, *LATENCY_NUMBERS)
    _add_platform_options(every_parser)
    every_parser.set_defaults(func=_handler(every))

    record_parser = gates.add_parser(
        "record-cast",
        help="record the standard script with asciinema",
        description="Record the standard launch script on this machine with asciinema, for the "
        "platforms gate.",
    )
    record_parser.add_argument(
        "--platform", required=True, choices=PLATFORMS, help="which recording this is"
    )
    record_parser.add_argument(
        "--output",
        default="",
        metavar="PATH",
        help="recording path (default: CASTS/PLATFORM.cast)",
    )
    record_parser.add_argument(
        "--command", default="", help="record this command instead of the standard script"
    )
    _add_recording_options(
        record_parser,
        casts="where recordings live (default casts)",
        version="the version the script installs (default: this sync-ci's)",
    )
    record_parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    record_parser.set_defaults(func=_record_handler)
