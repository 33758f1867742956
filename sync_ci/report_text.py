"""Terminal renderers: the results table, the parity matrix, plain rows, the summary line.

Also the text shaping the other renderers share (controls made visible, one line, a cut) and a
print that survives a stream's encoding. tabulate is imported inside the three functions that use
it, because `import tabulate` costs ~70 ms and doctor's start-up matters.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, TextIO

from sync_ci import redaction
from sync_ci.report import Report, Result, Status

STATUS_LABELS: Mapping[str, str] = {
    "pass": "PASS",
    "fail": "FAIL",
    "skip": "SKIP",
    "error": "ERROR",
}
_ANSI: Mapping[str, str] = {"pass": "32", "fail": "31", "skip": "33", "error": "35"}

# Marks of the parity matrix; `matrix_mark` maps a result status onto them.
MARK_OK, MARK_DIFF, MARK_SKIP, MARK_ERR = "ok", "DIFF", "-", "ERR"
_STATUS_MARKS: Mapping[str, str] = {
    "pass": MARK_OK,
    "fail": MARK_DIFF,
    "skip": MARK_SKIP,
    "error": MARK_ERR,
}

TABLE_DETAIL_CHARS = 80
TABLE_TITLE_CHARS = 60

_WHITESPACE = re.compile(r"\s+")


def matrix_mark(status: Status) -> str:
    """Map a result status onto a parity-matrix mark."""
    return _STATUS_MARKS[status]


def format_duration(seconds: float) -> str:
    """Format seconds for people: '850 ms', '1.23 s', '2 min 05 s'."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def visible_controls(text: str, *, keep_cr: bool = False) -> str:
    """Mask secrets and make control characters visible (CR kept for annotations to encode)."""
    # Escape sequences in a detail (from a server, a file name) must not reach the terminal.
    if keep_cr:
        return "\r".join(redaction.clean(part) for part in redaction.redact(text).split("\r"))
    return redaction.clean(text)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def one_line(text: str, limit: int) -> str:
    """Collapse whitespace (newlines included), make controls visible, cut to `limit` chars."""
    return shorten(visible_controls(_WHITESPACE.sub(" ", text).strip()), limit)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary_line(report: Report) -> str:
    """Say in one line what ran where and how it went."""
    counts = report.counts
    text = (
        f"{report.suite} on {report.target} ({report.mode}): {counts['pass']} passed, "
        f"{counts['fail']} failed, {counts['skip']} skipped, {plural(counts['error'], 'error')} "
        f"in {format_duration(report.duration_s)}"
    )
    if report.unmeasured:
        text += " - could not measure, treated as a failure"
    return text


def color_wanted(stream: TextIO | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Decide on colour: only on a TTY and only when NO_COLOR is unset or empty (no-color.org)."""
    stream = sys.stdout if stream is None else stream
    env = os.environ if env is None else env
    if env.get("NO_COLOR", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def _detail_cell(result: Result) -> str:
    """A passing row's detail is cut to one line; a failing row's is wrapped, never cut.

    The detail of a failing row is often the fix itself (`run: chmod 600 ...`): it is the only
    thing a tenant reads in `doctor --silent`, so every word of it is kept.
    """
    if result.status not in ("fail", "error"):
        return one_line(result.detail, TABLE_DETAIL_CHARS)
    import textwrap

    text = visible_controls(_WHITESPACE.sub(" ", result.detail).strip())
    lines = textwrap.wrap(text, TABLE_DETAIL_CHARS, break_long_words=True, break_on_hyphens=False)
    return "\n".join(lines)


def render_table(report: Report, *, only_failing: bool = False, color: bool | None = None) -> str:
    """Render the results as a terminal table followed by the summary line."""
    from tabulate import tabulate

    use_color = color_wanted() if color is None else color
    rows = report.failing() if only_failing else report.results
    lines: list[str] = []
    if rows:
        table = [
            [
                _paint(STATUS_LABELS[r.status], _ANSI[r.status], use_color),
                one_line(r.id, 120),
                one_line(r.title, TABLE_TITLE_CHARS),
                format_duration(r.duration_s),
                _detail_cell(r),
            ]
            for r in rows
        ]
        lines.append(
            tabulate(
                table,
                headers=["status", "id", "title", "time", "detail"],
                tablefmt="simple",
                disable_numparse=True,
            )
        )
    summary = summary_line(report)
    good = report.ok and not report.unmeasured
    lines.append(_paint(summary, "32" if good else "1;31", use_color))
    return redaction.redact("\n".join(lines))


def render_matrix(
    rows: Sequence[str], columns: Sequence[str], cells: Mapping[tuple[str, str], str]
) -> str:
    """Render the parity matrix (artifacts x surface pairs); a missing cell shows as skipped."""
    from tabulate import tabulate

    table = [
        [visible_controls(row), *(cells.get((row, col), MARK_SKIP) for col in columns)]
        for row in rows
    ]
    body = tabulate(
        table,
        headers=["", *(visible_controls(c) for c in columns)],
        tablefmt="simple",
        disable_numparse=True,
    )
    legend = (
        f"{MARK_OK} = same, {MARK_DIFF} = differs, {MARK_SKIP} = skipped, "
        f"{MARK_ERR} = could not compare"
    )
    return redaction.redact(f"{body}\n{legend}")


def render_rows(
    rows: Iterable[Sequence[object]],
    headers: Sequence[str] = (),
    *,
    style: Literal["plain", "simple"] = "plain",
) -> str:
    """Render rows that are not results (settings, endpoints, rules, status lines) as a table.

    Every cell is cleaned to one line (secrets masked, control characters made visible), and
    numbers are left as written.
    """
    from tabulate import tabulate

    def cell(value: object) -> str:
        return redaction.clean(str(value), keep_newlines=False)

    return tabulate(
        [[cell(value) for value in row] for row in rows],
        headers=[cell(h) for h in headers],
        tablefmt=style,
        disable_numparse=True,
    )


def print_text(text: str, stream: TextIO) -> None:
    """Print, degrading characters the stream's encoding lacks instead of crashing."""
    try:
        print(text, file=stream)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream)
