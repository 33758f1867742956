"""The "Sync status" page, the one HTML renderer of status: the ci-loop pass timeline, alerts per
check, the tenants gone silent, then the rows as a table. `sync-ci status --html` writes it and
the reference Worker serves it for `GET /_status` with `Accept: text/html`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sync_ci import charts, pass_history
from sync_ci.clock import parse_utc_stamp, utc_stamp
from sync_ci.pass_history import History

if TYPE_CHECKING:
    pass
from sync_ci.field.status_rows import (
    DAYS,
    HEADERS,
    NOTHING,
    Picture,
    StatusRow,
    order_rows,
    verdict,
)

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
        return parse_utc_stamp(str(value))
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
    title = f"{utc_stamp(record.at)} {what}"
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
    for record in picture.history.records if picture.history else ():
        for phase in record.failing:
            title = f"{utc_stamp(record.at)} ci-loop {phase} {record.outcome}"
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
    found = picture.worker.get("reporting_tenants") or []
    reporting = [str(name) for name in found] if isinstance(found, list) else []
    count = len(reporting)
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
    if reporting:
        parts.append(_note(f"reporting: {', '.join(reporting)}", "note reporting"))
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
            (
                render_timeline(picture.history, generated_at, picture.days)
                if picture.history
                else ""
            )
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
