"""The GitHub workflow lost a piece of its required shape (triggers, sessions, hardening).

**Why:** the PR-time loop is only as good as its workflow. It must run on pull requests
(opened, synchronize, reopened) and pushes to main; run `nox -s check`, `nox -s lint_sync` and
`nox -s smoke_sync` with `--target ci`; and keep the cleanup job on a schedule (plus manual
dispatch). It must also be hard to abuse: `permissions: {}` at the top and only `read`/`none`
grants per job (a token that can write is what an injected step steals); every `uses:` pinned to
a full 40-hex commit SHA (tags are mutable: the tj-actions/changed-files compromise of March 2025
rewrote tags); `persist-credentials: false` on checkout; secrets only as `${{ secrets.NAME }}`
values of an `env:` mapping (never inline in `run:`/`with:`, never `secrets: inherit`); a
`concurrency` group so a new push replaces a stale run; and `timeout-minutes` on every job (the
default is six hours of a hung runner). zizmor audits part of this; this rule pins the rest to
the seed.

**Fix:** restore the missing piece in `.github/workflows/sync-ci.yml`. Pin an action with its
commit SHA and keep the tag as a comment (`uses: actions/checkout@<sha> # v4.2.2`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from checks.catalogue import Finding, Subject, example

ID = "SA006"
TITLE = "workflow missing a required trigger, session or hardening"
SCOPE = ("repo",)

WORKFLOWS = (".github/workflows/*.yml", ".github/workflows/*.yaml")
MAIN_WORKFLOW = ".github/workflows/sync-ci.yml"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
DOCKER_PINNED = re.compile(r"^docker://[^@]+@sha256:[0-9a-f]{64}$")
SECRET_EXPR = re.compile(r"\$\{\{[^}]*\bsecrets\.", re.IGNORECASE)
SECRET_ENV_VALUE = re.compile(r"^\$\{\{\s*secrets\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}$")
PR_TYPES = frozenset({"opened", "synchronize", "reopened"})
SESSIONS = ("check", "lint_sync", "smoke_sync")
GRANTS = frozenset({"read", "none"})


def _line_of(text: str, needle: str, default: int = 1) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    return default


def _walk(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, node
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, str(index)))


def _jobs(doc: Mapping[Any, Any]) -> Mapping[str, Any]:
    jobs = doc.get("jobs")
    return jobs if isinstance(jobs, Mapping) else {}


def _hardening(path: str, text: str, doc: Mapping[Any, Any]) -> Iterator[Finding]:
    if doc.get("permissions", "missing") != {}:
        # The top-level key starts its line; a job's `permissions:` is indented.
        top = (n for n, x in enumerate(text.splitlines(), 1) if x.startswith("permissions:"))
        yield Finding(
            path=path,
            line=next(top, 1),
            message="top-level permissions must be `permissions: {}` (grant per job)",
        )
    if not isinstance(doc.get("concurrency"), Mapping | str):
        yield Finding(path=path, line=1, message="no top-level concurrency group")
    jobs = _jobs(doc)
    for name, job in jobs.items():
        if not isinstance(job, Mapping):
            continue
        line = _line_of(text, f"{name}:")
        timeout = job.get("timeout-minutes")
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
            yield Finding(path=path, line=line, message=f"job {name} has no timeout-minutes")
        grants = job.get("permissions")
        if grants is None and "uses" not in job:
            yield Finding(
                path=path, line=line, message=f"job {name} sets no permissions of its own"
            )
        elif isinstance(grants, str) or (
            isinstance(grants, Mapping) and any(v not in GRANTS for v in grants.values())
        ):
            yield Finding(
                path=path,
                line=line,
                message=f"job {name} grants {grants!r}; only read/none per scope is allowed",
            )
        if job.get("secrets") == "inherit":
            yield Finding(path=path, line=line, message=f"job {name} uses `secrets: inherit`")
        uses = job.get("uses")
        steps = [s for s in job.get("steps") or [] if isinstance(s, Mapping)]
        for ref in [uses, *(s.get("uses") for s in steps)]:
            if isinstance(ref, str) and not (
                ref.startswith("./") or PINNED.match(ref) or DOCKER_PINNED.match(ref)
            ):
                yield Finding(
                    path=path,
                    line=_line_of(text, ref),
                    message=f"`uses: {ref}` is not pinned to a full commit SHA",
                )
        for step in steps:
            ref = step.get("uses")
            if isinstance(ref, str) and ref.startswith("actions/checkout@"):
                inputs = step.get("with")
                if (
                    not isinstance(inputs, Mapping)
                    or inputs.get("persist-credentials") is not False
                ):
                    yield Finding(
                        path=path,
                        line=_line_of(text, ref),
                        message="actions/checkout without `persist-credentials: false`",
                    )
    for where, value in _walk(doc, ()):
        if not isinstance(value, str) or not SECRET_EXPR.search(value):
            continue
        in_env = len(where) >= 2 and where[-2] == "env"
        if not in_env or not SECRET_ENV_VALUE.match(value.strip()):
            yield Finding(
                path=path,
                line=_line_of(text, value.splitlines()[0].strip()),
                message=f"secret used at {'.'.join(where)}; pass secrets only as "
                "`${{ secrets.NAME }}` values of an env: mapping",
            )


def _triggers(doc: Mapping[Any, Any]) -> Mapping[str, Any]:
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1).
    raw = doc.get("on", doc.get(True))
    if isinstance(raw, str):
        return {raw: None}
    if isinstance(raw, list):
        return dict.fromkeys(map(str, raw))
    return raw if isinstance(raw, Mapping) else {}


def _shape(path: str, text: str, doc: Mapping[Any, Any]) -> Iterator[Finding]:
    on = _triggers(doc)
    pr = on.get("pull_request", False)
    if pr is False:
        yield Finding(path=path, line=1, message="not triggered by pull_request")
    elif isinstance(pr, Mapping) and pr.get("types") is not None:
        missing = PR_TYPES - set(pr.get("types") or [])
        if missing:
            yield Finding(
                path=path,
                line=_line_of(text, "types"),
                message=f"pull_request types miss {sorted(missing)}",
            )
    push = on.get("push", False)
    branches = push.get("branches") if isinstance(push, Mapping) else None
    if push is False or (branches is not None and "main" not in branches):
        yield Finding(path=path, line=1, message="not triggered by push to main")
    if "pull_request_target" in on or "workflow_run" in on:
        yield Finding(
            path=path,
            line=_line_of(text, "pull_request_target"),
            message="pull_request_target/workflow_run run untrusted code with secrets",
        )
    if not on.get("schedule"):
        yield Finding(path=path, line=1, message="no schedule trigger for the cleanup job")
    if "workflow_dispatch" not in on:
        yield Finding(path=path, line=1, message="no workflow_dispatch trigger (manual cleanup)")
    runs = [
        str(step.get("run", ""))
        for job in _jobs(doc).values()
        if isinstance(job, Mapping)
        for step in job.get("steps") or []
        if isinstance(step, Mapping)
    ]
    for session in SESSIONS:
        pattern = re.compile(rf"\bnox\b[^\n]*-s[ \t]+(?:\w+[ \t]+)*{session}\b")
        matching = [r for r in runs if pattern.search(r)]
        if not matching:
            yield Finding(path=path, line=1, message=f"no step runs `nox -s {session}`")
        elif session == "smoke_sync" and not any(
            re.search(r"--target[= ]ci\b", r) for r in matching
        ):
            yield Finding(
                path=path,
                line=_line_of(text, "smoke_sync"),
                message="smoke_sync does not run with --target ci",
            )
    if not any(re.search(r"\bcleanup\b", r) for r in runs):
        yield Finding(path=path, line=1, message="no step runs the CI-prefix cleanup")


def check(subject: Subject) -> Iterator[Finding]:
    """Check every workflow's hardening, and sync-ci.yml's triggers and sessions."""
    import yaml

    for path, text in subject.matching(*WORKFLOWS):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            yield Finding(path=path, line=1, message=f"not valid YAML: {str(exc).splitlines()[0]}")
            continue
        if not isinstance(doc, Mapping):
            yield Finding(path=path, line=1, message="not a workflow mapping")
            continue
        yield from _hardening(path, text, doc)
        if path == MAIN_WORKFLOW:
            yield from _shape(path, text, doc)
    if "noxfile.py" in subject.files and MAIN_WORKFLOW not in subject.files:
        yield Finding(path=MAIN_WORKFLOW, message="the PR-time workflow is missing")


_SHA = "11bd71901bbe5b1630ceea73d27597364c9af683"
_WORKFLOW = f"""name: sync-ci
on:
  pull_request:
    types: [opened, synchronize, reopened]
  push:
    branches: [main]
  schedule:
    - cron: "17 3 * * *"
  workflow_dispatch:
permissions: {{}}
concurrency:
  group: sync-ci-${{{{ github.ref }}}}
jobs:
  pr:
    runs-on: ubuntu-24.04
    timeout-minutes: 20
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@{_SHA} # v4.2.2
        with:
          persist-credentials: false
      - run: nox -s check lint_sync
      - run: nox -s smoke_sync -- --target ci
        env:
          SYNC_CI_SECRET_ACCESS_KEY: ${{{{ secrets.SYNC_CI_SECRET_ACCESS_KEY }}}}
  cleanup:
    runs-on: ubuntu-24.04
    timeout-minutes: 10
    permissions: {{}}
    steps:
      - run: sync-ci cleanup --older-than 7d
"""
GOOD = (
    example({MAIN_WORKFLOW: _WORKFLOW, "noxfile.py": ""}),
    example({"sync_ci/x.py": ""}),
)
BAD = (
    example(
        {MAIN_WORKFLOW: _WORKFLOW.replace(f"@{_SHA}", "@v4")},
        at=[(".github/workflows/sync-ci.yml", 20)],
    ),
    example(
        {MAIN_WORKFLOW: _WORKFLOW.replace("permissions: {}\nconcurrency", "concurrency")},
        at=[(".github/workflows/sync-ci.yml", 1)],
    ),
    example(
        {
            MAIN_WORKFLOW: _WORKFLOW.replace(
                "permissions: {}\nconcurrency", "permissions: write-all\nconcurrency"
            )
        },
        at=[(".github/workflows/sync-ci.yml", 10)],
    ),
    example(
        {MAIN_WORKFLOW: _WORKFLOW.replace("      contents: read", "      contents: write")},
        at=[(".github/workflows/sync-ci.yml", 14)],
    ),
    example(
        {MAIN_WORKFLOW: _WORKFLOW.replace("    timeout-minutes: 10\n", "")},
        at=[(".github/workflows/sync-ci.yml", 27)],
    ),
    example(
        {MAIN_WORKFLOW: _WORKFLOW.replace("nox -s check lint_sync", "nox -s check")},
        at=[(".github/workflows/sync-ci.yml", 1)],
    ),
    example(
        {
            MAIN_WORKFLOW: _WORKFLOW.replace(
                "      - run: nox -s check lint_sync",
                "      - run: nox -s check lint_sync\n      - run: aws s3 ls --secret ${{ secrets.KEY }}",
            )
        },
        at=[(".github/workflows/sync-ci.yml", 24)],
    ),
    example(
        {
            MAIN_WORKFLOW: _WORKFLOW.replace(
                "          persist-credentials: false\n", "          fetch-depth: 1\n"
            )
        },
        at=[(".github/workflows/sync-ci.yml", 20)],
    ),
    example(
        {MAIN_WORKFLOW: _WORKFLOW.replace("[opened, synchronize, reopened]", "[opened]")},
        at=[(".github/workflows/sync-ci.yml", 4)],
    ),
    example(
        {MAIN_WORKFLOW: _WORKFLOW.replace('  schedule:\n    - cron: "17 3 * * *"\n', "")},
        at=[(".github/workflows/sync-ci.yml", 1)],
    ),
    example({"noxfile.py": ""}, at=[(".github/workflows/sync-ci.yml", 0)]),
)
