"""Alerts: idempotency, bounded retries, an owner-only spool that loses nothing, no tracebacks."""

from __future__ import annotations

import json
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sync_ci.config import Settings
from sync_ci.contract import ALERT_LIMIT_BYTES
from sync_ci.errors import UnreachableError, UsageError
from sync_ci.field import alerts
from sync_ci.field.alerts import Alert, Deadline, Spool
from sync_ci.field.status import fetch_status
from sync_ci.worker import Answer
from tests.field.conftest import run_cli

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make(check: str = "doctor-failed", nonce: str = "abc123", **kw: Any) -> Alert:
    return alerts.new_alert(
        check, "boom", tenant="t-1", host="h", version="0.1.0", now=NOW, nonce=nonce, **kw
    )


def blocked_state_dir(tmp_path: Path) -> Path:
    """A state directory nobody can create, root included: its parent is a regular file."""
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("a regular file where the state directory's parent should be")
    return blocker / "state"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_key_is_fixed_at_creation_and_in_the_workers_alphabet() -> None:
    alert = make("doctor failed / weird!")
    assert alert.idempotency_key == "t-1.doctor-failed-weird.20240501T120000Z.abc123"
    assert alert.to_json()["ts"] == "2024-05-01T12:00:00Z"
    assert set(alert.to_json()) == {"check", "message", "host", "version", "ts", "idempotency_key"}


def test_a_multi_line_message_is_sent_as_one_line_the_contract_accepts() -> None:
    from sync_ci import contract

    alert = alerts.new_alert(
        "doctor-failed",
        "line one\n\tline two \x1b[2J",
        tenant="t-1",
        host="host\r\nforged",
        version="0.1.0",
        now=NOW,
        nonce="abc123",
    )
    assert alert.message == "line one line two \\x1b[2J"
    assert alert.host == "host forged"
    contract.validate_alert(alert.to_json())  # raises on any control character
    with pytest.raises(UsageError, match="control characters"):
        make("doctor\x1bfailed")


def test_fit_alert_trims_rows_then_message_to_the_limit() -> None:
    rows = [{"id": f"r{i}", "detail": "x" * 190} for i in range(20)]
    fitted = make(rows=rows)
    assert alerts.body_size(fitted) <= ALERT_LIMIT_BYTES
    assert len(fitted.rows) == 20
    huge = alerts.fit_alert(
        Alert(
            check="c",
            message="m" * 40_000,
            host="h",
            version="v",
            ts="t",
            idempotency_key="k",
            rows=tuple(rows),
        )
    )
    assert alerts.body_size(huge) <= ALERT_LIMIT_BYTES
    assert huge.rows == ()


def test_failing_rows_only_from_a_recent_report() -> None:
    doc = {
        "started_at": "2024-05-01T11:30:00Z",
        "results": [
            {"id": "worker", "status": "fail", "detail": "down"},
            {"id": "settings", "status": "pass"},
        ],
    }
    assert alerts.failing_rows(doc, now=NOW) == [
        {"id": "worker", "status": "fail", "detail": "down"}
    ]
    assert alerts.failing_rows(doc, now=NOW + timedelta(hours=2)) == []
    assert alerts.failing_rows({"results": "nope"}, now=NOW) == []


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (202, "delivered"),
        (200, "delivered"),
        (429, "retry"),
        (503, "retry"),
        (401, "held"),
        (403, "held"),
        (413, "rejected"),
        (400, "rejected"),
    ],
)
def test_classify(status: int, verdict: str) -> None:
    assert alerts.classify(status) == verdict


def answer(status: int, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status=status, headers=headers or {}, body=b"{}", elapsed_s=0.0, url="u")


def test_deliver_retries_with_backoff_inside_the_budget() -> None:
    clock = [0.0]
    sleeps: list[float] = []
    calls: list[float] = []

    def post(body: Any, timeout_s: float) -> Answer:
        calls.append(timeout_s)
        clock[0] += timeout_s  # every attempt times out
        raise UnreachableError("timed out")

    def sleep(s: float) -> None:
        sleeps.append(s)
        clock[0] += s

    verdict, _ = alerts.deliver(make(), post, Deadline(10.0, clock=lambda: clock[0]), sleep)
    assert verdict == "retry"
    assert clock[0] <= 10.0
    assert len(calls) >= 2
    assert sleeps == sorted(sleeps)
    assert all(t <= alerts.ATTEMPT_TIMEOUT_S for t in calls)


def test_deliver_honours_retry_after_and_stops_on_success() -> None:
    answers = [answer(429, {"retry-after": "1"}), answer(202)]
    sleeps: list[float] = []
    verdict, _ = alerts.deliver(make(), lambda b, t: answers.pop(0), Deadline(10.0), sleeps.append)
    assert verdict == "delivered"
    assert sleeps == [1.0]


def test_spool_is_owner_only_ordered_and_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state", limit=3)
    for i in range(5):
        spool.enqueue(make(nonce=f"n{i}"))
    assert stat.S_IMODE(spool.dir.stat().st_mode) == 0o700
    pending = spool.pending()
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in pending)
    assert [spool.load(p).idempotency_key[-2:] for p in pending] == ["n2", "n3", "n4"]
    assert spool.dropped() == 1  # the last enqueue dropped one; the earlier drop went into a note
    notes = [r for p in pending for r in spool.load(p).rows if r.get("id") == "alert-spool"]
    assert notes
    assert "dropped" in str(notes[0]["detail"])


def test_send_delivers_once_and_a_repeat_is_deduplicated(tenant_settings: Settings) -> None:
    check = f"chk-{tenant_settings.tenant_id}"
    sent = alerts.send_alert(tenant_settings, check, "first")
    assert sent.new_delivered
    assert sent.pending == 0
    repeat = alerts.tenant_poster(tenant_settings)
    body = {
        "check": check,
        "message": "first",
        "host": "h",
        "version": "v",
        "ts": "t",
        "idempotency_key": sent.keys[0],
    }
    assert repeat(body, 3.0).status == 200
    stats = fetch_status(tenant_settings)["checks"][check]
    assert stats["count"] == 1
    assert stats["tenants"] == [tenant_settings.tenant_id]


def test_worker_down_loses_nothing_and_delivers_oldest_first_once(
    tenant_settings: Settings,
) -> None:
    down = tenant_settings.with_values(worker_url=closed_port_url())
    checks = [f"down-{tenant_settings.tenant_id}-{i}" for i in range(3)]
    for check in checks:
        result = alerts.send_alert(down, check, "while down", budget_s=1.0)
        assert not result.new_delivered
        assert "connection" in result.error
    spool = Spool(tenant_settings.state_dir)
    assert len(spool.pending()) == 3

    flushed = alerts.flush_spool(tenant_settings)
    assert flushed.delivered == 3
    assert flushed.pending == 0
    assert [k.split(".")[1] for k in flushed.keys] == checks  # oldest first
    assert alerts.flush_spool(tenant_settings).delivered == 0  # nothing sent twice
    status = fetch_status(tenant_settings)["checks"]
    assert [status[c]["count"] for c in checks] == [1, 1, 1]


def test_bad_token_keeps_the_alert_spooled(tenant_settings: Settings) -> None:
    from sync_ci.config_env import Secrets

    wrong = tenant_settings.with_values(secrets=Secrets(tenant_token="0" * 64))
    result = alerts.send_alert(wrong, "bad-token", budget_s=2.0)
    assert not result.new_delivered
    assert "401" in result.error
    assert result.pending == 1


def test_cli_alert_exit_codes_and_no_traceback(field_env: dict[str, str], tmp_path: Path) -> None:
    done = run_cli(field_env, "alert", "cli-check", "--message", "from the cli")
    assert done.returncode == 0, done.stderr
    assert "delivered" in done.stdout

    down = {**field_env, "SYNC_CI_WORKER_URL": closed_port_url()}
    failed = run_cli(down, "alert", "cli-check-down")
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert "not delivered" in failed.stderr
    assert "connection failed" in failed.stderr
    assert "1 waiting" in failed.stderr

    again = run_cli(field_env, "alert", "cli-check-after")
    assert again.returncode == 0
    assert "2 sent" in again.stdout


def test_cli_alert_refuses_a_check_name_no_worker_would_take(
    field_env: dict[str, str], tmp_path: Path
) -> None:
    done = run_cli(field_env, "alert", "bad\x1b[31mred")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        'sync-ci: error: alert check name "bad\\x1b[31mred" must be 1-100 characters with no '
        "control characters (e.g. doctor-failed)"
    ]
    spool = Path(field_env["SYNC_CI_STATE_DIR"]) / "spool"
    assert not spool.exists() or not any(spool.glob("*.json"))


def test_cli_alert_with_unwritable_state_dir_still_delivers(
    field_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**field_env, "SYNC_CI_STATE_DIR": str(blocked_state_dir(tmp_path))}
    done = run_cli(env, "alert", "no-spool")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_alert_attaches_recent_failing_doctor_rows(tenant_settings: Settings) -> None:
    state = tenant_settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / "last-doctor.json").write_text(
        json.dumps(
            {
                "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "results": [{"id": "worker", "status": "fail", "detail": "Worker down"}],
            }
        )
    )
    check = f"rows-{tenant_settings.tenant_id}"
    assert alerts.send_alert(tenant_settings, check).new_delivered
    stats = fetch_status(tenant_settings)["checks"][check]
    assert stats["last_rows"] == [{"id": "worker", "status": "fail", "detail": "Worker down"}]
