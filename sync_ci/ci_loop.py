"""One schedule-time pass: lock, read-only smoke, alert file on failure, recovery note after one."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sync_ci import __version__, alert_files, pass_history
from sync_ci.alert_files import AlertDirError, AlertFile
from sync_ci.config import Settings, load_settings
from sync_ci.errors import ExitCode, LockBusy
from sync_ci.locks import LockUnavailable, hold_lock, lock_path
from sync_ci.options import BUDGET_S, within
from sync_ci.redaction import clean
from sync_ci.report import Report
from sync_ci.report_emit import Outputs

DEFAULT_BUDGET_S = 900.0
NEXT_STEPS = (
    "Open the failing phase's detail above; a cf-ray id names the edge request for a support ticket.",
    "Run `sync-ci smoke --read-only --target live` by hand to see whether it persists.",
    "Check the Worker's /_status (`sync-ci status`) for tenants reporting the same failure.",
    "Check the bucket: `sync-ci config show --target live` names the endpoint and root in use.",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PassOutcome:
    """What one pass did."""

    report: Report
    alert_file: Path | None
    recovery_file: Path | None
    history_problem: str = ""


def render_alert(report: Report, settings: Settings, now: datetime) -> str:
    """Return the markdown of a sync-degraded alert file."""
    from sync_ci.report_markdown import render_markdown

    failing = ", ".join(r.id.removeprefix("phase:") for r in report.failing()) or "unknown"
    return render_markdown(
        report,
        title=f"Sync degraded: {failing} ({alert_files.timestamp(now)})",
        next_steps=(
            f"Target `{settings.target}`, root `{report.extra.get('root', settings.live_root)}`, "
            f"sync-ci {__version__}.",
            *NEXT_STEPS,
        ),
    )


def render_recovery(report: Report, previous: AlertFile, now: datetime) -> str:
    """Return the markdown of a recovery note."""
    return (
        f"# Sync recovered ({alert_files.timestamp(now)})\n\n"
        f"The read-only smoke against `{report.target}` passed again "
        f"({report.counts['pass']} phases in {report.duration_s:.2f} s).\n\n"
        f"Last failure: {alert_files.timestamp(previous.at)}, alert file `{previous.path.name}`.\n"
    )


def render_not_run(reason: str, now: datetime) -> str:
    """Return the markdown of the alert written when a pass could not run at all."""
    return (
        f"# Sync degraded: ci-loop could not run ({alert_files.timestamp(now)})\n\n"
        f"{clean(reason)}\n\n"
        "Nothing was measured: fix the path named above; the next pass runs as usual.\n"
    )


def run_pass(
    settings: Settings,
    *,
    alerts_dir: Path,
    now: datetime,
    budget_s: float = DEFAULT_BUDGET_S,
) -> PassOutcome:
    """Run one read-only pass and write the alert or recovery file it calls for."""
    from sync_ci.smoke import run_smoke

    alert_files.ensure_dir(alerts_dir)  # an unusable directory stops the pass before it runs
    report = run_smoke(settings, mode="read-only", budget_s=budget_s, retry_failed=True)
    alert_file = recovery_file = None
    if not report.ok or report.unmeasured:
        text = render_alert(report, settings, now)
        alert_file = alert_files.write(alerts_dir, "degraded", now, text)
    else:
        try:
            previous = alert_files.current_failure(alert_files.scan(alerts_dir))
        except AlertDirError:
            previous = None
        if previous is not None:
            text = render_recovery(report, previous, now)
            recovery_file = alert_files.write(alerts_dir, "recovered", now, text)
    record = pass_history.record_for(report, now, recovered=recovery_file is not None)
    try:
        pass_history.append(alerts_dir, record, now)
        problem = ""
    except AlertDirError as exc:  # the alert file above already tells the news; say what is lost
        problem = str(exc)
    return PassOutcome(
        report=report,
        alert_file=alert_file,
        recovery_file=recovery_file,
        history_problem=problem,
    )


def preflight(alerts_dir: Path) -> None:
    """Refuse, before anything runs, a working directory or alert directory ci-loop cannot use."""
    if not alerts_dir.is_absolute():
        try:
            cwd = Path.cwd()
        except OSError as exc:
            raise AlertDirError(
                f"the working directory is gone ({exc.strerror}), so {alerts_dir} has nowhere "
                "to go; run ci-loop from the repository (cd into it) or pass an absolute "
                "--alerts-dir DIR"
            ) from None
        if not os.access(cwd, os.W_OK | os.X_OK) and not (cwd / alerts_dir).is_dir():
            raise AlertDirError(
                f"cannot create {alerts_dir} in the working directory {cwd}: it is not writable; "
                "run ci-loop from the repository (cd into it) or pass --alerts-dir DIR"
            )
    alert_files.ensure_dir(alerts_dir)


def report_not_run(alerts_dir: Path, reason: str, now: datetime) -> Path | None:
    """Leave an alert file for a pass that could not run; None when that is impossible too."""
    try:
        written = alert_files.write(alerts_dir, "degraded", now, render_not_run(reason, now))
    except AlertDirError:
        return None
    with contextlib.suppress(AlertDirError):
        pass_history.append(alerts_dir, pass_history.not_run(now), now)
    return written


def command(
    *,
    target: str | None,
    config: str | None,
    alerts_dir: Path,
    budget_s: float,
    now: datetime | None,
    outputs: Outputs,
) -> int:
    """One scheduled pass: exit 0 healthy (or lock busy), 1 degraded, 3 could not measure."""
    from sync_ci import progress
    from sync_ci.attachment import PASS, open_target
    from sync_ci.report import exit_code
    from sync_ci.report_emit import write_outputs
    from sync_ci.report_text import render_table

    budget_s = within(
        BUDGET_S, budget_s, "--budget", "ci-loop"
    )  # as argparse checks it, for any caller
    settings = load_settings(config=config, target=target)
    now = now or datetime.now(UTC)
    preflight(alerts_dir)
    lock = lock_path(settings.state_dir, "ci-loop")
    try:
        with (
            progress.showing(progress.for_outputs(outputs)),
            hold_lock(lock, "ci-loop"),
            open_target(settings, PASS) as attached,
        ):
            outcome = run_pass(attached, alerts_dir=alerts_dir, now=now, budget_s=budget_s)
    except LockBusy as exc:
        if not outputs.quiet:
            print(f"sync-ci: ci-loop: {exc}", file=sys.stderr)
        return int(ExitCode.OK)
    except LockUnavailable as exc:
        # Only the lock's directory is bad: the alert directory still takes the news.
        written = report_not_run(alerts_dir, str(exc), now)
        print(f"sync-ci: error: {clean(str(exc), keep_newlines=False)}", file=sys.stderr)
        if written:
            print(f"ci-loop: could not run; alert written to {alert_files.absolute(written)}")
        return int(exc.exit_code)
    report = outcome.report
    write_outputs(report, outputs)
    if outcome.history_problem:
        print(
            f"sync-ci: ci-loop: {clean(outcome.history_problem, keep_newlines=False)}",
            file=sys.stderr,
        )
    quiet = outputs.quiet
    if outcome.alert_file:
        print(render_table(report, only_failing=True))
        print(f"ci-loop: degraded; alert written to {outcome.alert_file}")
    elif not quiet:
        extra = f"; recovery note {outcome.recovery_file}" if outcome.recovery_file else ""
        print(
            f"ci-loop: ok, {report.counts['pass']} phases passed read-only against {report.target} "
            f"in {report.duration_s:.2f} s{extra}"
        )
    return int(exit_code(report))


def add_parser(sub: Any) -> None:
    """Register `sync-ci ci-loop`."""
    from sync_ci.options import add_budget, add_common

    parser = sub.add_parser(
        "ci-loop",
        help="one schedule-time pass: read-only smoke against live, alert file on failure",
        description="One schedule-time pass under a lock: the read-only smoke (GET/HEAD only, enforced "
        "below every caller) against the live target (a fresh checkout: the sandbox's seeded root). "
        "On failure writes state/log/alerts/sync-degraded-<UTC ts>.md; the first pass after a failure "
        "writes a recovery note. Quiet on success apart from one line (--quiet: none).",
    )
    add_common(parser)
    parser.add_argument(
        "--alerts-dir",
        type=Path,
        default=alert_files.DEFAULT_DIR,
        metavar="DIR",
        help="where alert files and the pass history go (default %(default)s)",
    )
    add_budget(parser, default=DEFAULT_BUDGET_S, bounds="pass")
    parser.add_argument("--now", metavar="ISO8601", help="reference time for file names (tests)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sync_ci.errors import UsageError
    from sync_ci.options import common

    now = None
    if args.now:
        try:
            now = datetime.fromisoformat(args.now)
        except ValueError:
            raise UsageError(
                f"--now {args.now!r} is not an ISO-8601 time (e.g. 2026-11-27T06:00:00Z)"
            ) from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
    return command(**common(args), alerts_dir=args.alerts_dir, budget_s=args.budget, now=now)
