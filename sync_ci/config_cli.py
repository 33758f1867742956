"""`sync-ci config show`: the resolved settings with every secret redacted."""

from __future__ import annotations

import argparse
from typing import Any

from sync_ci.config import describe, load_settings
from sync_ci.errors import ExitCode


def command(*, config: str | None, target: str | None) -> int:
    """Print the resolved settings table."""
    from tabulate import tabulate

    settings = load_settings(config=config, target=target)
    print(tabulate(describe(settings), headers=("setting", "value", "from"), tablefmt="plain"))
    return int(ExitCode.OK)


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
