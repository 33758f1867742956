"""The status view: recent ci-loop alert files and the Worker's `/_status`, as a table or a page."""

from __future__ import annotations

import argparse
import html
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.errors import ExitCode, SettingsError, SyncCIError

if TYPE_CHECKING:
    from sync_ci.config import Settings

DEFAULT_ALERTS_DIR = Path("state/log/alerts")
RECENT = timedelta(hours=24)
MAX_FILES = 20
FILE_RE = re.compile(r"^sync-(degraded|recovered)-(\d{8}T\d{6}Z)\.md$")


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRow:
    """One line of the view: a schedule-time alert file or a field-time check."""

    source: str
    name: str
    failing: bool
    count: int
    tenants: int
    last_seen: str
    detail: str

    def cells(self) -> list[str]:
        """Render as table cells."""
        state = "FAIL" if self.failing else "ok"
        return [
            state,
            self.source,
            self.name,
            str(self.count),
            str(self.tenants),
            self.last_seen,
            self.detail,
        ]


HEADERS = ("state", "source", "check", "count", "tenants", "last seen", "detail")


# --- pure ------------------------------------------------------------------------------------


def parse_file_time(name: str) -> datetime | None:
    """Return the UTC time in a `sync-degraded-20240101T000000Z.md` name, or None."""
    match = FILE_RE.match(name)
    if not match:
        return None
    return datetime.strptime(match.group(2), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def file_rows(files: Sequence[tuple[str, str]], now: datetime) -> list[StatusRow]:
    """Turn (file name, first line) pairs into rows; only the latest degradation can be failing."""
    dated = sorted(
        ((t, n, first) for n, first in files if (t := parse_file_time(n)) is not None), reverse=True
    )
    latest_recovery = next((t for t, n, _ in dated if "recovered" in n), None)
    rows = []
    for when, name, first in dated[:MAX_FILES]:
        degraded = "degraded" in name
        open_issue = (
            degraded
            and now - when <= RECENT
            and (latest_recovery is None or latest_recovery < when)
        )
        rows.append(
            StatusRow(
                source="ci-loop",
                name=name,
                failing=open_issue,
                count=1,
                tenants=0,
                last_seen=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                detail=first.lstrip("# ").strip(),
            )
        )
    return rows


def worker_rows(summary: Mapping[str, Any], now: datetime) -> list[StatusRow]:
    """Turn the Worker's `/_status` document into rows; a check seen in the last 24 h is failing."""
    rows = []
    checks = summary.get("checks") or {}
    for name, stats in checks.items() if isinstance(checks, Mapping) else ():
        if not isinstance(stats, Mapping):
            continue
        last = str(stats.get("last_seen", ""))
        try:
            seen = datetime.strptime(last, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            recent = now - seen <= RECENT
        except ValueError:
            recent = True
        tenants = stats.get("tenant_count", len(stats.get("tenants") or []))
        rows.append(
            StatusRow(
                source="field",
                name=str(name),
                failing=recent,
                count=int(stats.get("count", 0)),
                tenants=int(tenants),
                last_seen=last,
                detail=str(stats.get("last_message", "")),
            )
        )
    for silent in summary.get("silent_tenants") or []:
        if isinstance(silent, Mapping):
            rows.append(
                StatusRow(
                    source="field",
                    name=f"silent tenant {silent.get('tenant', '?')}",
                    failing=True,
                    count=0,
                    tenants=1,
                    last_seen=str(silent.get("last_seen", "")),
                    detail=f"no heartbeat for {int(silent.get('silent_for_s', 0)) // 3600} h",
                )
            )
    return rows


def order_rows(rows: Sequence[StatusRow]) -> list[StatusRow]:
    """Failing first, then most recent first."""
    by_time = sorted(rows, key=lambda r: r.last_seen, reverse=True)
    return sorted(by_time, key=lambda r: not r.failing)


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}
p.summary{margin:.2em 0 1em}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
tr.fail td.state{background:#fbd5d5;color:#8a1111;font-weight:bold}
tr.ok td.state{background:#d9f2dc;color:#11601d}
.note{color:#666}
"""


def render_html(
    rows: Sequence[StatusRow], *, generated_at: datetime, notes: Sequence[str] = ()
) -> str:
    """Return the self-contained "Sync status" page (no scripts, no external resources)."""
    ordered = order_rows(rows)
    failing = sum(r.failing for r in ordered)
    esc = html.escape
    body = []
    for row in ordered:
        cls = "fail" if row.failing else "ok"
        cells = row.cells()
        tds = [f'<td class="state">{esc(cells[0])}</td>']
        tds += [f"<td>{esc(c)}</td>" for c in cells[1:]]
        body.append(f'<tr class="{cls}" data-status="{cls}">{"".join(tds)}</tr>')
    header = "".join(f"<th>{esc(h)}</th>" for h in HEADERS)
    verdict = f"{failing} failing" if failing else "all clear"
    empty = '<tr><td colspan="7" class="note">no alerts recorded</td></tr>'
    note_html = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>Sync status</title><style>{_CSS}</style></head><body>"
        f'<h1>Sync status</h1><p class="summary" id="summary">{esc(verdict)} &middot; '
        f"generated {esc(generated_at.strftime('%Y-%m-%d %H:%M:%S UTC'))}</p>{note_html}"
        f'<table id="checks"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body) or empty}</tbody></table></body></html>\n"
    )


def render_text(rows: Sequence[StatusRow], notes: Sequence[str] = ()) -> str:
    """Return the terminal table."""
    from tabulate import tabulate

    ordered = order_rows(rows)
    table = (
        tabulate(
            [r.cells() for r in ordered], headers=HEADERS, tablefmt="simple", disable_numparse=True
        )
        if ordered
        else "no alerts recorded"
    )
    return "\n".join([table, *notes])


# --- edges -----------------------------------------------------------------------------------


def read_alert_files(alerts_dir: Path, limit: int = 200) -> list[tuple[str, str]]:
    """Return (name, first line) for the newest alert files in `alerts_dir`."""
    if not alerts_dir.is_dir():
        return []
    names = sorted((p for p in alerts_dir.iterdir() if FILE_RE.match(p.name)), reverse=True)
    found = []
    for path in names[:limit]:
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                first = handle.readline().strip()
        except OSError:
            continue
        found.append((path.name, first))
    return found


def fetch_status(settings: Settings) -> dict[str, Any]:
    """GET the Worker's `/_status` with the admin token."""
    from sync_ci.worker import WorkerClient, WorkerTarget, expect

    if not settings.worker_url:
        raise SettingsError("no Worker URL: set [worker] url or SYNC_CI_WORKER_URL")
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


def collect(
    settings: Settings | None, alerts_dir: Path, now: datetime
) -> tuple[list[StatusRow], list[str]]:
    """Gather rows from the alert files and the Worker; problems become notes, not failures."""
    rows = file_rows(read_alert_files(alerts_dir), now)
    notes = [] if alerts_dir.is_dir() else [f"no ci-loop alert directory at {alerts_dir}"]
    if settings is not None:
        try:
            rows += worker_rows(fetch_status(settings), now)
        except SyncCIError as exc:
            notes.append(f"Worker /_status unavailable: {exc}")
    return rows, notes


def write_page(path: Path, text: str) -> None:
    """Write the page atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def command(
    *,
    config: str | None = None,
    target: str | None = None,
    alerts_dir: Path = DEFAULT_ALERTS_DIR,
    html_path: str = "",
    now: datetime | None = None,
) -> int:
    """Print the status table (and write the page); 1 when something is failing."""
    from sync_ci.alerts import field_settings
    from sync_ci.config import load_settings

    now = now or datetime.now(UTC)
    settings = field_settings(load_settings(config=config, target=target, check_remote=False))
    rows, notes = collect(settings, alerts_dir, now)
    print(render_text(rows, notes))
    if html_path:
        try:
            write_page(Path(html_path), render_html(rows, generated_at=now, notes=notes))
        except OSError as exc:
            raise SettingsError(f"cannot write --html {html_path}: {exc.strerror or exc}") from None
        print(f"wrote {html_path}", file=sys.stderr)
    return int(ExitCode.FAILED if any(r.failing for r in rows) else ExitCode.OK)


def add_parser(sub: Any) -> None:
    """Register `status`."""
    parser = sub.add_parser("status", help="recent ci-loop alerts and the Worker's /_status")
    parser.add_argument("--target", choices=("sandbox", "ci", "live"))
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
