"""`sync-ci gate load|latency|platforms|all|record-cast`: wire settings, target, run and report."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
from sync_ci.gates.engine import worker_base_url as worker_base_url
from sync_ci.gates.options import (
    check_engine_options,
    latency_options,
    load_options,
    locust_mode,
    worker_options,
)
from sync_ci.gates.thresholds import MIN_COUNTS
from sync_ci.options import number, parse_assignments
from sync_ci.report import Report

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


@contextlib.contextmanager
def open_target(args: argparse.Namespace) -> Iterator[Settings]:
    """Load settings and open what they target for a gate (an ephemeral sandbox by default)."""
    from sync_ci.attachment import SUITE
    from sync_ci.attachment import open_target as open_resolved
    from sync_ci.config import load_settings

    settings = load_settings(config=args.config, target=args.target)
    faults = parse_assignments(getattr(args, "fault", []) or [], "--fault")
    with open_resolved(settings, SUITE, faults=faults or None) as attached:
        yield attached


def emit(report: Report, args: argparse.Namespace) -> int:
    """Render a gate's document (table, --json, --junit, --html...); return its exit code."""
    from sync_ci.options import outputs
    from sync_ci.report import emit as emit_report

    code = emit_report(report, outputs(args))
    html_path = getattr(args, "html_path", "")
    if html_path:
        import sys

        from sync_ci.gates.html_report import write_report

        write_report(Path(html_path), report.to_json())
        if not getattr(args, "quiet", False):
            print(f"wrote {html_path}", file=sys.stderr)
    return code


def _attached_gate(
    args: argparse.Namespace, suite: str, gate: str, run: Callable[[Settings], Report]
) -> Report:
    started = time.monotonic()
    try:
        with open_target(args) as settings:
            return run(settings)
    except UnreachableError as exc:
        return verdict.unmeasured(suite, args.target or "settings", "", started, gate, str(exc))


def _engine(args: argparse.Namespace) -> Engine | None:
    """The engine the flags ask for; None for a Locust worker, which runs no gate itself."""
    if not check_engine_options(args):
        return BuiltinEngine(processes=getattr(args, "processes", 1))
    if args.worker:
        return None
    from sync_ci.gates.locust_engine import LocustEngine

    return LocustEngine(mode=locust_mode(args), debug=args.debug)


def _locust_worker(args: argparse.Namespace, gate: str) -> int:
    from sync_ci.gates.locust_engine import worker_command

    return worker_command(worker_options(args, gate))


def load_command(args: argparse.Namespace) -> int:
    """`sync-ci gate load`."""
    options = load_options(args)  # refuse a loosening flag before starting anything
    if args.merge:
        return emit(merge_load(args.merge, options), args)
    engine = _engine(args)
    if engine is None:
        return _locust_worker(args, "load")
    return emit(
        _attached_gate(args, "gate.load", "load", lambda s: run_load_gate(s, options, engine)),
        args,
    )


def latency_command(args: argparse.Namespace) -> int:
    """`sync-ci gate latency`."""
    options = latency_options(args)
    if args.merge:
        return emit(merge_latency(args.merge, options), args)
    engine = _engine(args)
    if engine is None:
        return _locust_worker(args, "latency")
    return emit(
        _attached_gate(
            args, "gate.latency", "latency", lambda s: run_latency_gate(s, options, engine)
        ),
        args,
    )


def platforms_command(args: argparse.Namespace) -> int:
    """`sync-ci gate platforms`."""
    return emit(run_platforms_gate(args.casts, args.cast, args.launch_version), args)


def all_command(args: argparse.Namespace) -> int:
    """`sync-ci gate all`: load, latency and platforms; one table; non-zero if any fails."""
    started = time.monotonic()
    load = load_options(args)
    latency = latency_options(args)
    engine = BuiltinEngine(processes=load.processes)
    reports: list[Report] = []
    target, sha = args.target or "settings", ""
    try:
        with open_target(args) as settings:
            target, sha = settings.target, settings.sha
            reports.append(run_load_gate(settings, load, engine))
            reports.append(run_latency_gate(settings, latency, engine))
    except UnreachableError as exc:
        reports.append(verdict.unmeasured("gate.load", target, sha, started, "load", str(exc)))
    reports.append(
        run_platforms_gate(args.casts, args.cast, args.launch_version, target=target, sha=sha)
    )
    return emit(
        verdict.combine(reports, target=target, sha=sha, duration_s=time.monotonic() - started),
        args,
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
    from sync_ci.gates.options import add_engine_options
    from sync_ci.options import add_common

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
