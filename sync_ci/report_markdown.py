"""Markdown renderers: the alert file's page and the GitHub step summary (cut to GitHub's cap)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from sync_ci import __version__, redaction
from sync_ci.report import Report, Result
from sync_ci.report_json import inline_json
from sync_ci.report_text import (
    format_duration,
    one_line,
    plural,
    shorten,
    summary_line,
    visible_controls,
)

_MD_ICONS: Mapping[str, str] = {"pass": "✅", "fail": "❌", "skip": "⏭️", "error": "⚠️"}
# GitHub rejects a step summary over 1 MiB (the upload aborts); keep well under it.
STEP_SUMMARY_BUDGET_BYTES = 900 * 1024
STEP_SUMMARY_DETAIL_CHARS = 300


def _md_cell(text: str, limit: int | None = None) -> str:
    """Make text safe inside one GitHub-flavoured markdown table cell."""
    text = visible_controls(text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " "))
    if limit is not None:
        text = shorten(text, limit)
    text = text.replace("|", "\\|").replace("<", "&lt;")
    return text.strip().replace("\n", "<br>")


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


_MD_HEADER = (
    _md_row(["status", "id", "title", "duration", "detail"]),
    _md_row(["---"] * 5),
)


def _md_result_row(result: Result, detail_limit: int | None) -> str:
    return _md_row(
        [
            f"{_MD_ICONS[result.status]} {result.status}",
            f"`{_md_cell(result.id).replace('`', '')}`",
            _md_cell(result.title, 300 if detail_limit else None),
            format_duration(result.duration_s),
            _md_cell(result.detail, detail_limit),
        ]
    )


def _fenced(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{visible_controls(text)}\n{fence}"


def render_markdown(report: Report, *, title: str, next_steps: Sequence[str] = ()) -> str:
    """Render the alert-file markdown: what failed first, the table, the run, what to do next."""
    counts = report.counts
    failing = report.failing()
    lines = [f"# {one_line(title, 200)}", ""]
    lines += [f"**{summary_line(report)}**", ""]
    lines += ["## What failed first", ""]
    if failing:
        first = failing[0]
        first_id = _md_cell(first.id).replace("`", "")
        lines.append(f"`{first_id}` {_md_cell(first.title)} ({first.status})")
        if first.detail.strip():
            lines += ["", _fenced(first.detail.strip())]
        facts = [
            (name, value)
            for name, value in (("observed", first.observed), ("threshold", first.threshold))
            if value
        ]
        if facts:
            lines.append("")
            lines += [
                f"- {name}: `{inline_json(value).replace('`', chr(39))}`" for name, value in facts
            ]
    elif report.unmeasured:
        lines.append("Nothing could be measured (the target did not answer).")
    else:
        lines.append("Nothing failed.")
    lines += ["", "## Results", ""]
    if report.results:
        lines += [*_MD_HEADER, *(_md_result_row(r, None) for r in report.results)]
    else:
        lines.append("No results.")
    lines += [
        "",
        "## Run",
        "",
        f"- suite: {_md_cell(report.suite)}",
        f"- target: {_md_cell(report.target)}",
        f"- mode: {_md_cell(report.mode)}",
        f"- sha: `{_md_cell(report.sha)}`",
        f"- sync-ci version: {__version__}",
        f"- started at: {report.started_stamp}",
        f"- duration: {format_duration(report.duration_s)}",
        f"- counts: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['skip']} skipped, {plural(counts['error'], 'error')}",
    ]
    if next_steps:
        lines += ["", "## What to look at next", ""]
        lines += [f"- {one_line(step, 1000)}" for step in next_steps]
    return redaction.redact("\n".join(lines)) + "\n"


def render_step_summary(report: Report, *, budget_bytes: int = STEP_SUMMARY_BUDGET_BYTES) -> str:
    """Render the GitHub step summary, cutting rows (failures kept first) to stay in budget."""
    good = report.ok and not report.unmeasured
    head = [
        f"### {'✅' if good else '❌'} sync-ci {_md_cell(summary_line(report))}",
        "",
    ]
    foot_meta = (
        f"<sub>sync-ci {__version__} · sha `{_md_cell(report.sha)}` · "
        f"started {report.started_stamp}</sub>"
    )
    # Failures first so a cut never hides what broke; stable within each group.
    ordered = [*report.failing(), *(r for r in report.results if r.status not in ("fail", "error"))]
    cut_note_reserve = 300
    used = sum(len(line.encode()) + 1 for line in head) + len(foot_meta.encode()) + 2
    used += cut_note_reserve
    body: list[str] = []
    if ordered:
        body = list(_MD_HEADER)
        used += sum(len(line.encode()) + 1 for line in body)
    shown = 0
    for result in ordered:
        row = _md_result_row(result, STEP_SUMMARY_DETAIL_CHARS)
        size = len(row.encode()) + 1
        if used + size > budget_bytes:
            break
        body.append(row)
        used += size
        shown += 1
    lines = head + body
    cut = len(ordered) - shown
    if cut:
        failing_cut = max(len(report.failing()) - shown, 0)
        lines += [
            "",
            f"_{cut:,} more rows not shown ({failing_cut:,} of them failing) to stay under "
            "GitHub's 1 MiB step-summary cap; the full report is in the JSON artifact._",
        ]
    if not ordered:
        lines.append("No results.")
    lines += ["", foot_meta]
    return redaction.redact("\n".join(lines)) + "\n"
