"""The status view: ci-loop alert files and the Worker's `/_status`, as a table or a page.

It is never blind: a source it could not read (the alert directory, or `/_status` unreachable,
refused, unconfigured or unparseable) is a row of its own and exit 3, and "no alerts recorded"
appears only when both sources were read. Everything shown came from outside (alert titles, check
names, messages, tenants) and is cleaned (secrets masked, control characters made visible) before
it is printed, then HTML-escaped for the page.
"""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci import alert_files
from sync_ci.alert_files import AlertDirError, AlertFile
from sync_ci.errors import ExitCode, SettingsError, SyncCIError
from sync_ci.redaction import clean

if TYPE_CHECKING:
    from sync_ci.config import Settings

DEFAULT_ALERTS_DIR = alert_files.DEFAULT_DIR
RECENT = timedelta(hours=24)
MAX_FILES = 20
CI_LOOP = "ci-loop"
FIELD = "field"
NOTHING = "no alerts recorded"


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRow:
    """One line of the view: an alert file, a field-time check, or a source that could not be read."""

    source: str
    name: str
    failing: bool
    count: int
    tenants: int
    last_seen: str
    detail: str
    unread: bool = False

    @property
    def state(self) -> str:
        """FAIL, UNREAD (the source could not be read) or ok."""
        return "FAIL" if self.failing else "UNREAD" if self.unread else "ok"

    def cells(self) -> list[str]:
        """Render as table cells, each cleaned to one safe line."""
        raw = [
            self.state,
            self.source,
            self.name,
            str(self.count),
            str(self.tenants),
            self.last_seen,
            self.detail,
        ]
        return [clean(cell, keep_newlines=False) for cell in raw]


HEADERS = ("state", "source", "check", "count", "tenants", "last seen", "detail")


def unread_row(source: str, what: str, why: str) -> StatusRow:
    """A row saying which source could not be read and why."""
    return StatusRow(
        source=source,
        name=what,
        failing=False,
        count=0,
        tenants=0,
        last_seen="",
        detail=why,
        unread=True,
    )


# --- pure ------------------------------------------------------------------------------------


def file_rows(files: Sequence[tuple[AlertFile, str]]) -> list[StatusRow]:
    """Turn (alert file, title) pairs into rows; only the current degradation is failing."""
    current = alert_files.current_failure(item for item, _ in files)
    ordered = alert_files.newest_first(item for item, _ in files)[:MAX_FILES]
    title = {item: text for item, text in files}
    return [
        StatusRow(
            source=CI_LOOP,
            name=item.path.name,
            failing=item == current,
            count=1,
            tenants=0,
            last_seen=item.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            detail=title[item],
        )
        for item in ordered
    ]


def worker_rows(summary: Mapping[str, Any], now: datetime) -> list[StatusRow]:
    """Turn the Worker's `/_status` document into rows; a check seen in the last 24 h is failing.

    A document of the wrong shape raises ValueError (the caller makes it an UNREAD row).
    """
    try:
        return _worker_rows(summary, now)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"its document does not have the /_status shape ({exc})") from None


def _worker_rows(summary: Mapping[str, Any], now: datetime) -> list[StatusRow]:
    rows = []
    checks = summary.get("checks") or {}
    if not isinstance(checks, Mapping):
        raise TypeError("'checks' is not an object")
    for name, stats in checks.items():
        if not isinstance(stats, Mapping):
            raise TypeError(f"check {name!r} is not an object")
        last = str(stats.get("last_seen", ""))
        try:
            seen = datetime.strptime(last, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            recent = now - seen <= RECENT
        except ValueError:
            recent = True
        tenants = stats.get("tenant_count", len(stats.get("tenants") or []))
        rows.append(
            StatusRow(
                source=FIELD,
                name=str(name),
                failing=recent,
                count=int(stats.get("count", 0)),
                tenants=int(tenants),
                last_seen=last,
                detail=str(stats.get("last_message", "")),
            )
        )
    silent_tenants = summary.get("silent_tenants") or []
    if not isinstance(silent_tenants, list):
        raise TypeError("'silent_tenants' is not a list")
    for silent in silent_tenants:
        if isinstance(silent, Mapping):
            rows.append(
                StatusRow(
                    source=FIELD,
                    name=f"silent tenant {silent.get('tenant', '?')}",
                    failing=True,
                    count=0,
                    tenants=1,
                    last_seen=str(silent.get("last_seen", "")),
                    detail=f"no heartbeat for {int(silent.get('silent_for_s', 0)) // 3600} h",
                )
            )
    return rows


def _rank(row: StatusRow) -> int:
    if row.failing:
        return 0 if row.source == CI_LOOP else 2
    return 1 if row.unread else 3


def order_rows(rows: Sequence[StatusRow]) -> list[StatusRow]:
    """ci-loop failures first, then unreadable sources, field failures, the rest; newest first."""
    by_time = sorted(rows, key=lambda r: r.last_seen, reverse=True)
    return sorted(by_time, key=_rank)


def exit_code(rows: Sequence[StatusRow]) -> ExitCode:
    """3 when a source could not be read, else 1 while anything is failing, else 0."""
    if any(r.unread for r in rows):
        return ExitCode.UNMEASURED
    return ExitCode.FAILED if any(r.failing for r in rows) else ExitCode.OK


def verdict(rows: Sequence[StatusRow]) -> str:
    """One line: how many are failing and how many sources could not be read."""
    failing, unread = sum(r.failing for r in rows), sum(r.unread for r in rows)
    parts = [f"{failing} failing"] if failing else []
    if unread:
        parts.append(f"{unread} source{'s' if unread > 1 else ''} unreadable")
    return ", ".join(parts) or "all clear"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}
p.summary{margin:.2em 0 1em}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
tr.fail td.state{background:#fbd5d5;color:#8a1111;font-weight:bold}
tr.unread td.state{background:#fde9c4;color:#7a4b00;font-weight:bold}
tr.ok td.state{background:#d9f2dc;color:#11601d}
.note{color:#666}
"""


def _row_class(row: StatusRow) -> str:
    return "fail" if row.failing else "unread" if row.unread else "ok"


def render_html(rows: Sequence[StatusRow], *, generated_at: datetime) -> str:
    """Return the self-contained "Sync status" page (no scripts, no external resources)."""
    ordered = order_rows(rows)
    esc = html.escape
    body = []
    for row in ordered:
        cls = _row_class(row)
        cells = row.cells()
        tds = [f'<td class="state">{esc(cells[0])}</td>']
        tds += [f"<td>{esc(c)}</td>" for c in cells[1:]]
        body.append(f'<tr class="{cls}" data-status="{cls}">{"".join(tds)}</tr>')
    header = "".join(f"<th>{esc(h)}</th>" for h in HEADERS)
    empty = f'<tr><td colspan="7" class="note">{NOTHING}</td></tr>'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>Sync status</title><style>{_CSS}</style></head><body>"
        f'<h1>Sync status</h1><p class="summary" id="summary">{esc(verdict(ordered))} &middot; '
        f"generated {esc(generated_at.strftime('%Y-%m-%d %H:%M:%S UTC'))}</p>"
        f'<table id="checks"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body) or empty}</tbody></table></body></html>\n"
    )


def render_text(rows: Sequence[StatusRow]) -> str:
    """Return the terminal table (or the one line saying both sources were read and are empty)."""
    from tabulate import tabulate

    ordered = order_rows(rows)
    if not ordered:
        return NOTHING
    table = tabulate(
        [r.cells() for r in ordered], headers=HEADERS, tablefmt="simple", disable_numparse=True
    )
    return f"{table}\n{verdict(ordered)}"


# --- edges -----------------------------------------------------------------------------------


def alert_file_rows(alerts_dir: Path) -> list[StatusRow]:
    """Rows for the ci-loop alert files, or one UNREAD row when the directory cannot be read."""
    try:
        found = alert_files.scan(alerts_dir)
    except AlertDirError as exc:
        return [unread_row(CI_LOOP, "alert files", str(exc))]
    return file_rows(alert_files.titles(found[:MAX_FILES]) + [(f, "") for f in found[MAX_FILES:]])


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


def status_rows(settings: Settings, now: datetime) -> list[StatusRow]:
    """Rows for the Worker's `/_status`, or one UNREAD row saying why it could not be read."""
    what = "Worker /_status"
    try:
        document = fetch_status(settings)
    except SyncCIError as exc:
        return [unread_row(FIELD, what, str(exc))]
    try:
        return worker_rows(document, now)
    except ValueError as exc:
        return [unread_row(FIELD, what, f"{settings.worker_url}/_status answered, but {exc}")]


def collect(settings: Settings, alerts_dir: Path, now: datetime) -> list[StatusRow]:
    """Gather rows from both sources; a source that cannot be read becomes an UNREAD row."""
    return alert_file_rows(alerts_dir) + status_rows(settings, now)


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
    from sync_ci.alerts import field_settings
    from sync_ci.config import load_settings

    now = now or datetime.now(UTC)
    settings = field_settings(load_settings(config=config, target=target, check_remote=False))
    rows = collect(settings, alerts_dir, now)
    print(render_text(rows))
    if html_path:
        try:
            write_page(Path(html_path), render_html(rows, generated_at=now))
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
        help="where ci-loop writes its alert files (default %(default)s)",
    )
    parser.add_argument(
        "--html", metavar="PATH", default="", help="also write the Sync status page"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return command(
        config=args.config, target=args.target, alerts_dir=args.alerts_dir, html_path=args.html
    )
