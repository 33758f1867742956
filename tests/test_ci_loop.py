"""The schedule-time loop: quiet when healthy, one alert file when degraded, one pass at a time."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync_ci import alert_files
from sync_ci.ci_loop import run_pass
from sync_ci.config import Settings
from sync_ci.locks import hold_lock
from tests.conftest import FaultySandbox

REPO = Path(__file__).parents[1]


def run_cli(
    env: dict[str, str], *args: str, cwd: Path, command: str = "ci-loop"
) -> subprocess.CompletedProcess[str]:
    full_env = {**env, "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "sync_ci", command, *args],
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
    assert first.alert_file.name in second.recovery_file.read_text()
    for written in (first.alert_file, second.recovery_file):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(alerts.stat().st_mode) == 0o700
    assert alert_files.current_failure(alert_files.scan(alerts)) is None
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
    with hold_lock(lock, "ci-loop"):
        out = run_cli(sandbox_env, cwd=tmp_path)
    assert out.returncode == 0
    assert "another ci-loop pass holds" in out.stderr
    assert out.stdout == ""
    assert alert_files.scan(tmp_path / "state/log/alerts") == []


# --- a hostile environment: one line naming the path and the fix, exit 3, no traceback ----------


def error_lines(out: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in out.stderr, out.stderr
    return [line for line in out.stderr.splitlines() if line.startswith("sync-ci: error:")]


def test_unusable_lock_directory_exits_3_and_still_leaves_an_alert_file(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the state directory's parent should be")
    env = {**sandbox_env, "SYNC_CI_STATE_DIR": str(blocker / "state")}
    out = run_cli(env, cwd=tmp_path)
    assert out.returncode == 3, (out.stdout, out.stderr)
    [line] = error_lines(out)
    assert str(blocker / "state") in line and "SYNC_CI_STATE_DIR" in line
    [written] = alert_files.scan(tmp_path / "state/log/alerts")
    assert written.degraded and str(written.path) in out.stdout
    assert "ci-loop could not run" in alert_files.read_title(written.path)
    # ... and the status view, reading what ci-loop wrote, reports it as failing.
    seen = run_cli(sandbox_env, cwd=tmp_path, command="status")
    assert seen.returncode in (1, 3), seen.stderr
    assert any(
        row.startswith("FAIL") and written.path.name in row for row in seen.stdout.splitlines()
    ), seen.stdout


def test_unusable_alerts_directory_exits_3_before_running(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    out = run_cli(sandbox_env, "--alerts-dir", str(blocker / "alerts"), cwd=tmp_path)
    assert out.returncode == 3, (out.stdout, out.stderr)
    [line] = error_lines(out)
    assert str(blocker / "alerts") in line and "--alerts-dir" in line
    assert out.stdout == ""


def test_working_directory_without_room_for_the_alerts_exits_3(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "state").write_text("a file where state/log/alerts should go")
    out = run_cli(sandbox_env, cwd=tmp_path)
    assert out.returncode == 3, (out.stdout, out.stderr)
    [line] = error_lines(out)
    assert str(tmp_path / "state") in line and "--alerts-dir" in line


def test_a_deleted_working_directory_exits_3(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "$0" -m sync_ci ci-loop'
    out = subprocess.run(
        ["sh", "-c", script, sys.executable],
        capture_output=True,
        text=True,
        env={**sandbox_env, "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert out.returncode == 3, (out.stdout, out.stderr)
    [line] = error_lines(out)
    assert "working directory" in line and "--alerts-dir" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_working_directory_exits_3(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o555)
    try:
        out = run_cli(sandbox_env, cwd=work)
    finally:
        work.chmod(0o755)
    assert out.returncode == 3, (out.stdout, out.stderr)
    [line] = error_lines(out)
    assert str(work) in line


def test_invoke_ci_loop_calls_the_command_with_its_values(
    sandbox_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`invoke ci-loop` hands its typed values to the command: the alert directory, the outputs."""
    from tests.test_smoke import invoke_in

    alerts, result = tmp_path / "elsewhere" / "alerts", tmp_path / "r.json"
    argv = ("ci-loop", "--alerts-dir", str(alerts), "--json", str(result))
    code = invoke_in(sandbox_env, tmp_path, monkeypatch, *argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("ci-loop: ok") and captured.out.count("\n") == 1
    assert alerts.is_dir() and not (tmp_path / "state/log/alerts").exists()
    document = json.loads(result.read_text())
    assert document["ok"] is True and document["mode"] == "read-only"
