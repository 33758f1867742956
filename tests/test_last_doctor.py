"""The last doctor report: doctor writes it, alert reads it back (writer, then reader)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

from sync_ci.field import last_doctor
from sync_ci.field.alerts import failing_rows, read_last_doctor
from sync_ci.field.doctor import save_report
from sync_ci.report import Result, make_report


def test_doctor_keeps_its_report_where_alert_reads_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    report = make_report(
        suite="doctor",
        target="live",
        mode="field",
        sha="",
        started_at=datetime(2026, 12, 1, 6, 30, tzinfo=UTC),
        duration_s=0.5,
        results=[
            Result(id="worker-install", title="t", status="fail", detail="install broke"),
            Result(id="disk-free", title="t", status="pass", detail="ok"),
        ],
    )
    save_report(report, state)
    kept = state / last_doctor.LAST_DOCTOR
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    document = read_last_doctor(state)
    assert document == report.to_json()
    rows = failing_rows(document, now=datetime(2026, 12, 1, 6, 31, tzinfo=UTC))
    assert [row["id"] for row in rows] == ["worker-install"]


def test_no_report_or_a_broken_one_reads_as_none(tmp_path: Path) -> None:
    assert read_last_doctor(tmp_path) is None
    (tmp_path / last_doctor.LAST_DOCTOR).write_text("{not json")
    assert read_last_doctor(tmp_path) is None
