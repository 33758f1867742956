"""Inline SVG charts for the self-contained pages: timelines, lanes, bars and percentile curves.

Pure functions from plain values to SVG text: no script, no external resource, every label passed
through `text()` (secrets masked, control characters made visible, HTML-escaped). Each mark
carries a class naming what it is (`cell fail`, `threshold`, `curve`) so a page can be checked for
structure, and its colour as an attribute so a screenshot shows it whatever the stylesheet.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sync_ci.redaction import clean

# Fills by state: the timeline's cells, the lanes' marks, the bars.
COLOURS = {
    "pass": "#2da44e",
    "recovered": "#2da44e",
    "fail": "#cf222e",
    "unmeasured": "#d4a72c",
    "not-run": "#8c959f",
    "ok": "#2da44e",
    "alert": "#cf222e",
    "span": "#f2a7ad",
    "silent": "#cf222e",
    "quiet": "#2da44e",
}
MARKER = "#0550ae"  # recovered passes and threshold lines
THRESHOLD = "#8250df"
# One colour per curve, told apart by colour-blind readers too (Okabe-Ito).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")
CSS = """
svg.chart{display:block;max-width:100%;height:auto;margin:.3em 0 1em;font:11px system-ui,sans-serif}
svg.chart text{fill:#333}
svg.chart .axis{stroke:#999;stroke-width:1}
svg.chart .grid{stroke:#e5e5e5;stroke-width:1}
.legend{display:flex;flex-wrap:wrap;gap:.2em 1em;margin:0 0 .6em;padding:0;list-style:none}
.legend li::before{content:"";display:inline-block;width:.9em;height:.9em;margin-right:.3em;
vertical-align:-.1em;background:var(--c)}
"""


# The pages fetch nothing: no script, no connection, images only from data: URLs.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def page(title: str, css: str, body: str) -> str:
    """Return a whole self-contained HTML page; `title` is escaped, `body` is markup."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{text(title)}</title><style>{css}{CSS}</style></head><body>"
        f"{body}</body></html>\n"
    )


def text(value: object) -> str:
    """Return `value` as one line for SVG or HTML: secrets masked, controls shown, escaped."""
    return html.escape(clean(str(value), keep_newlines=False))


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if math.isfinite(value) else "0"


def svg(width: int, height: int, body: Sequence[str], *, label: str, chart_id: str) -> str:
    """Wrap chart marks in an `<svg>` element with an accessible label."""
    return (
        f'<svg class="chart" id="{text(chart_id)}" role="img" aria-label="{text(label)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{text(label)}</title>{''.join(body)}</svg>"
    )


def legend(entries: Sequence[tuple[str, str]]) -> str:
    """Return an HTML legend of (label, colour) pairs."""
    items = "".join(
        f'<li style="--c:{colour}">{text(label)}</li>' for label, colour in entries if label
    )
    return f'<ul class="legend">{items}</ul>'


def _line(x1: float, y1: float, x2: float, y2: float, cls: str, extra: str = "") -> str:
    return (
        f'<line class="{cls}" x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}"'
        f"{extra}/>"
    )


def _label(x: float, y: float, value: object, *, anchor: str = "start", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text{klass} x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}">{text(value)}</text>'


# --- time axes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeAxis:
    """Maps times between `start` and `end` onto x pixels from `left` to `right`."""

    start: datetime
    end: datetime
    left: float
    right: float

    def x(self, at: datetime) -> float:
        """Return the x of `at`, clamped to the axis."""
        span = max((self.end - self.start).total_seconds(), 1.0)
        share = (at - self.start).total_seconds() / span
        return self.left + min(max(share, 0.0), 1.0) * (self.right - self.left)

    def day_ticks(self) -> list[datetime]:
        """Return each UTC midnight within the axis."""
        first = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        ticks = []
        day = first + timedelta(days=1) if first < self.start else first
        while day <= self.end:
            ticks.append(day)
            day += timedelta(days=1)
        return ticks

    def grid(self, top: float, bottom: float) -> list[str]:
        """Return day lines with their dates below `bottom`."""
        marks = []
        for day in self.day_ticks():
            x = self.x(day)
            marks.append(_line(x, top, x, bottom, "grid"))
            marks.append(_label(x + 2, bottom + 13, day.strftime("%b %d")))
        marks.append(_line(self.left, bottom, self.right, bottom, "axis"))
        return marks


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    """One event on a timeline: a pass, an alert file."""

    at: datetime
    state: str
    title: str
    marked: bool = False


def timeline(
    cells: Sequence[Cell], *, start: datetime, end: datetime, chart_id: str, label: str
) -> str:
    """Draw one row of cells, each at its time and coloured by state; marked cells get a flag."""
    width, left, right, top, height = 960, 10, 950, 22, 34
    axis = TimeAxis(start=start, end=end, left=left, right=right)
    days = max((end - start).total_seconds() / 86400, 1 / 24)
    cell_w = min(max((right - left) / (days * 4) - 2, 4.0), 40.0)  # a 6-hourly pass fills its slot
    body = axis.grid(top - 16, top + height + 2)
    for cell in cells:
        if not start <= cell.at <= end:
            continue
        x = min(max(axis.x(cell.at) - cell_w / 2, left), right - cell_w)
        colour = COLOURS.get(cell.state, COLOURS["not-run"])
        classes = f"cell {cell.state}" + (" marked" if cell.marked else "")
        body.append(
            f'<rect class="{text(classes)}" data-at="{text(cell.at.isoformat())}" '
            f'x="{_num(x)}" y="{top}" width="{_num(cell_w)}" height="{height}" '
            f'fill="{colour}"><title>{text(cell.title)}</title></rect>'
        )
        if cell.marked:
            cx = x + cell_w / 2
            body.append(
                f'<path class="flag" d="M{_num(cx - 5)} {top - 2}L{_num(cx + 5)} {top - 2}'
                f'L{_num(cx)} {top - 10}Z" fill="{MARKER}"/>'
            )
    return svg(width, top + height + 20, body, label=label, chart_id=chart_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Lane:
    """One row of a lane chart: a name, point marks and spans over time."""

    name: str
    points: Sequence[Cell] = ()
    spans: Sequence[tuple[datetime, datetime, str]] = ()
    note: str = ""


def lanes(
    rows: Sequence[Lane], *, start: datetime, end: datetime, chart_id: str, label: str
) -> str:
    """Draw one lane per row: spans (first to last seen) as bars, points as dots."""
    width, name_w, right, row_h, top = 960, 220, 900, 24, 8
    axis = TimeAxis(start=start, end=end, left=name_w, right=right)
    bottom = top + row_h * max(len(rows), 1)
    body = axis.grid(top, bottom)
    for index, row in enumerate(rows):
        y = top + index * row_h
        mid = y + row_h / 2
        marks = [_label(4, mid + 4, row.name[:34], cls="lane-name")]
        marks.append(_line(name_w, mid, right, mid, "grid"))
        for first, last, title in row.spans:
            if last < start or first > end:
                continue
            x1, x2 = axis.x(first), axis.x(last)
            marks.append(
                f'<rect class="span" x="{_num(x1)}" y="{_num(y + 6)}" '
                f'width="{_num(max(x2 - x1, 3))}" height="{row_h - 12}" rx="3" '
                f'fill="{COLOURS["span"]}"><title>{text(title)}</title></rect>'
            )
        for point in row.points:
            if not start <= point.at <= end:
                continue
            colour = COLOURS.get(point.state, COLOURS["alert"])
            marks.append(
                f'<circle class="point {text(point.state)}" cx="{_num(axis.x(point.at))}" '
                f'cy="{_num(mid)}" r="5" fill="{colour}"><title>{text(point.title)}</title>'
                "</circle>"
            )
        if row.note:
            marks.append(_label(right + 6, mid + 4, row.note[:12], cls="lane-note"))
        body.append(f'<g class="lane" data-name="{text(row.name)}">{"".join(marks)}</g>')
    return svg(width, bottom + 20, body, label=label, chart_id=chart_id)


# --- bars ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One horizontal bar: a name, a value and its state."""

    name: str
    value: float
    state: str
    caption: str = ""
    title: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """A threshold drawn as a marked vertical or horizontal line."""

    label: str
    value: float
    threshold_id: str = ""


def bars(items: Sequence[Bar], *, limit: Limit | None, unit: str, chart_id: str, label: str) -> str:
    """Draw one bar per item on a shared linear scale, the limit as a marked line."""
    width, name_w, right, row_h, top = 960, 220, 860, 22, 8
    high = max([i.value for i in items if math.isfinite(i.value)] + [limit.value if limit else 0])
    high = high * 1.1 or 1.0
    bottom = top + row_h * max(len(items), 1)

    def x(value: float) -> float:
        bounded = min(value, high) if math.isfinite(value) else high
        return name_w + max(bounded, 0.0) / high * (right - name_w)

    body = [_line(name_w, bottom, right, bottom, "axis")]
    for index, item in enumerate(items):
        y = top + index * row_h
        colour = COLOURS.get(item.state, COLOURS["alert"])
        body.append(
            f'<g class="bar {text(item.state)}" data-name="{text(item.name)}">'
            + _label(4, y + row_h / 2 + 4, item.name[:34])
            + f'<rect x="{name_w}" y="{_num(y + 4)}" width="{_num(x(item.value) - name_w)}" '
            f'height="{row_h - 8}" fill="{colour}">'
            f"<title>{text(item.title or item.caption)}</title></rect>"
            + _label(x(item.value) + 4, y + row_h / 2 + 4, item.caption or _num(item.value))
            + "</g>"
        )
    if limit is not None:
        lx = round(x(limit.value))  # whole pixels: a crisp line in the limit's own colour
        body.append(
            f'<g class="threshold" data-threshold="{text(limit.threshold_id or limit.label)}">'
            + _line(
                lx, top - 4, lx, bottom, "threshold-line", f' stroke="{THRESHOLD}" stroke-width="2"'
            )
            + _label(
                lx,
                bottom + 14,
                f"{limit.label} {_num(limit.value)} {unit}".strip(),
                anchor="middle",
            )
            + "</g>"
        )
    return svg(width, bottom + 22, body, label=label, chart_id=chart_id)


# --- percentile curves -----------------------------------------------------------------------

# The x axis of an HdrHistogram percentile plot: 1/(1-p), logarithmic, so the tail gets room.
PERCENTILE_TICKS = (0.0, 90.0, 99.0, 99.9, 99.99)
MAX_PERCENTILE = 99.999


def percentile_position(percentile: float) -> float:
    """Return log10(1 / (1 - p)) for p in percent, capped at 99.999%."""
    share = min(max(percentile, 0.0), MAX_PERCENTILE) / 100.0
    return math.log10(1.0 / (1.0 - share))


def curve_percentiles(count: int) -> list[float]:
    """Return the percentiles to sample a curve at: dense along the log axis, up to the data."""
    top = min(MAX_PERCENTILE, 100.0 * (1.0 - 1.0 / max(count, 1))) if count > 1 else 50.0
    steps = [100.0 * (1.0 - 10 ** (-k / 20)) for k in range(0, 101)]
    return [p for p in steps if p <= top] + ([top] if top not in steps else [])


@dataclass(frozen=True, slots=True, kw_only=True)
class Curve:
    """One distribution: (percentile, milliseconds) points, lowest percentile first."""

    name: str
    points: Sequence[tuple[float, float]]
    count: int = 0
    colour: str = ""
    failing: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def percentile_chart(
    curves: Sequence[Curve], limits: Sequence[Limit], *, chart_id: str, label: str
) -> str:
    """Draw latency by percentile (log-ish percentile axis) with each limit a marked line."""
    width, left, right, top, bottom = 960, 60, 940, 14, 300
    values = [ms for c in curves for _, ms in c.points if math.isfinite(ms)]
    high = max(values + [lim.value for lim in limits] + [1.0]) * 1.08
    x_high = percentile_position(MAX_PERCENTILE)

    def px(percentile: float) -> float:
        return left + percentile_position(percentile) / x_high * (right - left)

    def py(ms: float) -> float:
        return bottom - min(max(ms, 0.0), high) / high * (bottom - top)

    body = [_line(left, bottom, right, bottom, "axis"), _line(left, top, left, bottom, "axis")]
    for tick in PERCENTILE_TICKS:
        x = px(tick)
        body.append(_line(x, top, x, bottom, "grid"))
        body.append(_label(x, bottom + 14, f"{tick:g}%", anchor="middle"))
    for share in (0.25, 0.5, 0.75, 1.0):
        y = py(high / 1.08 * share)
        body.append(_line(left, y, right, y, "grid"))
        body.append(_label(left - 4, y + 4, f"{_num(high / 1.08 * share)} ms", anchor="end"))
    for limit in limits:
        y = round(py(limit.value))
        body.append(
            f'<g class="threshold" data-threshold="{text(limit.threshold_id or limit.label)}">'
            + _line(
                left,
                y,
                right,
                y,
                "threshold-line",
                f' stroke="{THRESHOLD}" stroke-width="2" stroke-dasharray="8 3"',
            )
            + _label(right - 4, y - 4, f"{limit.label} {_num(limit.value)} ms", anchor="end")
            + "</g>"
        )
    for index, curve in enumerate(curves):
        colour = curve.colour or PALETTE[index % len(PALETTE)]
        points = " ".join(f"{_num(px(p))},{_num(py(ms))}" for p, ms in curve.points)
        data = "".join(f' data-{text(k)}="{text(v)}"' for k, v in curve.extra.items())
        state = " failing" if curve.failing else ""
        body.append(
            f'<g class="curve{state}" data-name="{text(curve.name)}" '
            f'data-count="{curve.count}"{data}>'
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{text(curve.name)}</title></polyline></g>"
        )
    body.append(_label(left + (right - left) / 2, bottom + 30, "percentile", anchor="middle"))
    return svg(width, bottom + 36, body, label=label, chart_id=chart_id)
