"""Where a report goes at the end of every command: `Outputs`, `emit` and `write_outputs`.

It sits above every renderer (table, JSON, JUnit, GitHub outputs) and calls each of them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from sync_ci.errors import ExitCode, UsageError
from sync_ci.report import Report, exit_code
from sync_ci.report_github import write_github_outputs
from sync_ci.report_json import write_json
from sync_ci.report_junit import write_junit
from sync_ci.report_text import print_text, render_table


@dataclass(frozen=True, slots=True, kw_only=True)
class Outputs:
    """Where a report goes besides the exit code: built from option values in one place,
    `sync_ci.options` (`outputs` for the parsed options, `report_outputs` for the invoke tasks').

    `quiet` prints only the failing rows, and nothing on success; `github` False leaves out the
    annotations and step summary even inside GitHub Actions.
    """

    json: Path | None = None
    junit: Path | None = None
    quiet: bool = False
    github: bool = True


def write_outputs(report: Report, outputs: Outputs) -> None:
    """Write the --json/--junit files and the GitHub outputs, printing no table."""
    for path, option, writer in (
        (outputs.json, "--json", write_json),
        (outputs.junit, "--junit", write_junit),
    ):
        if path is not None:
            try:
                writer(report, path)
            except OSError as exc:
                raise UsageError(f"cannot write {option} {path}: {exc.strerror or exc}") from exc
    if outputs.github:
        write_github_outputs(report, os.environ)


def emit(report: Report, outputs: Outputs) -> int:
    """Print the table, write --json/--junit and GitHub outputs, and return the exit code."""
    code = exit_code(report)
    if not outputs.quiet:
        print_text(render_table(report), sys.stdout)
    elif code != ExitCode.OK:
        print_text(render_table(report, only_failing=True), sys.stdout)
    write_outputs(report, outputs)
    return int(code)
