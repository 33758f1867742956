"""The ci-loop pass history: one format, bounded, owner-only, written by run_pass, read back."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sync_ci import pass_history
from sync_ci.ci_loop import run_pass
from sync_ci.pass_history import PassRecord
from tests.conftest import FaultySandbox

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def test_a_record_round_trips_through_its_line() -> None:
    record = PassRecord(
        at=NOW, outcome="fail", failing=("install", "worker-get"), duration_s=1.25, target="live"
    )
    line = pass_history.to_line(record)
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line)["schema"] == "sync-ci/pass@1"
    assert pass_history.parse(line).records == (record,)


def test_lines_that_are_not_records_are_counted_and_left_out() -> None:
    good = pass_history.to_line(PassRecord(at=NOW, outcome="pass"))
    text = "\n".join(
        [
            "not json",
            '{"schema": "other@1", "at": "2026-11-27T06:00:00Z", "outcome": "pass"}',
            '{"schema": "sync-ci/pass@1", "at": "yesterday", "outcome": "pass"}',
            '{"schema": "sync-ci/pass@1", "at": "2026-11-27T06:00:00Z", "outcome": "maybe"}',
            "[1, 2]",
            good,
        ]
    )
    history = pass_history.parse(text)
    assert [r.outcome for r in history.records] == ["pass"]
    assert history.skipped == 5


def test_prune_keeps_thirty_days_and_at_most_two_thousand(tmp_path: Path) -> None:
    old = PassRecord(at=NOW - timedelta(days=31), outcome="fail")
    recent = [PassRecord(at=NOW - timedelta(minutes=i), outcome="pass") for i in range(2100)]
    kept = pass_history.prune([old, *recent], NOW)
    assert len(kept) == pass_history.MAX_RECORDS
    assert old not in kept and kept[-1].at == NOW and kept == sorted(kept, key=lambda r: r.at)


def test_append_is_bounded_owner_only_and_whole(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts"
    for day in range(40):
        at = NOW - timedelta(days=39 - day)
        pass_history.append(alerts, PassRecord(at=at, outcome="pass"), at)
    path = pass_history.path_for(alerts)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(alerts.stat().st_mode) == 0o700
    history = pass_history.read(alerts)
    assert len(history.records) == 31 and history.skipped == 0 and not history.problem
    assert [p.name for p in alerts.iterdir()] == [pass_history.FILE_NAME]  # no temporary left


def test_a_missing_or_unreadable_history_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    missing = pass_history.read(tmp_path / "nowhere")
    assert missing.records == () and "no ci-loop pass history" in missing.problem
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    pass_history.path_for(blocked).mkdir()  # a directory where the file should be
    unreadable = pass_history.read(blocked)
    assert unreadable.records == () and "cannot read" in unreadable.problem


def test_run_pass_writes_each_pass_and_the_history_reads_them_back(
    faulty_sandbox: FaultySandbox, tmp_path: Path
) -> None:
    from sync_ci.sandbox.attach import clear_faults, set_faults

    settings = faulty_sandbox()
    alerts = tmp_path / "alerts"
    times = [NOW + timedelta(hours=6 * i) for i in range(3)]
    set_faults(settings, {"5xx_rate": 1.0})
    failed = run_pass(settings, alerts_dir=alerts, now=times[0])
    clear_faults(settings)
    recovered = run_pass(settings, alerts_dir=alerts, now=times[1])
    healthy = run_pass(settings, alerts_dir=alerts, now=times[2])
    assert not failed.report.ok and recovered.recovery_file and healthy.report.ok
    assert (failed.history_problem, recovered.history_problem) == ("", "")
    history = pass_history.read(alerts)
    assert [(r.at, r.outcome, r.recovered) for r in history.records] == [
        (times[0], "fail", False),
        (times[1], "pass", True),
        (times[2], "pass", False),
    ]
    assert history.records[0].failing and all(
        not name.startswith("phase:") for name in history.records[0].failing
    )
    assert history.records[1].target == settings.target
