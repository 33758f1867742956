"""`sync-ci lint` and `python -m checks`: list, explain and run the rule catalogue."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from checks.catalogue import (
    Rule,
    RuleOutcome,
    Subject,
    discover,
    explain,
    field_subject,
    load_paths,
    read_user_crontab,
    run_rules,
    select_rules,
    to_results,
)
from sync_ci.errors import ExitCode, UsageError
from sync_ci.report import exit_code, make_report
from sync_ci.report_emit import Outputs, emit, write_outputs
from sync_ci.report_github import render_annotations
from sync_ci.report_json import to_json_text
from sync_ci.report_markdown import render_step_summary
from sync_ci.report_text import render_table

FORMATS = ("table", "json", "github")
SCOPES = ("repo", "field", "all")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the lint options to `parser` (shared by `sync-ci lint` and `python -m checks`)."""
    parser.add_argument("paths", nargs="*", default=["."], help="directories or files (default: .)")
    parser.add_argument("--list", action="store_true", help="list the rules and exit")
    parser.add_argument("--explain", metavar="ID", help="print a rule's why and fix, and exit")
    parser.add_argument(
        "--select", metavar="IDS", default="", help="comma-separated rule IDs or prefixes"
    )
    parser.add_argument(
        "--scope",
        choices=SCOPES,
        default="repo",
        help="repo: the tree (PR time); field: this machine (doctor); all: both",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        dest="output_format",
        help="table (default), json (the result document on stdout), github "
        "(annotations + step summary)",
    )
    parser.add_argument(
        "--json", metavar="PATH", dest="json_path", help="also write the result document"
    )
    parser.add_argument(
        "--junit", metavar="PATH", dest="junit_path", help="also write a JUnit XML report"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.set_defaults(func=_run)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `sync-ci lint`."""
    parser = sub.add_parser(
        "lint",
        help="run the section-A lint catalogue",
        description="Run the section-A lint catalogue (one rule per file in checks/rules).",
    )
    configure(parser)


def render_list(rules: Sequence[Rule]) -> str:
    """Return the `--list` table: ID, scope, title."""
    from sync_ci.report_text import render_rows

    return render_rows(
        [(r.id, r.scope_label, r.title) for r in rules], headers=("id", "scope", "title")
    )


def _field() -> Subject:
    from sync_ci.config_file import find_config_file

    env = os.environ
    files = []
    config = (
        find_config_file(None, env)
        if env.get("SYNC_CI_CONFIG") or Path("sync-ci.toml").is_file()
        else None
    )
    if config is not None:
        files.append(config)
    secrets = [Path(env["SYNC_CI_SECRETS_FILE"])] if env.get("SYNC_CI_SECRETS_FILE") else []
    return field_subject(crontab=read_user_crontab(), files=files, secret_files=secrets)


def collect(scope: str, paths: Sequence[str], select: Sequence[str]) -> list[RuleOutcome]:
    """Run the chosen scopes over the chosen paths and return every rule's outcome."""
    outcomes: list[RuleOutcome] = []
    if scope in ("repo", "all"):
        for path in map(Path, paths):
            if not path.exists():
                raise UsageError(f"{path} does not exist")
        try:
            subjects = load_paths([Path(p) for p in paths])
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
        for subject in subjects:
            for outcome in run_rules(scope="repo", subject=subject, select=select):
                outcomes.append(outcome)
    if scope in ("field", "all"):
        outcomes.extend(run_rules(scope="field", subject=_field(), select=select))
    return outcomes


def command(
    *,
    paths: Sequence[str] = (".",),
    scope: str = "repo",
    select: str = "",
    list_rules: bool = False,
    explain_rule: str = "",
    output_format: str = "table",
    outputs: Outputs | None = None,
) -> int:
    """Run `sync-ci lint`: list, explain, or lint `paths` and report.

    The scope and format are checked here, as argparse checks them, so a typed caller (the
    invoke task) meets the same refusals.
    """
    from sync_ci.options import choice

    choice(scope, SCOPES, "--scope", command="lint")
    choice(output_format, FORMATS, "--format", command="lint")
    rules = discover()
    if list_rules:
        print(render_list(rules))
        return int(ExitCode.OK)
    if explain_rule:
        wanted = explain_rule.strip().upper()
        match = next((r for r in rules if r.id == wanted), None)
        if match is None:
            raise UsageError(f"no rule {explain_rule!r}; see --list")
        print(explain(match))
        return int(ExitCode.OK)
    selected = [s for s in select.split(",") if s.strip()]
    scopes = ("repo", "field") if scope == "all" else (scope,)
    if selected and not any(select_rules(rules, scope=s, select=selected) for s in scopes):  # type: ignore[arg-type]
        raise UsageError(f"--select {select!r} matches no {scope} rule; see --list")
    outputs = outputs or Outputs()
    started_at = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    outcomes = collect(scope, paths or ["."], selected)
    report = make_report(
        suite="lint",
        target=scope,
        mode="static",
        sha=os.environ.get("GITHUB_SHA", ""),
        started_at=started_at,
        duration_s=time.perf_counter() - started,
        results=to_results(outcomes),
        extra={
            "rules": len({o.rule.id for o in outcomes}),
            "findings": sum(len(o.findings) for o in outcomes),
        },
    )
    # The json and github formats print their own rendering: the files, without GitHub's outputs.
    files_only = dataclasses.replace(outputs, github=False)
    if output_format == "json":
        print(to_json_text(report))
        write_outputs(report, files_only)
        return int(exit_code(report))
    if output_format == "github":
        for line in render_annotations(report):
            print(line)
        summary = render_step_summary(report)
        target = os.environ.get("GITHUB_STEP_SUMMARY")
        if target:
            with open(target, "a", encoding="utf-8") as handle:
                handle.write(summary)
        else:
            print(summary)
        if not report.ok:
            print(render_table(report, only_failing=True))
        write_outputs(report, files_only)
        return int(exit_code(report))
    return emit(report, outputs)


def _run(args: argparse.Namespace) -> int:
    from sync_ci.options import outputs

    return command(
        paths=args.paths,
        scope=args.scope,
        select=args.select,
        list_rules=args.list,
        explain_rule=args.explain or "",
        output_format=args.output_format,
        outputs=outputs(args),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `python -m checks` arguments and run the lint."""
    from sync_ci.options import Parser
    from sync_ci.running import run_handler

    parser = Parser(prog="python -m checks", description="Run the section-A lint catalogue.")
    configure(parser)
    args = parser.parse_args(argv)
    return run_handler(_run, args)


if __name__ == "__main__":
    sys.exit(main())
