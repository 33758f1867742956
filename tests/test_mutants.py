"""The mutant catalogue: each contract violation of the reference Worker is caught by its row.

Every mutant runs against the suite docs/mutants.md names, and the test asserts which row catches
it; a conforming Worker passes the same suites, a same-commit re-run of the write smoke included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sync_ci.attachment import SUITE, open_target
from sync_ci.ci_loop import run_pass
from sync_ci.config import Settings, load_settings
from sync_ci.report import Report
from sync_ci.sandbox.launcher import start_sandbox, write_ready_file
from sync_ci.sandbox.mutants import MUTANTS
from sync_ci.sandbox.workerd import Runtime
from sync_ci.smoke import READ_ONLY_PHASES, WRITE_PHASES, run_smoke
from tests.conftest import STORE_KIND, sandbox_env_for

REPO = Path(__file__).resolve().parents[1]
CATALOGUE_DOC = REPO / "docs" / "mutants.md"


@contextmanager
def mutant_sandbox(
    tmp_path: Path, mutant: str, runtime: Runtime = "python"
) -> Iterator[tuple[Settings, dict[str, str]]]:
    """A sandbox of this test's own whose Worker (on `runtime`) commits `mutant` ('' for none)."""
    with start_sandbox(
        store=STORE_KIND, mutant=mutant, workdir=tmp_path / "sandbox", runtime=runtime
    ) as running:
        ready = write_ready_file(running.info, tmp_path / "ready.json")
        env = sandbox_env_for(ready, tmp_path / "home")
        with open_target(load_settings(env=env), SUITE) as settings:
            yield settings, env


def first_failing(report: Report) -> str:
    """The id of the first row that did not pass or skip."""
    return next(r.id for r in report.results if r.status in ("fail", "error"))


def row(report: Report, row_id: str) -> str:
    """One row's status and detail, for assertion messages."""
    found = next(r for r in report.results if r.id == row_id)
    return f"{found.status}: {found.detail}"


def load_gate_failures(env: dict[str, str], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Run `sync-ci gate load` as a user would against the sandbox `env` names; return failed rows."""
    out = tmp_path / "load.json"
    full_env = {**env, "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "sync_ci", "gate", "load", "-q", "--json", str(out)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=600,
        cwd=env["HOME"],
    )
    assert done.returncode == 1, done.stdout + done.stderr
    document = json.loads(out.read_text())
    return {r["id"]: r for r in document["results"] if r["status"] == "fail"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_each_mutant_is_caught_by_its_row(name: str, tmp_path: Path) -> None:
    mutant = MUTANTS[name]
    with mutant_sandbox(tmp_path, name) as (settings, env):
        suites = [s.strip() for s in mutant.suite.split(",")]
        if "smoke" in suites:
            report = run_smoke(settings, mode="write")
            assert not report.ok
            assert first_failing(report) == mutant.row, [
                (r.id, r.status, r.detail) for r in report.results if r.status != "pass"
            ]
        if "ci-loop" in suites:
            outcome = run_pass(settings, alerts_dir=tmp_path / "alerts", now=datetime.now(UTC))
            assert outcome.alert_file is not None and outcome.alert_file.exists()
            assert first_failing(outcome.report) == mutant.row
            # The failure names the region that broke: the last configured one.
            assert settings.regions[-1].colo in row(outcome.report, mutant.row)
            assert mutant.row.removeprefix("phase:") in outcome.alert_file.read_text()
        if "gates.load" in suites:
            assert mutant.row in load_gate_failures(env, tmp_path)


@pytest.mark.slow
def test_a_conforming_worker_passes_every_suite_and_a_same_commit_rerun(tmp_path: Path) -> None:
    with mutant_sandbox(tmp_path, "") as (settings, _env):
        first = run_smoke(settings, mode="write")
        # "Re-run jobs" in Actions: the same commit, the same prefix, inside the catalog's cache time.
        rerun = run_smoke(settings, mode="write")
        read_only = run_smoke(settings, mode="read-only")
        outcome = run_pass(settings, alerts_dir=tmp_path / "alerts", now=datetime.now(UTC))
    for report, phases in ((first, WRITE_PHASES), (rerun, WRITE_PHASES)):
        assert [(r.id, r.status) for r in report.results] == [
            (f"phase:{p}", "pass") for p in phases
        ], report.results
    assert "a re-run" in row(rerun, "phase:seed")
    assert read_only.ok and len(read_only.results) == len(READ_ONLY_PHASES)
    assert outcome.report.ok and outcome.alert_file is None
    fresh = next(r for r in first.results if r.id == "phase:freshness")
    assert fresh.threshold["max_s"] == settings_bound(first)
    assert isinstance(fresh.observed["time_to_fresh_s"], float)


def settings_bound(report: Report) -> float:
    """The freshness bound the preflight read from the Worker."""
    preflight = next(r for r in report.results if r.id == "phase:preflight")
    bound: float = preflight.observed["freshness_bound_s"]
    return bound


# A catalogue line: mutant, violation, suite, catching row, and the finding that catches it by
# conformance alone ("`check` on OPERATION", or "—" when only the suite row can).
CATALOGUE_LINE = re.compile(
    r"\| `([a-z0-9-]+)` \| [^|]+ \| ([^|]+) \| `([^`]+)` \| (?:`([a-z_]+)` on ([^|]+?)|—) \|"
)


def documented() -> dict[str, tuple[str, str]]:
    """The catalogue as docs/mutants.md lists it: name -> (suite, row)."""
    table: dict[str, tuple[str, str]] = {}
    for line in CATALOGUE_DOC.read_text(encoding="utf-8").splitlines():
        match = CATALOGUE_LINE.fullmatch(line)
        if match:
            table[match.group(1)] = (match.group(2).strip(), match.group(3))
    return table


def documented_conformance() -> dict[str, tuple[str, str]]:
    """The conformance column of docs/mutants.md: name -> (operation, check), caught ones only."""
    table: dict[str, tuple[str, str]] = {}
    for line in CATALOGUE_DOC.read_text(encoding="utf-8").splitlines():
        match = CATALOGUE_LINE.fullmatch(line)
        if match and match.group(4):
            table[match.group(1)] = (match.group(5), match.group(4))
    return table


def test_the_doc_lists_the_catalogue_with_its_suites_and_rows() -> None:
    assert documented() == {m.name: (m.suite, m.row) for m in MUTANTS.values()}


def test_every_catching_row_is_a_row_the_suite_has() -> None:
    smoke_rows = {f"phase:{p}" for p in WRITE_PHASES}
    for mutant in MUTANTS.values():
        if "smoke" in mutant.suite:
            assert mutant.row in smoke_rows, mutant
