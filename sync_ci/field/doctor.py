"""Field doctor: runs the checks in order and reports; exit code = failure count.

The checks are grouped by what they look at: `doctor_local` (this machine's files),
`doctor_worker` (the Worker as a tenant sees it), `doctor_host` (cron, parity, spool, lints);
`doctor_context` is what they share.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.errors import SyncCIError, UsageError
from sync_ci.field.doctor_context import HEALTH_TIMEOUT_S, Context, Skip, new_row
from sync_ci.field.doctor_host import check_cron, check_lints, check_parity, check_spool
from sync_ci.field.doctor_local import (
    check_free_space,
    check_last_pull,
    check_settings,
    check_state_dir,
    check_tenant,
)
from sync_ci.field.doctor_worker import check_clock, check_read_path, check_worker
from sync_ci.report import Report, Result, make_report

if TYPE_CHECKING:
    from sync_ci.config import Settings
    from sync_ci.report_emit import Outputs

MAX_EXIT = 100


def cap_exit(report: Report) -> int:
    """Return the failure count, capped so it never wraps to 0 modulo 256."""
    return min(MAX_EXIT, len(report.failing()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """A named doctor check."""

    name: str
    title: str
    run: Callable[[Context], list[Result]]


CHECKS: tuple[Check, ...] = (
    Check(name="settings", title="settings valid", run=check_settings),
    Check(
        name="tenant",
        title="tenant id and token present; secrets file owner-only",
        run=check_tenant,
    ),
    Check(name="worker", title="Worker reachable and contract compatible", run=check_worker),
    Check(
        name="read-path",
        title="tenant read path: /install, /catalog, sampled objects, contract headers",
        run=check_read_path,
    ),
    Check(
        name="clock-skew", title="clock within 5 min of the Worker's Date header", run=check_clock
    ),
    Check(name="cron-entry", title="cron entry installed and sane", run=check_cron),
    Check(name="state-dir", title="state directory writable", run=check_state_dir),
    Check(name="last-pull", title="last successful pull within 24 h", run=check_last_pull),
    Check(name="mirror-parity", title="local mirror matches the Worker catalog", run=check_parity),
    Check(name="free-space", title="free space for the state directory", run=check_free_space),
    Check(name="alert-spool", title="no undelivered alerts in the spool", run=check_spool),
    Check(name="lint", title="field-scope lint rules (checks/)", run=check_lints),
)


def select_checks(names: Sequence[str]) -> tuple[Check, ...]:
    """Return the named checks (all when none named) or raise UsageError."""
    if not names:
        return CHECKS
    known = {c.name: c for c in CHECKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown check {', '.join(unknown)}; see sync-ci doctor --list-checks")
    return tuple(c for c in CHECKS if c.name in names)


def run_checks(ctx: Context, checks: Sequence[Check]) -> list[Result]:
    """Run checks in order; a Skip becomes a skip row, a project error an error row."""
    results: list[Result] = []
    for check in checks:
        started = time.perf_counter()
        try:
            rows = check.run(ctx)
        except Skip as why:
            rows = [new_row(check.name, check.title, "skip", str(why))]
        except (SyncCIError, OSError) as exc:
            rows = [new_row(check.name, check.title, "error", f"{type(exc).__name__}: {exc}")]
        spent = time.perf_counter() - started
        results += [replace(r, duration_s=r.duration_s or spent / len(rows)) for r in rows]
    return results


def doctor(
    settings: Settings | None,
    *,
    names: Sequence[str] = (),
    settings_error: str = "",
    cron_user: str = "",
    now: Callable[[], datetime] | None = None,
) -> Report:
    """Run the doctor checks and return the report."""
    wall = now or (lambda: datetime.now(UTC))
    started_at = wall()
    started = time.perf_counter()
    ctx = Context(settings=settings, settings_error=settings_error, cron_user=cron_user, now=wall)
    try:
        results = run_checks(ctx, select_checks(names))
    finally:
        ctx.close()
    return make_report(
        suite="doctor",
        target=settings.target if settings else "unknown",
        mode="field",
        sha=settings.sha if settings else "",
        started_at=started_at,
        duration_s=time.perf_counter() - started,
        results=results,
    )


def save_report(report: Report, state_dir: Path) -> None:
    """Keep the report as last-doctor.json (owner-only) so `alert` can attach the failing rows."""
    from sync_ci.field import last_doctor

    # A report we cannot keep must not change doctor's verdict; the free-space row says why.
    with contextlib.suppress(OSError):
        last_doctor.save(report.to_json(), state_dir)


def send_heartbeat(settings: Settings) -> None:
    """POST /_heartbeat as the tenant (best effort, silent)."""
    from sync_ci.field.alerts import tenant_poster

    with contextlib.suppress(SyncCIError):
        tenant_poster(settings, "/_heartbeat")({}, HEALTH_TIMEOUT_S)


def list_checks() -> str:
    """Return the `--list-checks` table: one check per line, the field lint rules under `lint`."""
    from sync_ci.report_text import render_rows

    rows = [(c.name, "", c.title) for c in CHECKS]
    try:
        from checks.catalogue import discover

        rows += [("lint", r.id, r.title) for r in discover() if "field" in r.scopes]
    except ImportError:
        pass
    return render_rows(rows, headers=("check", "rule", "title"))


def command(
    *,
    names: Sequence[str] = (),
    config: str | None = None,
    target: str | None = None,
    outputs: Outputs | None = None,
    heartbeat: bool = False,
    cron_user: str = "",
) -> int:
    """Run doctor, print/write the report, and return the failure count (capped at 100).

    `outputs.quiet` is the cron line's `--silent`: nothing on success, the failing rows otherwise.
    """
    from sync_ci.config import load_settings
    from sync_ci.report_emit import Outputs, emit

    outputs = outputs or Outputs()

    select_checks(names)
    settings: Settings | None
    try:
        from sync_ci.attachment import field_settings

        settings = field_settings(load_settings(config=config, target=target, check_remote=False))
        error = ""
    except SyncCIError as exc:
        settings, error = None, str(exc)
    exclusive = contextlib.ExitStack()
    if settings is not None:
        from sync_ci.errors import LockBusy
        from sync_ci.locks import LockUnavailable, hold_lock, lock_path

        try:
            exclusive.enter_context(hold_lock(lock_path(settings.state_dir, "doctor"), "doctor"))
        except LockBusy as exc:  # a run still going is not a failure: exit 0, no alert
            if not outputs.quiet:
                print(f"sync-ci: doctor: {exc}", file=sys.stderr)
            return 0
        except LockUnavailable:
            pass  # an unusable state directory must not stop doctor from reporting it
    with exclusive:
        report = doctor(settings, names=names, settings_error=error, cron_user=cron_user)
        if settings is not None:
            save_report(report, settings.state_dir)
        emit(report, outputs)
        if heartbeat and report.ok and settings is not None:
            send_heartbeat(settings)
    return cap_exit(report)


def add_parser(sub: Any) -> None:
    """Register `doctor`."""
    from sync_ci.options import add_common

    parser = sub.add_parser(
        "doctor",
        help="check this machine's sync setup; exit code = number of failing checks",
        description="Run the field checks (lint rules of scope field, then the parity cells). "
        "With --quiet: nothing on success, only the failing rows on failure. Exit code: the "
        "number of failing checks (capped at 100); 0 when healthy.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="CHECK", help="run only these checks (see --list-checks)"
    )
    add_common(parser)
    # The seed's field cron line spells --quiet as --silent; installed lines keep working.
    parser.add_argument(
        "--silent",
        action="store_true",
        dest="quiet",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--list-checks", action="store_true", help="list the checks and exit")
    parser.add_argument(
        "--heartbeat",
        action="store_true",
        help="on success POST a tiny /_heartbeat so the Worker knows we are alive",
    )
    parser.add_argument(
        "--cron-user",
        default="",
        metavar="NAME",
        help="whose crontab to check (default: yours)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sync_ci.options import outputs

    if args.list_checks:
        print(list_checks())
        return 0
    return command(
        names=args.names,
        config=args.config,
        target=args.target,
        outputs=outputs(args),
        heartbeat=args.heartbeat,
        cron_user=args.cron_user,
    )
