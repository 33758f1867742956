"""One schedule-time pass: lock, read-only smoke, alert file on failure, recovery note after one."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sync_ci import __version__
from sync_ci.config import Settings, load_settings
from sync_ci.errors import ExitCode, LockBusy
from sync_ci.report import Report

DEFAULT_ALERTS_DIR = Path("state/log/alerts")
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


def timestamp(now: datetime) -> str:
    """Return a filename-safe UTC timestamp (2026-11-27T06-00-00Z)."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")


@contextmanager
def pass_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive non-blocking flock on `path` for one pass."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise LockBusy(
                f"another ci-loop pass holds {path} (pid {holder}); this one exits without running"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def render_alert(report: Report, settings: Settings, now: datetime) -> str:
    """Return the markdown of a sync-degraded alert file."""
    from sync_ci.report import render_markdown

    failing = ", ".join(r.id.removeprefix("phase:") for r in report.failing()) or "unknown"
    return render_markdown(
        report,
        title=f"Sync degraded: {failing} ({timestamp(now)})",
        next_steps=(
            f"Target `{settings.target}`, root `{report.extra.get('root', settings.live_root)}`, "
            f"sync-ci {__version__}.",
            *NEXT_STEPS,
        ),
    )


def render_recovery(report: Report, previous: dict[str, Any], now: datetime) -> str:
    """Return the markdown of a recovery note."""
    return (
        f"# Sync recovered ({timestamp(now)})\n\n"
        f"The read-only smoke against `{report.target}` passed again "
        f"({report.counts['pass']} phases in {report.duration_s:.2f} s).\n\n"
        f"Last failure: {previous.get('at', '?')}, alert file `{previous.get('alert_file', '?')}`.\n"
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

    report = run_smoke(settings, mode="read-only", budget_s=budget_s, retry_failed=True)
    state_file = alerts_dir.parent / "ci-loop-state.json"
    previous = _read_state(state_file)
    alerts_dir.mkdir(parents=True, exist_ok=True)
    alert_file = recovery_file = None
    if not report.ok or report.extra.get("unmeasured"):
        alert_file = alerts_dir / f"sync-degraded-{timestamp(now)}.md"
        alert_file.write_text(render_alert(report, settings, now), encoding="utf-8")
        _write_state(
            state_file,
            {"ok": False, "at": now.isoformat(timespec="seconds"), "alert_file": str(alert_file)},
        )
    else:
        if previous.get("ok") is False:
            recovery_file = alerts_dir / f"sync-recovered-{timestamp(now)}.md"
            recovery_file.write_text(render_recovery(report, previous, now), encoding="utf-8")
        _write_state(state_file, {"ok": True, "at": now.isoformat(timespec="seconds")})
    return PassOutcome(report=report, alert_file=alert_file, recovery_file=recovery_file)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


def command(
    *,
    target: str | None,
    config: str | None,
    alerts_dir: Path,
    budget_s: float,
    now: datetime | None,
    args: argparse.Namespace,
) -> int:
    """One scheduled pass: exit 0 healthy (or lock busy), 1 degraded, 3 could not measure."""
    from sync_ci.report import render_table, write_outputs
    from sync_ci.sandbox.attach import attach

    settings = load_settings(config=config, target=target)
    lock = settings.state_dir / "ci-loop.lock"
    try:
        with pass_lock(lock), attach(settings) as attached:
            outcome = run_pass(
                attached, alerts_dir=alerts_dir, now=now or datetime.now(UTC), budget_s=budget_s
            )
    except LockBusy as exc:
        print(f"sync-ci: ci-loop: {exc}", file=sys.stderr)
        return int(ExitCode.OK)
    report = outcome.report
    write_outputs(report, args)
    quiet = getattr(args, "quiet", False)
    if outcome.alert_file:
        print(render_table(report, only_failing=True))
        print(f"ci-loop: degraded; alert written to {outcome.alert_file}")
    elif not quiet:
        extra = f"; recovery note {outcome.recovery_file}" if outcome.recovery_file else ""
        print(
            f"ci-loop: ok, {report.counts['pass']} phases passed read-only against {report.target} "
            f"in {report.duration_s:.2f} s{extra}"
        )
    if report.extra.get("unmeasured"):
        return int(ExitCode.UNMEASURED)
    return int(ExitCode.OK if report.ok else ExitCode.FAILED)


def add_parser(sub: Any) -> None:
    """Register `sync-ci ci-loop`."""
    from sync_ci.cli import add_common

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
        default=DEFAULT_ALERTS_DIR,
        metavar="DIR",
        help="where alert files go (default %(default)s)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        metavar="SECONDS",
        help="bound on the whole pass (default %(default)s)",
    )
    parser.add_argument("--now", metavar="ISO8601", help="reference time for file names (tests)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sync_ci.errors import UsageError

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
    return command(
        target=args.target,
        config=args.config,
        alerts_dir=args.alerts_dir,
        budget_s=args.budget,
        now=now,
        args=args,
    )
