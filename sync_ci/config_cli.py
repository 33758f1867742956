"""`sync-ci config show`: the resolved settings with every secret redacted."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sync_ci.config import describe, resolve_settings
from sync_ci.errors import ExitCode
from sync_ci.redaction import clean


def command(*, config: str | None, target: str | None) -> int:
    """Print the resolved settings table (gaps marked), then every problem, one line each."""
    from sync_ci.report_text import render_rows

    settings, problems = resolve_settings(config=config, target=target)
    print(render_rows(describe(settings), headers=("setting", "value", "from")))
    for problem in problems:
        print(f"sync-ci: error: {clean(problem, keep_newlines=False)}", file=sys.stderr)
    return int(ExitCode.USAGE if problems else ExitCode.OK)


def add_parser(sub: Any) -> None:
    """Register `config show`."""
    parser = sub.add_parser(
        "config",
        help="show the resolved settings (secrets redacted)",
        description="Inspect the settings every command loads (sync-ci.toml, SYNC_CI_* "
        "variables, defaults).",
    )
    inner = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = inner.add_parser(
        "show",
        help="print every setting, its value and where it came from",
        description="Print every setting, its value and where it came from (secrets as ***), "
        "with each missing value marked; then every problem, one line each. Exit 0 when the "
        "settings are complete, 2 when not.",
    )
    show.add_argument(
        "--target",
        choices=("sandbox", "ci", "live"),
        help="the target to resolve (default: settings, else sandbox)",
    )
    show.add_argument(
        "--config",
        metavar="PATH",
        help="settings file (default: SYNC_CI_CONFIG, ./sync-ci.toml, user config dir)",
    )
    show.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    show.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return command(config=args.config, target=args.target)
