"""The CI-prefix cleanup is not set to 7 days, or is disabled.

**Why:** every PR run writes under `snappy-os-ci/<sha>/`, and cancelled runs leave partial prefixes
behind. The seed says the cleanup job is not optional: without it the CI prefix grows without
bound (cost, and list calls that get slower every week). The retention is 7 days: shorter deletes a
prefix a re-run may still need, longer lets the bucket grow. The easy ways to lose it are quiet: a
different `--older-than` in the workflow, the task or the module default; an `if: false`,
`continue-on-error: true` or `--dry-run` on the scheduled job; or dropping the schedule.

**Fix:** run `sync-ci cleanup --older-than 7d` from the scheduled job of
`.github/workflows/sync-ci.yml`, keep `DEFAULT_OLDER_THAN = "7d"` in `sync_ci/cleanup/model.py`
and the `older_than="7d"` default of the invoke task.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from typing import Any

from checks.catalogue import Finding, Subject, example
from checks.pysource import nodes, parse

ID = "SA008"
TITLE = "CI-prefix cleanup retention not 7 days, or cleanup disabled"
SCOPE = ("repo",)

WORKFLOW = ".github/workflows/sync-ci.yml"
CLEANUP_MODULE = "sync_ci/cleanup/model.py"
TASKS = "tasks.py"
SEVEN_DAYS_S = 7 * 86400
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
OLDER_THAN = re.compile(r"--older-than[= ]+['\"]?([^\s'\"]+)")
CLEANUP_RUN = re.compile(r"\bcleanup\b")
RETENTION_NAMES = re.compile(r"(?i)^(default_)?(older_than|retention)(_days|_s|_seconds)?$")


def seconds(text: str) -> float | None:
    """Parse '7d', '168h', '1w'... into seconds; None when it is not such a duration."""
    match = DURATION.match(text)
    return float(match.group(1)) * UNITS[match.group(2)] if match else None


def _python(path: str, tree: ast.Module, require: bool) -> Iterator[Finding]:
    found = False
    for node in nodes(tree):
        pairs: list[tuple[str, ast.expr, int]] = []
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None:
                pairs += [
                    (t.id, node.value, node.lineno) for t in targets if isinstance(t, ast.Name)
                ]
        elif isinstance(node, ast.FunctionDef):
            args = node.args.args[len(node.args.args) - len(node.args.defaults) :]
            pairs += [(a.arg, d, d.lineno) for a, d in zip(args, node.args.defaults, strict=True)]
            pairs += [
                (a.arg, d, d.lineno)
                for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True)
                if d
            ]
        for name, value, line in pairs:
            if not RETENTION_NAMES.match(name):
                continue
            if not (isinstance(value, ast.Constant) and isinstance(value.value, str | int | float)):
                continue
            raw = value.value
            found = True
            if isinstance(raw, str):
                amount = seconds(raw)
            elif name.lower().endswith("_days"):
                amount = float(raw) * 86400
            else:
                amount = float(raw)
            if amount != SEVEN_DAYS_S:
                yield Finding(
                    path=path, line=line, message=f"{name} = {raw!r}; the CI-prefix retention is 7d"
                )
    if require and not found:
        yield Finding(
            path=path, line=1, message="no retention default (DEFAULT_OLDER_THAN = '7d') found"
        )


def key_lines(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], int]]:
    """Yield (path of keys and list indexes, 1-based line) for every entry of a composed YAML node."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            where = (*path, str(key.value))
            yield where, key.start_mark.line + 1
            yield from key_lines(value, where)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            yield (*path, str(index)), value.start_mark.line + 1
            yield from key_lines(value, (*path, str(index)))


def _workflow(path: str, text: str) -> Iterator[Finding]:
    import yaml

    try:
        doc = yaml.safe_load(text)
        lines = dict(key_lines(yaml.compose(text, Loader=yaml.SafeLoader)))
    except yaml.YAMLError:
        return  # SA006 reports invalid YAML
    if not isinstance(doc, Mapping):
        return
    jobs: Mapping[str, Any] = doc.get("jobs") or {}
    triggers = doc.get("on", doc.get(True))
    runs = 0
    for name, job in jobs.items():
        if not isinstance(job, Mapping):
            continue
        for index, step in enumerate(job.get("steps") or []):
            run = str(step.get("run", "")) if isinstance(step, Mapping) else ""
            if not re.search(r"(sync-ci|sync_ci|invoke|inv|nox)\b[^\n]*\bcleanup\b", run):
                continue
            runs += 1
            at = ("jobs", str(name), "steps", str(index))
            line = lines.get((*at, "run"), 1)
            values = OLDER_THAN.findall(run)
            if not values:
                yield Finding(
                    path=path, line=line, message=f"job {name} runs cleanup without --older-than 7d"
                )
            for value in values:
                if seconds(value) != SEVEN_DAYS_S:
                    yield Finding(
                        path=path,
                        line=line,
                        message=f"job {name} cleans up --older-than {value}, not 7d",
                    )
            if "--dry-run" in run:
                yield Finding(
                    path=path, line=line, message=f"job {name} runs cleanup with --dry-run"
                )
            for where, item, keys in (("job", job, at[:2]), ("step", step, at)):
                if item.get("if") is False or str(item.get("if", "")).strip() in (
                    "false",
                    "${{ false }}",
                ):
                    yield Finding(
                        path=path,
                        line=lines.get((*keys, "if"), line),
                        message=f"cleanup {where} in job {name} is disabled (if: false)",
                    )
                if item.get("continue-on-error") is True:
                    yield Finding(
                        path=path,
                        line=lines.get((*keys, "continue-on-error"), line),
                        message=f"cleanup {where} in job {name} has continue-on-error",
                    )
    if not runs:
        yield Finding(path=path, line=1, message="no job runs `sync-ci cleanup --older-than 7d`")
    if not (isinstance(triggers, Mapping) and triggers.get("schedule")):
        yield Finding(path=path, line=1, message="the cleanup has no schedule trigger")


def check(subject: Subject) -> Iterator[Finding]:
    """Check the retention in the workflow, the cleanup module and the invoke task."""
    if WORKFLOW in subject.files:
        yield from _workflow(WORKFLOW, subject.files[WORKFLOW])
    for path, require in ((CLEANUP_MODULE, True), (TASKS, False)):
        text = subject.files.get(path)
        tree = parse(text) if text is not None else None
        if tree is not None:
            yield from _python(path, tree, require)


_FLOW = """on:
  schedule:
    - cron: "17 3 * * *"
jobs:
  cleanup:
    runs-on: ubuntu-24.04
    steps:
      - run: sync-ci cleanup --older-than 7d --target ci
"""
GOOD = (
    example(
        {
            WORKFLOW: _FLOW,
            CLEANUP_MODULE: "DEFAULT_OLDER_THAN = '7d'\n",
            TASKS: "def cleanup(c, older_than: str = '168h') -> None: ...\n",
        }
    ),
)
BAD = (
    example({WORKFLOW: _FLOW.replace("7d", "30d")}, at=[(".github/workflows/sync-ci.yml", 8)]),
    example(
        {WORKFLOW: _FLOW.replace(" --older-than 7d", "")}, at=[(".github/workflows/sync-ci.yml", 8)]
    ),
    example(
        {WORKFLOW: _FLOW.replace("    runs-on", "    if: false\n    runs-on")},
        at=[(".github/workflows/sync-ci.yml", 6)],
    ),
    example(
        {
            WORKFLOW: _FLOW.replace(
                '  schedule:\n    - cron: "17 3 * * *"\n', "  workflow_dispatch:\n"
            )
        },
        at=[(".github/workflows/sync-ci.yml", 1)],
    ),
    example(
        {WORKFLOW: _FLOW.replace("--target ci", "--dry-run")},
        at=[(".github/workflows/sync-ci.yml", 8)],
    ),
    example({CLEANUP_MODULE: "DEFAULT_OLDER_THAN = '14d'\n"}, at=[("sync_ci/cleanup/model.py", 1)]),
    example({CLEANUP_MODULE: "RETENTION_DAYS = 0\n"}, at=[("sync_ci/cleanup/model.py", 1)]),
    example({TASKS: "def cleanup(c, older_than: str = '0d') -> None: ...\n"}, at=[("tasks.py", 1)]),
)
