"""`sync-ci config show`: the resolved settings as rows (`describe`), every secret redacted."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sync_ci.config import URL_KEYS, Settings, resolve_settings
from sync_ci.config_env import REDACTED, SECRET_ENV
from sync_ci.config_file import PLAIN_KEYS
from sync_ci.errors import ExitCode
from sync_ci.guards import display_url
from sync_ci.redaction import clean


def _missing(settings: Settings) -> set[str]:
    """The settings this target needs that have no value."""
    if settings.target == "sandbox":
        return set()
    needed = {"bucket", "access_key_id", "secret_access_key"}
    needed |= {"worker_url"} if settings.target == "live" else {"sha"}
    present = {name for name in needed if getattr(settings, name, "")}
    present |= {name for name in needed if getattr(settings.secrets, name, "")}
    return needed - present


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """Return (setting, value, source) rows: secrets and URL user info redacted, gaps marked."""
    missing = _missing(settings)
    rows: list[tuple[str, str, str]] = []
    for name in PLAIN_KEYS:
        value = str(getattr(settings, name))
        if name in URL_KEYS:
            value = display_url(value)
        if name in missing:
            value = "(missing)"
        rows.append((name, value or "(unset)", settings.sources.get(name, "derived")))
    prefix = settings.ci_prefix if settings.target != "live" and settings.sha else "-"
    rows.append(("ci_prefix", prefix, "derived"))
    rows.append(("read_only", str(settings.read_only).lower(), "derived from target"))
    for region in settings.regions:
        rows.append((f"region {region.name}", f"{display_url(region.url)} ({region.colo})", "file"))
    for name, env_names in SECRET_ENV.items():
        present = bool(getattr(settings.secrets, name))
        shown = REDACTED if present else "(missing)" if name in missing else "(unset)"
        rows.append((name, shown, " or ".join(env_names)))
    if settings.sandbox_file:
        rows.append(("sandbox", settings.sandbox_file, "env SYNC_CI_SANDBOX"))
    rows.append(("config_file", settings.config_path or "(none)", "search order"))
    return rows


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
