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
    from tabulate import tabulate

    settings, problems = resolve_settings(config=config, target=target)
    table = tabulate(describe(settings), headers=("setting", "value", "from"), tablefmt="plain")
    print(clean(table))
    for problem in problems:
        print(f"sync-ci: error: {clean(problem, keep_newlines=False)}", file=sys.stderr)
    return int(ExitCode.USAGE if problems else ExitCode.OK)


def add_parser(sub: Any) -> None:
    """Register `config show`."""
    parser = sub.add_parser("config", help="show the resolved settings (secrets redacted)")
    inner = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = inner.add_parser("show", help="print every setting, its value and where it came from")
    show.add_argument("--target", choices=("sandbox", "ci", "live"))
    show.add_argument("--config", metavar="PATH")
    show.add_argument("--debug", action="store_true")
    show.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return command(config=args.config, target=args.target)
