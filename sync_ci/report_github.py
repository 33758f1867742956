"""GitHub Actions outputs: workflow-command annotations within GitHub's caps and the step summary."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from sync_ci import redaction
from sync_ci.report import Report, Result
from sync_ci.report_markdown import STEP_SUMMARY_BUDGET_BYTES, render_step_summary
from sync_ci.report_text import one_line, print_text, visible_controls

# GitHub shows at most 10 error + 10 warning annotations per step and 50 per job; the rest are
# dropped silently, so we cut them ourselves and say so.
ANNOTATIONS_PER_LEVEL = 10
ANNOTATIONS_TOTAL = 50


def escape_annotation_data(text: str) -> str:
    """Escape an annotation message the way GitHub's toolkit does (%, CR, LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_annotation_property(text: str) -> str:
    """Escape an annotation property value: as data, plus ':' and ','."""
    return escape_annotation_data(text).replace(":", "%3A").replace(",", "%2C")


def _annotation_level(result: Result) -> str:
    level = result.observed.get("level", result.observed.get("severity"))
    return "warning" if level == "warning" else "error"


def _annotation(result: Result, level: str) -> str:
    props: list[str] = []
    file = result.observed.get("file")
    if isinstance(file, str) and file:
        props.append(f"file={escape_annotation_property(visible_controls(file))}")
        for key, name in (("line", "line"), ("end_line", "endLine"), ("col", "col")):
            value = result.observed.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                props.append(f"{name}={value}")
    title = f"{result.id}: {result.title}" if result.title else result.id
    props.append(f"title={escape_annotation_property(one_line(title, 200))}")
    message = result.detail.strip() or result.title or result.id
    if result.status == "error":
        message = f"could not check: {message}"
    message = visible_controls(message, keep_cr=True)
    return redaction.redact(f"::{level} {','.join(props)}::{escape_annotation_data(message)}")


def render_annotations(report: Report, *, max_per_level: int = ANNOTATIONS_PER_LEVEL) -> list[str]:
    """Render failing results as workflow-command annotations within GitHub's caps."""
    per_level = max(0, min(max_per_level, ANNOTATIONS_TOTAL))
    findings = report.failing()
    errors = [r for r in findings if _annotation_level(r) == "error"]
    warnings = [r for r in findings if _annotation_level(r) == "warning"]
    chosen = [(r, "error") for r in errors[:per_level]] + [
        (r, "warning") for r in warnings[:per_level]
    ]
    if len(chosen) < len(findings):
        chosen = chosen[: ANNOTATIONS_TOTAL - 1]  # leave room for the notice
    else:
        chosen = chosen[:ANNOTATIONS_TOTAL]
    lines = [_annotation(r, level) for r, level in chosen]
    missing = len(findings) - len(chosen)
    if missing:
        lines.append(
            f"::notice::{missing} more findings not annotated; see the step summary / JSON artifact"
        )
    return lines


def write_github_outputs(report: Report, env: Mapping[str, str] = os.environ) -> None:
    """In GitHub Actions, append the step summary and print the annotations to stdout."""
    if env.get("GITHUB_ACTIONS") != "true":
        return
    for line in render_annotations(report):
        print_text(line, sys.stdout)
    summary_path = env.get("GITHUB_STEP_SUMMARY")
    if not summary_path:
        return
    path = Path(summary_path)
    try:
        already = path.stat().st_size if path.exists() else 0
        # Several commands may append to one step's summary; share the budget with them.
        budget = max(STEP_SUMMARY_BUDGET_BYTES - already, 4096)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(render_step_summary(report, budget_bytes=budget))
    except OSError as exc:
        # A reporting side effect never changes the outcome of the job it reports.
        print(
            f"sync-ci: warning: cannot write step summary {path}: {exc.strerror or exc}",
            file=sys.stderr,
        )
