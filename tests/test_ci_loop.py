"""The schedule-time loop: quiet when healthy, one alert file when degraded, one pass at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync_ci.ci_loop import pass_lock, run_pass
from sync_ci.config import Settings
from tests.conftest import FaultySandbox


def run_cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {**env, "PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "sync_ci", "ci-loop", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        cwd=cwd,
    )


def test_healthy_pass_writes_nothing_and_prints_one_line(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    out = run_cli(sandbox_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1 and out.stdout.startswith("ci-loop: ok")
    assert not list((tmp_path / "state/log/alerts").glob("sync-degraded-*.md"))
    quiet = run_cli(sandbox_env, "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_degraded_pass_writes_one_alert_then_a_recovery_note(
    faulty_sandbox: FaultySandbox, tmp_path: Path
) -> None:
    from sync_ci.sandbox.attach import clear_faults

    settings: Settings = faulty_sandbox({"5xx_rate": "1"})
    alerts = tmp_path / "alerts"
    first = run_pass(settings, alerts_dir=alerts, now=datetime(2026, 11, 27, 6, tzinfo=UTC))
    assert first.alert_file is not None and not first.report.ok
    text = first.alert_file.read_text()
    assert first.alert_file.name == "sync-degraded-2026-11-27T06-00-00Z.md"
    assert "install" in text and "What to look at next" in text and settings.target in text
    clear_faults(settings)
    second = run_pass(settings, alerts_dir=alerts, now=datetime(2026, 11, 27, 12, tzinfo=UTC))
    assert second.report.ok and second.alert_file is None
    assert second.recovery_file is not None and "recovered" in second.recovery_file.read_text()
    third = run_pass(settings, alerts_dir=alerts, now=datetime(2026, 11, 27, 18, tzinfo=UTC))
    assert third.recovery_file is None
    assert len(list(alerts.glob("sync-degraded-*.md"))) == 1


@pytest.mark.strict_store
def test_read_only_even_on_a_writable_target(faulty_sandbox: FaultySandbox, tmp_path: Path) -> None:
    from sync_ci import guards
    from sync_ci.store import endpoint_from_settings, open_store

    settings = faulty_sandbox()
    store = open_store(endpoint_from_settings(settings), guards.sandbox_admin_policy())
    before = {o.key: o.etag for o in store.list("")}
    outcome = run_pass(settings, alerts_dir=tmp_path / "alerts", now=datetime.now(UTC))
    assert outcome.report.mode == "read-only" and outcome.report.ok
    assert {o.key: o.etag for o in store.list("")} == before


def test_second_concurrent_pass_exits_at_once(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    lock = Path(sandbox_env["SYNC_CI_STATE_DIR"]) / "ci-loop.lock"
    with pass_lock(lock):
        out = run_cli(sandbox_env, cwd=tmp_path)
    assert out.returncode == 0
    assert "another ci-loop pass holds" in out.stderr
    assert out.stdout == ""
    assert not (tmp_path / "state/log").exists()
