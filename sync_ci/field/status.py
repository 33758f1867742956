"""`sync-ci status`: ci-loop alert files and the Worker's `/_status`, as a table or a page.

It is never blind: a source it could not read (the alert directory, or `/_status` unreachable,
refused, unconfigured or unparseable) is a row of its own and exit 3, and "no alerts recorded"
appears only when both sources were read. Everything shown came from outside (alert titles, check
names, messages, tenants) and is cleaned (secrets masked, control characters made visible) before
it is printed, then HTML-escaped for the page. The rows are `status_rows`, the page `status_page`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci import alert_files, pass_history
from sync_ci.alert_files import AlertDirError, AlertFile
from sync_ci.errors import SettingsError, SyncCIError

if TYPE_CHECKING:
    from sync_ci.config import Settings
from sync_ci.field.status_page import render_html
from sync_ci.field.status_rows import (
    CI_LOOP,
    FIELD,
    HEADERS,
    MAX_FILES,
    NOTHING,
    Picture,
    StatusRow,
    exit_code,
    file_rows,
    order_rows,
    unread_row,
    verdict,
    worker_rows,
)

DEFAULT_ALERTS_DIR = alert_files.DEFAULT_DIR


def render_text(rows: Sequence[StatusRow]) -> str:
    """Return the terminal table (or the one line saying both sources were read and are empty)."""
    from sync_ci.report_text import render_rows

    ordered = order_rows(rows)
    if not ordered:
        return NOTHING
    table = render_rows([r.cells() for r in ordered], headers=HEADERS, style="simple")
    return f"{table}\n{verdict(ordered)}"


def scan_alert_files(alerts_dir: Path) -> tuple[list[StatusRow], tuple[AlertFile, ...]]:
    """Rows and files for the ci-loop alert files; one UNREAD row for an unreadable directory."""
    try:
        found = alert_files.scan(alerts_dir)
    except AlertDirError as exc:
        return [unread_row(CI_LOOP, "alert files", str(exc))], ()
    paired = alert_files.titles(found[:MAX_FILES]) + [(f, "") for f in found[MAX_FILES:]]
    return file_rows(paired), tuple(found)


def alert_file_rows(alerts_dir: Path) -> list[StatusRow]:
    """Rows for the ci-loop alert files, or one UNREAD row when the directory cannot be read."""
    return scan_alert_files(alerts_dir)[0]


def fetch_status(settings: Settings) -> dict[str, Any]:
    """GET the Worker's `/_status` with the admin token."""
    from sync_ci.worker import WorkerClient, WorkerTarget, expect

    if not settings.worker_url:
        raise SettingsError("no Worker URL configured: set [worker] url or SYNC_CI_WORKER_URL")
    if not settings.secrets.admin_token:
        raise SettingsError("/_status needs the admin token: set SYNC_CI_ADMIN_TOKEN")
    target = WorkerTarget(
        base_url=settings.worker_url, read_only=True, timeout_s=settings.worker_timeout_s
    )
    with WorkerClient(target) as client:
        answer = client.get(
            "/_status", headers={"authorization": f"Bearer {settings.secrets.admin_token}"}
        )
    document = expect(answer, 200).json()
    if not isinstance(document, dict):
        raise SyncCIError(f"{answer.url} answered with something that is not a JSON object")
    return document


def worker_view(
    settings: Settings, now: datetime
) -> tuple[list[StatusRow], dict[str, Any] | None, str]:
    """Rows, document and problem for `/_status`: one UNREAD row and no document when unread."""
    what = "Worker /_status"
    try:
        document = fetch_status(settings)
    except SyncCIError as exc:
        return [unread_row(FIELD, what, str(exc))], None, str(exc)
    try:
        return worker_rows(document, now), document, ""
    except ValueError as exc:
        why = f"{settings.worker_url}/_status answered, but {exc}"
        return [unread_row(FIELD, what, why)], None, why


def status_rows(settings: Settings, now: datetime) -> list[StatusRow]:
    """Rows for the Worker's `/_status`, or one UNREAD row saying why it could not be read."""
    return worker_view(settings, now)[0]


def gather(settings: Settings, alerts_dir: Path, now: datetime) -> tuple[list[StatusRow], Picture]:
    """Read every source once: the table's rows and what the page draws above it."""
    file_rows_, files = scan_alert_files(alerts_dir)
    rows, document, problem = worker_view(settings, now)
    picture = Picture(
        history=pass_history.read(alerts_dir),
        files=files,
        worker=document,
        worker_problem=problem,
    )
    return file_rows_ + rows, picture


def collect(settings: Settings, alerts_dir: Path, now: datetime) -> list[StatusRow]:
    """Gather rows from both sources; a source that cannot be read becomes an UNREAD row."""
    return gather(settings, alerts_dir, now)[0]


def write_page(path: Path, text: str) -> None:
    """Write the page atomically and owner-only (it quotes failure details)."""
    alert_files.write_owner_only(path, text.encode("utf-8"))


def command(
    *,
    config: str | None = None,
    target: str | None = None,
    alerts_dir: Path = DEFAULT_ALERTS_DIR,
    html_path: str = "",
    now: datetime | None = None,
) -> int:
    """Print the status table (and write the page): 0 clear, 1 failing, 3 a source unreadable."""
    from sync_ci.attachment import field_settings
    from sync_ci.config import load_settings

    now = now or datetime.now(UTC)
    settings = field_settings(load_settings(config=config, target=target, check_remote=False))
    rows, picture = gather(settings, alerts_dir, now)
    print(render_text(rows))
    if html_path:
        try:
            write_page(Path(html_path), render_html(rows, generated_at=now, picture=picture))
        except OSError as exc:
            raise SettingsError(f"cannot write --html {html_path}: {exc.strerror or exc}") from None
        print(f"wrote {html_path}", file=sys.stderr)
    return int(exit_code(rows))


def add_parser(sub: Any) -> None:
    """Register `status`."""
    parser = sub.add_parser(
        "status",
        help="ci-loop alert files and the Worker's /_status",
        description="ci-loop failures first, then the Worker's /_status. Exit 0 all clear, 1 while "
        "something is failing (a ci-loop degradation not yet followed by a recovery, or a field "
        "alert in the last 24 h), 3 when a source could not be read (its row says why).",
    )
    parser.add_argument(
        "--target",
        choices=("sandbox", "ci", "live"),
        help="whose Worker /_status to read (default: settings, else sandbox)",
    )
    parser.add_argument("--config", metavar="PATH", help="settings file")
    parser.add_argument(
        "--alerts-dir",
        type=Path,
        default=DEFAULT_ALERTS_DIR,
        metavar="DIR",
        help="where ci-loop writes its alert files and pass history (default %(default)s)",
    )
    parser.add_argument(
        "--html",
        metavar="PATH",
        default="",
        help="also write the Sync status page: pass timeline, alerts per check, silent tenants",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return command(
        config=args.config, target=args.target, alerts_dir=args.alerts_dir, html_path=args.html
    )
