"""The gates HTML report, drawn from a result document alone (so merged results draw the same).

Latency by percentile per operation (load) and per region (latency) from the HdrHistograms in
`extra`, each threshold a marked line; the burst's start spread against its limit; the verdict
table. One self-contained page: inline SVG and CSS, no script, no external resource.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sync_ci import alert_files, charts
from sync_ci.errors import UsageError
from sync_ci.gates import histogram

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}
h2{font-size:1.15em;margin:1.4em 0 .2em}
h3{font-size:1em;margin:1em 0 .2em}
.note{color:#666}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
tr.fail td.status,tr.error td.status{background:#fbd5d5;color:#8a1111;font-weight:bold}
tr.pass td.status{background:#d9f2dc;color:#11601d}
tr.skip td.status{background:#eee}
p.verdict.ok{color:#11601d;font-weight:bold}
p.verdict.failed{color:#8a1111;font-weight:bold}
"""


def _esc(value: object) -> str:
    return charts.text(value)


def curve_points(encoded: str) -> tuple[list[tuple[float, float]], int]:
    """Return (percentile, ms) points of an encoded histogram and its count; UsageError if bad."""
    decoded = histogram.decode(encoded)
    count = int(decoded.get_total_count())
    if count == 0:
        return [], 0
    wanted = charts.curve_percentiles(count)
    values = decoded.get_percentile_to_value_dict(wanted)
    return [(p, int(values[p]) / 1000.0) for p in wanted], count


def _threshold(extra: Mapping[str, Any], threshold_id: str, label: str) -> charts.Limit | None:
    table = extra.get("thresholds") or {}
    entry = table.get(threshold_id) if isinstance(table, Mapping) else None
    if not isinstance(entry, Mapping):
        return None
    try:
        value = float(entry["limit"])
    except (KeyError, TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return charts.Limit(label=label, value=value, threshold_id=threshold_id)


def _failing_ids(document: Mapping[str, Any]) -> set[str]:
    return {
        str(r.get("id"))
        for r in document.get("results") or []
        if isinstance(r, Mapping) and r.get("status") in ("fail", "error")
    }


def _curve(
    name: str, encoded: object, *, failing: bool, notes: list[str], **extra: str
) -> charts.Curve | None:
    if not isinstance(encoded, str) or not encoded:
        notes.append(f"{name}: no latency recorded")
        return None
    try:
        points, count = curve_points(encoded)
    except UsageError as exc:
        notes.append(f"{name}: histogram unreadable ({exc})")
        return None
    if not points:
        notes.append(f"{name}: no answers measured")
        return None
    return charts.Curve(name=name, points=points, count=count, failing=failing, extra=extra)


def _notes(notes: Sequence[str]) -> str:
    return "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)


def _curve_legend(curves: Sequence[charts.Curve]) -> str:
    entries = [
        (
            f"{c.name} ({c.count} samples){' FAILING' if c.failing else ''}",
            c.colour or charts.PALETTE[i % len(charts.PALETTE)],
        )
        for i, c in enumerate(curves)
    ]
    return charts.legend([*entries, ("threshold", charts.THRESHOLD)])


def render_load(extra: Mapping[str, Any], failing: set[str]) -> str:
    """Return the load section: per phase, one curve per operation; the start spread bars."""
    phases = extra.get("phases") or {}
    if not isinstance(phases, Mapping) or not phases:
        return (
            '<section id="load"><h2>Load gate</h2><p class="note">no phase measured</p></section>'
        )
    parts = ['<section id="load"><h2>Load gate: latency by percentile, per operation</h2>']
    spreads: list[charts.Bar] = []
    for phase_name, phase in sorted(phases.items()):
        if not isinstance(phase, Mapping):
            continue
        notes: list[str] = []
        ops = phase.get("ops") or {}
        curves = []
        for op_name, op in sorted(ops.items()) if isinstance(ops, Mapping) else []:
            if not isinstance(op, Mapping):
                continue
            curve = _curve(
                str(op_name),
                op.get("histogram"),
                failing=f"load.{phase_name}.{op_name}.p95_ms" in failing,
                notes=notes,
                phase=str(phase_name),
            )
            if curve is not None:
                curves.append(curve)
        limits = [
            limit
            for curve in curves
            if (limit := _threshold(extra, f"load.{curve.name}.p95_ms", f"{curve.name} p95 limit"))
        ]
        parts.append(f'<h3 id="phase-{_esc(phase_name)}">{_esc(phase_name)} phase</h3>')
        parts.append(_curve_legend(curves))
        parts.append(
            charts.percentile_chart(
                curves,
                limits,
                chart_id=f"load-{phase_name}",
                label=f"load {phase_name}: latency by percentile per operation",
            )
        )
        parts.append(_notes(notes))
        spread = phase.get("start_spread_ms")
        if isinstance(spread, int | float) and phase_name == "burst":
            state = "fail" if f"load.{phase_name}.start_spread_ms" in failing else "pass"
            caption = f"{float(spread):.1f} ms over {phase.get('processes', 1)} process(es)"
            spreads.append(
                charts.Bar(name=str(phase_name), value=float(spread), state=state, caption=caption)
            )
    if spreads:
        parts.append('<h3 id="start-spread">Burst start spread</h3>')
        parts.append(
            '<p class="note">time between the first and the last request of the burst leaving '
            "the client: a burst spread over seconds is not concurrent</p>"
        )
        parts.append(
            charts.bars(
                spreads,
                limit=_threshold(extra, "load.start_spread_ms", "limit"),
                unit="ms",
                chart_id="start-spread",
                label="burst start spread against its limit",
            )
        )
    parts.append("</section>")
    return "".join(parts)


def render_latency(extra: Mapping[str, Any], failing: set[str]) -> str:
    """Return the latency section: one cold-read curve per region, p95 and p99 limits marked."""
    regions = extra.get("regions") or {}
    parts = ['<section id="latency"><h2>Latency gate: cold reads by percentile, per region</h2>']
    notes: list[str] = []
    curves = []
    for name, region in sorted(regions.items()) if isinstance(regions, Mapping) else []:
        if not isinstance(region, Mapping):
            continue
        colo = str(region.get("colo", ""))
        label = f"{name} ({colo})" if colo else str(name)
        if region.get("unreachable"):
            notes.append(f"{label}: unreachable: {region.get('unreachable')}")
            continue
        curve = _curve(
            label,
            region.get("histogram"),
            failing=f"latency.region.{name}" in failing,
            notes=notes,
            region=str(name),
        )
        if curve is not None:
            curves.append(curve)
    limits = [
        limit
        for threshold_id, label in (
            ("latency.region.p95_ms", "p95 limit"),
            ("latency.region.p99_ms", "p99 limit"),
        )
        if (limit := _threshold(extra, threshold_id, label)) is not None
    ]
    if not regions:
        notes.append("no region measured")
    parts.append(_curve_legend(curves))
    parts.append(
        charts.percentile_chart(
            curves,
            limits,
            chart_id="latency-regions",
            label="cold-KV read latency by percentile per region",
        )
    )
    parts.append(_notes(notes) + "</section>")
    return "".join(parts)


def _row(result: Mapping[str, Any]) -> str:
    status = str(result.get("status", "error"))
    cls = status if status in ("pass", "fail", "skip", "error") else "error"
    cells = [
        status.upper(),
        result.get("id", ""),
        result.get("title", ""),
        result.get("detail", ""),
    ]
    tds = f'<td class="status">{_esc(cells[0])}</td>' + "".join(
        f"<td>{_esc(c)}</td>" for c in cells[1:]
    )
    return f'<tr class="{cls}" data-id="{_esc(result.get("id", ""))}">{tds}</tr>'


def render_verdicts(document: Mapping[str, Any]) -> str:
    """Return the verdict table: every result row, failing rows first."""
    results = [r for r in document.get("results") or [] if isinstance(r, Mapping)]
    ordered = sorted(results, key=lambda r: r.get("status") not in ("fail", "error"))
    header = "".join(f"<th>{h}</th>" for h in ("status", "id", "title", "detail"))
    rows = "".join(_row(r) for r in ordered)
    empty = '<tr><td colspan="4" class="note">no results</td></tr>'
    return (
        '<section id="verdicts"><h2>Verdicts</h2>'
        f'<table id="verdict-table"><thead><tr>{header}</tr></thead>'
        f"<tbody>{rows or empty}</tbody></table></section>"
    )


def gate_extras(document: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Return (gate, extra) for each gate the document holds (`gate all` holds several)."""
    extra = document.get("extra") or {}
    if not isinstance(extra, Mapping):
        return []
    if extra.get("gate") == "all":
        gates = extra.get("gates") or {}
        inner = (
            [g for g in gates.values() if isinstance(g, Mapping)]
            if isinstance(gates, Mapping)
            else []
        )
        return [(str(g.get("gate")), g) for g in inner]
    return [(str(extra.get("gate")), extra)]


def render_report(document: Mapping[str, Any]) -> str:
    """Return the self-contained gates report page for one result document."""
    failing = _failing_ids(document)
    sections = []
    for gate, extra in gate_extras(document):
        if gate == "load":
            sections.append(render_load(extra, failing))
        elif gate == "latency":
            sections.append(render_latency(extra, failing))
    ok = bool(document.get("ok")) and not failing
    counts = document.get("counts") or {}
    tally = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("pass", "fail", "skip", "error"))
    unmeasured = (document.get("extra") or {}).get("unmeasured")
    word = "COULD NOT MEASURE" if unmeasured else "PASSED" if ok else "FAILED"
    merged = (document.get("extra") or {}).get("merged_from") or []
    merged_note = (
        f'<p class="note" id="merged">merged from {_esc(", ".join(map(str, merged)))}</p>'
        if isinstance(merged, list) and merged
        else ""
    )
    suite = document.get("suite", "gate")
    try:
        duration = f"{float(document.get('duration_s') or 0):.2f}"
    except (TypeError, ValueError):
        duration = "?"
    title = f"{suite} on {document.get('target', '?')}"
    return charts.page(
        f"Gate report: {title}",
        _CSS,
        f"<h1>Gate report: {_esc(title)}</h1>"
        f'<p class="verdict {"ok" if ok else "failed"}" id="verdict">{word}: {_esc(tally)}</p>'
        f'<p class="note">started {_esc(document.get("started_at", "?"))}, '
        f"sha {_esc(document.get('sha', '') or '-')}, mode {_esc(document.get('mode', ''))}, "
        f"{html.escape(duration)} s</p>"
        f"{merged_note}{''.join(sections)}{render_verdicts(document)}",
    )


def write_report(path: Path, document: Mapping[str, Any]) -> None:
    """Write the page atomically and owner-only (it quotes failure details); UsageError if not."""
    try:
        alert_files.write_owner_only(path, render_report(document).encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot write --html {path}: {exc.strerror or exc}") from None
