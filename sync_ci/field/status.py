"""The status view: ci-loop alert files and the Worker's `/_status`, as a table or a page.

The page adds pictures above the table: the ci-loop pass history as a timeline, alerts per check
over time (alert files, failing phases, the Worker's alert rows) and the tenants gone silent.

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

from sync_ci import alert_files, charts, pass_history
from sync_ci.alert_files import AlertDirError, AlertFile
from sync_ci.errors import ExitCode, SettingsError, SyncCIError
from sync_ci.pass_history import History
from sync_ci.redaction import clean

if TYPE_CHECKING:
    from sync_ci.config import Settings

DEFAULT_ALERTS_DIR = alert_files.DEFAULT_DIR
RECENT = timedelta(hours=24)
MAX_FILES = 20
CI_LOOP = "ci-loop"
FIELD = "field"
NOTHING = "no alerts recorded"
DAYS = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class Picture:
    """What the page draws above the table: pass history, alert files, the `/_status` document."""

    history: History
    files: tuple[AlertFile, ...] = ()
    worker: Mapping[str, Any] | None = None
    worker_problem: str = ""
    days: int = DAYS


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
h2{font-size:1.1em;margin:1.2em 0 .2em}
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


def _parse_time(value: object) -> datetime | None:
    try:
        return datetime.strptime(str(value), pass_history.TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{charts.text(text)}</p>'


def _cell_for(record: pass_history.PassRecord) -> charts.Cell:
    state = "recovered" if record.recovered else record.outcome
    what = {
        "pass": "passed",
        "recovered": "passed and recovered the failure before it",
        "fail": "failed: " + (", ".join(record.failing) or "unknown"),
        "unmeasured": "could not measure: " + (", ".join(record.failing) or "unreachable"),
        "not-run": "could not run",
    }[state]
    title = f"{pass_history.format_time(record.at)} {what}"
    return charts.Cell(at=record.at, state=state, title=title, marked=record.recovered)


def render_timeline(history: History, now: datetime, days: int = DAYS) -> str:
    """Return the "ci-loop passes" section: one cell per pass over the last `days` days."""
    start = now - timedelta(days=days)
    shown = pass_history.within(history.records, start, now)
    parts = [f'<section id="passes"><h2>ci-loop passes, last {days} days</h2>']
    if history.problem:
        parts.append(_note(history.problem, "note history-missing"))
    elif not shown:
        parts.append(_note(f"no ci-loop pass recorded in the last {days} days"))
    if shown:
        tally = {state: 0 for state in ("pass", "fail", "unmeasured", "not-run")}
        for record in shown:
            tally[record.outcome] += 1
        recovered = sum(r.recovered for r in shown)
        summary = (
            f"{len(shown)} passes: {tally['pass']} passed ({recovered} recovered), "
            f"{tally['fail']} failed, {tally['unmeasured']} could not measure, "
            f"{tally['not-run']} could not run"
        )
        parts.append(_note(summary, "note tally"))
        parts.append(
            charts.legend(
                [
                    ("passed", charts.COLOURS["pass"]),
                    ("failed", charts.COLOURS["fail"]),
                    ("recovered (flagged)", charts.MARKER),
                    ("could not measure", charts.COLOURS["unmeasured"]),
                    ("could not run", charts.COLOURS["not-run"]),
                ]
            )
        )
        parts.append(
            charts.timeline(
                [_cell_for(r) for r in shown],
                start=start,
                end=now,
                chart_id="pass-timeline",
                label=f"ci-loop passes: {summary}",
            )
        )
    if history.skipped:
        parts.append(_note(f"{history.skipped} history lines could not be read and are left out"))
    parts.append("</section>")
    return "".join(parts)


def alert_lanes(picture: Picture) -> list[charts.Lane]:
    """Return one lane per check: the alert files, each failing ci-loop phase, each field check."""
    lanes: list[charts.Lane] = []
    if picture.files:
        points = [
            charts.Cell(
                at=item.at,
                state="recovered" if item.kind == "recovered" else "fail",
                title=f"{item.path.name}",
            )
            for item in picture.files
        ]
        lanes.append(charts.Lane(name="ci-loop alert files", points=points))
    by_phase: dict[str, list[charts.Cell]] = {}
    for record in picture.history.records:
        for phase in record.failing:
            title = f"{pass_history.format_time(record.at)} ci-loop {phase} {record.outcome}"
            by_phase.setdefault(phase, []).append(
                charts.Cell(at=record.at, state="fail", title=title)
            )
    for phase, points in sorted(by_phase.items()):
        lanes.append(charts.Lane(name=f"ci-loop: {phase}", points=points, note=f"x{len(points)}"))
    checks = (picture.worker or {}).get("checks") or {}
    if isinstance(checks, Mapping):
        for name, stats in checks.items():
            if not isinstance(stats, Mapping):
                continue
            first, last = _parse_time(stats.get("first_seen")), _parse_time(stats.get("last_seen"))
            if last is None:
                continue
            count = stats.get("count", 0)
            tenants = stats.get("tenant_count", 0)
            title = (
                f"{name}: {count} alerts from {tenants} tenants, first {stats.get('first_seen')}, "
                f"last {stats.get('last_seen')}: {stats.get('last_message', '')}"
            )
            lanes.append(
                charts.Lane(
                    name=f"field: {name}",
                    spans=[(first or last, last, title)],
                    points=[charts.Cell(at=last, state="alert", title=title)],
                    note=f"x{count}",
                )
            )
    return lanes


def render_alerts(picture: Picture, now: datetime) -> str:
    """Return the "alerts per check" section over the last `picture.days` days."""
    start = now - timedelta(days=picture.days)
    lanes = alert_lanes(picture)
    visible = [
        lane
        for lane in lanes
        if any(start <= p.at <= now for p in lane.points)
        or any(last >= start for _, last, _ in lane.spans)
    ]
    parts = [f'<section id="alerts"><h2>Alerts per check, last {picture.days} days</h2>']
    if picture.worker is None:
        parts.append(_note(f"Worker /_status not read: {picture.worker_problem}", "note unread"))
    if visible:
        parts.append(
            charts.legend(
                [
                    ("failure (ci-loop) / last field alert", charts.COLOURS["fail"]),
                    ("recovery note", charts.COLOURS["recovered"]),
                    ("field alerts, first to last seen", charts.COLOURS["span"]),
                ]
            )
        )
        parts.append(
            charts.lanes(
                visible,
                start=start,
                end=now,
                chart_id="alert-lanes",
                label=f"alerts per check over the last {picture.days} days",
            )
        )
    else:
        parts.append(_note(f"no alert in the last {picture.days} days"))
    parts.append("</section>")
    return "".join(parts)


def silent_bars(summary: Mapping[str, Any]) -> tuple[list[charts.Bar], float]:
    """Return a bar per tenant gone silent (hours without a heartbeat) and the hours allowed."""
    allowed_h = float(summary.get("silent_after_s", 12 * 3600)) / 3600
    found = summary.get("silent_tenants") or []
    rows = []
    for silent in found if isinstance(found, list) else []:
        if not isinstance(silent, Mapping):
            continue
        hours = float(silent.get("silent_for_s", 0)) / 3600
        rows.append(
            charts.Bar(
                name=str(silent.get("tenant", "?")),
                value=hours,
                state="silent",
                caption=f"{hours:.1f} h",
                title=f"last heard from {silent.get('last_seen', '?')}",
            )
        )
    return sorted(rows, key=lambda bar: -bar.value), allowed_h


def render_silent(picture: Picture) -> str:
    """Return the "tenants gone silent" section from the `/_status` heartbeats."""
    parts = ['<section id="silent"><h2>Tenants gone silent</h2>']
    if picture.worker is None:
        parts.append(_note(f"Worker /_status not read: {picture.worker_problem}", "note unread"))
        return "".join(parts) + "</section>"
    bars, allowed_h = silent_bars(picture.worker)
    reporting = picture.worker.get("reporting_tenants") or []
    count = len(reporting) if isinstance(reporting, list) else 0
    parts.append(
        _note(
            f"{len(bars)} silent for longer than {allowed_h:g} h (two missed 6-hourly doctor "
            f"runs); {count} reporting within it",
            "note tally",
        )
    )
    if bars:
        parts.append(
            charts.bars(
                bars,
                limit=charts.Limit(label="allowed", value=allowed_h, threshold_id="silent_after"),
                unit="h",
                chart_id="silent-tenants",
                label="hours since each silent tenant's last heartbeat",
            )
        )
    parts.append("</section>")
    return "".join(parts)


def render_html(
    rows: Sequence[StatusRow], *, generated_at: datetime, picture: Picture | None = None
) -> str:
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
    pictures = ""
    if picture is not None:
        pictures = (
            render_timeline(picture.history, generated_at, picture.days)
            + render_alerts(picture, generated_at)
            + render_silent(picture)
            + "<h2>Checks</h2>"
        )
    return charts.page(
        "Sync status",
        _CSS,
        f'<h1>Sync status</h1><p class="summary" id="summary">{esc(verdict(ordered))} &middot; '
        f"generated {esc(generated_at.strftime('%Y-%m-%d %H:%M:%S UTC'))}</p>"
        f"{pictures}"
        f'<table id="checks"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body) or empty}</tbody></table>",
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
    from sync_ci.config import load_settings
    from sync_ci.field.alerts import field_settings

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
