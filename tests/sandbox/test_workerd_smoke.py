"""The suites against the workerd Worker: the write smoke passes, every catalogue mutant is caught.

`sync-ci sandbox --worker workerd` and `sync-ci smoke` run as a user runs them (two processes,
SYNC_CI_SANDBOX between them); the mutant matrix starts one workerd sandbox per mutant, and runs
the suite docs/mutants.md names for it (the write smoke, ci-loop, the load gate).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync_ci.ci_loop import run_pass
from sync_ci.sandbox.mutants import MUTANTS, SLOW_ROUTE_S
from sync_ci.smoke import WRITE_PHASES, run_smoke
from tests.conftest import sandbox_env_for
from tests.sandbox.test_workerd import _workerd_missing
from tests.test_mutants import first_failing, load_gate_failures, mutant_sandbox, row

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180.0

pytestmark = pytest.mark.skipif(bool(_workerd_missing()), reason=_workerd_missing())


@contextmanager
def cli_sandbox(tmp_path: Path, *flags: str) -> Iterator[dict[str, str]]:
    """Run `sync-ci sandbox --worker workerd` in the background; yield the env that attaches."""
    ready = tmp_path / "sandbox.json"
    env = sandbox_env_for(ready, tmp_path / "home")
    env |= {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "sync_ci", "sandbox", "--worker", "workerd", "-q"]
    command += ["--ready-file", str(ready), *flags]
    log = (tmp_path / "sandbox.log").open("wb")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            assert process.poll() is None, (tmp_path / "sandbox.log").read_text()
            assert time.monotonic() < deadline, "the workerd sandbox did not start"
            time.sleep(0.2)
        assert json.loads(ready.read_text())["worker"]["runtime"] == "workerd"
        yield env
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "sandbox.log").read_text()
        log.close()
    assert not ready.exists()


def smoke(env: dict[str, str], *args: str) -> tuple[int, dict[str, str]]:
    """Run `sync-ci smoke --json` against the attached sandbox; return its exit code and rows."""
    out = Path(env["HOME"]) / "smoke.json"
    done = subprocess.run(
        [sys.executable, "-m", "sync_ci", "smoke", "-q", "--json", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=env["HOME"],
    )
    assert "Traceback" not in done.stderr, done.stderr
    document = json.loads(out.read_text())
    return done.returncode, {r["id"]: r["status"] for r in document["results"]}


@pytest.mark.slow
def test_the_write_smoke_passes_against_the_workerd_sandbox(tmp_path: Path) -> None:
    with cli_sandbox(tmp_path) as env:
        code, rows = smoke(env)
    assert code == 0, rows
    assert rows == {f"phase:{phase}": "pass" for phase in WRITE_PHASES}


@pytest.mark.slow
def test_the_smoke_fails_against_a_workerd_worker_that_accepts_any_token(tmp_path: Path) -> None:
    with cli_sandbox(tmp_path, "--mutant", "push-auth-bypass") as env:
        code, rows = smoke(env)
    assert code == 1
    assert rows["phase:reject-bad-token"] == "fail"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_each_mutant_is_caught_on_workerd_too(name: str, tmp_path: Path) -> None:
    mutant = MUTANTS[name]
    with mutant_sandbox(tmp_path, name, runtime="workerd") as (settings, env):
        if mutant.suite == "gates.load":
            failed = load_gate_failures(env, tmp_path)
            assert mutant.row in failed, sorted(failed)
            # The mutant's added time is a floor under every install answer it gives, so its
            # p95 clears the limit whatever the machine's load: caught by the row's own number.
            assert failed[mutant.row]["observed"]["p95_ms"] >= SLOW_ROUTE_S * 1000
            return
        report = run_smoke(settings, mode="write")
        assert first_failing(report) == mutant.row, [
            (r.id, r.status, r.detail) for r in report.results if r.status != "pass"
        ]
        if "ci-loop" in mutant.suite:
            outcome = run_pass(settings, alerts_dir=tmp_path / "alerts", now=datetime.now(UTC))
            assert first_failing(outcome.report) == mutant.row
            assert settings.regions[-1].colo in row(outcome.report, mutant.row)


@pytest.mark.slow
def test_worker_runtime_setting_puts_the_smokes_own_sandbox_on_workerd(tmp_path: Path) -> None:
    env = sandbox_env_for(tmp_path / "unused.json", tmp_path / "home")
    del env["SYNC_CI_SANDBOX"]
    env |= {"PYTHONPATH": str(REPO), "SYNC_CI_WORKER_RUNTIME": "workerd"}
    # Without Node on PATH the setting is what fails the run: it did choose workerd.
    no_node = subprocess.run(
        [sys.executable, "-m", "sync_ci", "smoke"],
        env={**env, "PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=env["HOME"],
    )
    assert no_node.returncode == 2
    assert no_node.stderr.startswith("sync-ci: error: --worker workerd needs Node.js")
    code, rows = smoke({**env, "PATH": "/usr/local/bin:/usr/bin:/bin"})
    assert code == 0, rows
    assert rows == {f"phase:{phase}": "pass" for phase in WRITE_PHASES}
