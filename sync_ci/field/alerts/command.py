"""`sync-ci alert CHECK`: send one alert, say where it waits when it cannot go now."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sync_ci.errors import ExitCode, SyncCIError
from sync_ci.field.alerts.delivery import send_alert
from sync_ci.field.alerts.model import check_name
from sync_ci.field.alerts.spool import Spool


def command(
    check: str, *, message: str = "", config: str | None = None, quiet: bool = False
) -> int:
    """Send one alert; 0 when it reached the Worker, 1 when it waits in the spool."""
    from sync_ci.attachment import field_settings
    from sync_ci.config import load_settings

    check = check_name(check)  # a name no Worker could take is a usage error, before anything
    settings = field_settings(load_settings(config=config, check_remote=False))
    result = send_alert(settings, check, message)
    spool_dir = Spool(settings.state_dir).dir
    if result.dropped:
        print(
            f"sync-ci: alert spool was full: dropped {result.dropped} oldest alerts",
            file=sys.stderr,
        )
    if result.rejected:
        print(
            f"sync-ci: {result.rejected} alerts rejected by the Worker; see {spool_dir}/rejected",
            file=sys.stderr,
        )
    if result.new_delivered:
        if not quiet:
            print(
                f"alert {check} delivered ({result.delivered} sent, {result.pending} still spooled)"
            )
        return int(ExitCode.OK)
    print(
        f"sync-ci: alert {check} not delivered ({result.error or 'unknown reason'}); "
        f"{result.pending} waiting in {spool_dir}, sent by the next alert or doctor run",
        file=sys.stderr,
    )
    return int(ExitCode.FAILED)


def add_parser(sub: Any) -> None:
    """Register `alert`."""
    parser = sub.add_parser(
        "alert",
        help="POST an alert to the Worker (spooled if it cannot go now)",
        description="POST /_alert for a failing check, as this tenant. An alert that cannot go "
        "now waits in the spool and is sent by the next alert or doctor run; a repeat of the "
        "same alert is stored once. Exit 0 delivered, 1 not delivered (spooled), 2 a check name "
        "no Worker would take (nothing is spooled).",
    )
    parser.add_argument("check", help="name of the failing check, e.g. doctor-failed")
    parser.add_argument("--message", default="", help="one line saying what failed")
    parser.add_argument("--config", metavar="PATH", help="settings file")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when delivered")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return command(args.check, message=args.message, config=args.config, quiet=args.quiet)
    except (SyncCIError, BrokenPipeError):
        raise
    except Exception as exc:  # a monitoring side effect must never end in a traceback
        if args.debug:
            raise
        print(f"sync-ci: error: alert failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return int(ExitCode.FAILED)
