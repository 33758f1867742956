"""Status view: alert files and /_status as one table; the page checked in headless Chromium."""

from __future__ import annotations

import json
import re
import secrets
import socket
import stat
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sync_ci import alert_files
from sync_ci.alert_files import AlertFile
from sync_ci.config import Settings
from sync_ci.field import alerts, status_page, status_rows
from sync_ci.field.status_rows import StatusRow
from sync_ci.sandbox.launcher import Sandbox
from tests.browser import CHROMIUM, CONSOLE, run_chromium
from tests.field.conftest import run_cli

__all__ = ["CHROMIUM", "run_chromium"]  # tests.e2e loads pages through these names too

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def pairs(*named: tuple[str, str]) -> list[tuple[AlertFile, str]]:
    found = [(alert_files.parse_path(Path(name)), title) for name, title in named]
    return [(item, title) for item, title in found if item is not None]


def test_file_rows_only_the_latest_unrecovered_degradation_fails() -> None:
    files = pairs(
        ("sync-degraded-2024-05-01T06-00-00Z.md", "Sync degraded: worker-get"),
        ("sync-degraded-20240420T000000Z.md", "Sync degraded: old"),  # the older name form
        ("unrelated.md", "ignored"),
    )
    rows = status_rows.file_rows(files)
    assert [(r.name[:22], r.failing) for r in rows] == [
        ("sync-degraded-2024-05-", True),
        ("sync-degraded-20240420", False),
    ]
    assert rows[0].detail == "Sync degraded: worker-get"
    recovered = files + pairs(("sync-recovered-2024-05-01T07-00-00Z.md", "ok"))
    assert not any(r.failing for r in status_rows.file_rows(recovered))
    again = recovered + pairs(("sync-degraded-2024-05-01T08-00-00Z.md", "again"))
    assert [r.name for r in status_rows.file_rows(again) if r.failing] == [
        "sync-degraded-2024-05-01T08-00-00Z.md"
    ]


def test_alert_file_contract_round_trips_and_writes_owner_only(tmp_path: Path) -> None:
    at = datetime(2026, 11, 27, 6, tzinfo=UTC)
    written = alert_files.write(tmp_path / "a" / "alerts", "degraded", at, "# Sync degraded: x\n")
    assert written.name == "sync-degraded-2026-11-27T06-00-00Z.md"
    assert alert_files.parse_name(written.name) == ("degraded", at)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700
    assert [f.path for f in alert_files.scan(written.parent)] == [written]
    assert alert_files.read_title(written) == "Sync degraded: x"
    assert alert_files.parse_name("sync-degraded-2026-13-27T06-00-00Z.md") is None


def test_worker_rows_and_order_failing_first() -> None:
    summary = {
        "checks": {
            "old-check": {
                "count": 3,
                "tenants": ["a"],
                "tenant_count": 1,
                "last_seen": "2024-04-01T00:00:00Z",
                "last_message": "old",
            },
            "doctor-failed": {
                "count": 2,
                "tenants": ["a", "b"],
                "tenant_count": 2,
                "last_seen": "2024-05-01T11:00:00Z",
                "last_message": "<b>x</b>",
            },
        },
        "silent_tenants": [
            {"tenant": "c", "last_seen": "2024-04-30T00:00:00Z", "silent_for_s": 129600}
        ],
    }
    rows = status_rows.order_rows(status_rows.worker_rows(summary, NOW))
    assert [(r.name, r.failing) for r in rows] == [
        ("doctor-failed", True),
        ("silent tenant c", True),
        ("old-check", False),
    ]
    assert rows[1].detail == "no heartbeat for 36 h"


def test_render_html_is_self_contained_and_escaped() -> None:
    rows = [
        StatusRow(
            source="field",
            name="ok-one",
            failing=False,
            count=1,
            tenants=1,
            last_seen="2024-05-01T11:59:00Z",
            detail="fine",
        ),
        StatusRow(
            source="field",
            name="bad-one",
            failing=True,
            count=2,
            tenants=1,
            last_seen="2024-04-01T00:00:00Z",
            detail="<script>alert(1)</script>",
        ),
    ]
    page = status_page.render_html(rows, generated_at=NOW)
    assert "<title>Sync status</title>" in page
    assert "1 failing" in page
    assert page.index("bad-one") < page.index("ok-one")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:|//)", page)


def test_cli_status_reads_alert_files_and_worker(
    tenant_settings: Settings, field_env: dict[str, str], tmp_path: Path
) -> None:
    check = f"status-{tenant_settings.tenant_id}"
    assert alerts.send_alert(tenant_settings, check, "seen by status").new_delivered
    alerts_dir = tmp_path / "alerts"
    alert_files.write(alerts_dir, "degraded", datetime.now(UTC), "# Sync degraded: catalog\n")
    page = tmp_path / "status.html"
    done = run_cli(field_env, "status", "--alerts-dir", str(alerts_dir), "--html", str(page))
    assert done.returncode == 1, done.stderr  # something is failing
    assert check in done.stdout
    assert "Sync degraded: catalog" in done.stdout
    assert page.read_text().count('data-status="fail"') >= 2
    assert stat.S_IMODE(page.stat().st_mode) == 0o600


# --- never blind -----------------------------------------------------------------------------


class CraftedStatus:
    """A real HTTP server on 127.0.0.1 answering GET /_status with a fixed status and body."""

    def __init__(self, status_code: int, body: bytes) -> None:
        answer = (status_code, body)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code, data = answer
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CraftedStatus:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def worker_env(field_env: dict[str, str], url: str) -> dict[str, str]:
    """A maintainer whose settings name a Worker (no sandbox ready file) and some admin token."""
    env = {k: v for k, v in field_env.items() if k != "SYNC_CI_SANDBOX"}
    env.update(
        SYNC_CI_TARGET="ci", SYNC_CI_WORKER_URL=url, SYNC_CI_ADMIN_TOKEN=secrets.token_hex(16)
    )
    if not url:
        del env["SYNC_CI_WORKER_URL"]
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def empty_alerts(tmp_path: Path) -> Path:
    directory = tmp_path / "alerts"
    directory.mkdir()
    return directory


@pytest.mark.parametrize("source", ["unreachable", "401", "no-url", "not-json", "wrong-shape"])
def test_status_exits_3_naming_a_worker_it_could_not_read(
    source: str, sandbox: Sandbox, field_env: dict[str, str], tmp_path: Path
) -> None:
    body = b"<html>oops" if source == "not-json" else b'{"checks": ["a list"]}'
    with CraftedStatus(200, body) as crafted:
        url = {
            "unreachable": f"http://127.0.0.1:{free_port()}",
            "401": sandbox.info.worker.url,  # the real reference Worker, with a wrong admin token
            "no-url": "",
        }.get(source, crafted.url)
        env = worker_env(field_env, url)
        done = run_cli(env, "status", "--alerts-dir", str(empty_alerts(tmp_path)))
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "no alerts recorded" not in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("UNREAD"))
    assert "Worker /_status" in row
    expected = {
        "unreachable": "127.0.0.1",
        "401": "401",
        "no-url": "SYNC_CI_WORKER_URL",
        "not-json": "not JSON",
        "wrong-shape": "/_status shape",
    }[source]
    assert expected in row, row
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("how", ["missing", "a-file"])
def test_status_exits_3_when_the_alert_directory_cannot_be_read(
    how: str, field_env: dict[str, str], tmp_path: Path
) -> None:
    alerts_dir = tmp_path / "alerts"
    if how == "a-file":
        alerts_dir.write_text("not a directory")
    done = run_cli(field_env, "status", "--alerts-dir", str(alerts_dir))
    assert done.returncode == 3, (done.stdout, done.stderr)
    row = next(line for line in done.stdout.splitlines() if line.startswith("UNREAD"))
    assert "ci-loop" in row and str(alerts_dir) in row and "--alerts-dir" in row
    assert "no alerts recorded" not in done.stdout


def test_no_alerts_only_when_both_sources_were_read(
    field_env: dict[str, str], tmp_path: Path
) -> None:
    with CraftedStatus(200, b'{"checks": {}, "silent_tenants": []}') as crafted:
        done = run_cli(
            worker_env(field_env, crafted.url),
            "status",
            "--alerts-dir",
            str(empty_alerts(tmp_path)),
        )
    assert (done.returncode, done.stdout) == (0, "no alerts recorded\n"), done.stderr


HOSTILE = "\x1b[2J\x1b[Hno alerts recorded\r\nall clear\x07\u202e"


def test_outside_text_cannot_clear_the_screen_or_forge_a_verdict(
    field_env: dict[str, str], tmp_path: Path
) -> None:
    summary = {
        "checks": {
            f"doctor{HOSTILE}": {
                "count": 1,
                "tenants": [f"t{HOSTILE}"],
                "tenant_count": 1,
                "last_seen": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "last_message": f"<b>{HOSTILE}</b>",
            }
        },
        "silent_tenants": [{"tenant": HOSTILE, "last_seen": "", "silent_for_s": 7200}],
    }
    alerts_dir = empty_alerts(tmp_path)
    title = f"# Sync degraded: {HOSTILE}\n"
    alert_files.write(alerts_dir, "degraded", datetime.now(UTC), title)
    page = tmp_path / "status.html"
    with CraftedStatus(200, json.dumps(summary).encode()) as crafted:
        done = run_cli(
            worker_env(field_env, crafted.url),
            "status",
            "--alerts-dir",
            str(alerts_dir),
            "--html",
            str(page),
        )
    assert done.returncode == 1, done.stderr
    for text in (done.stdout, page.read_text()):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", text), repr(text)
        assert "\\x1b[2J" in text  # shown, made visible
    lines = done.stdout.splitlines()
    assert "no alerts recorded" not in lines and "all clear" not in lines
    assert lines[-1] == "3 failing"
    assert all(line.startswith(("state", "-", "FAIL", "3 failing")) for line in lines), lines
    html_page = page.read_text()
    assert "<b>" not in html_page and "&lt;b&gt;" in html_page
    assert html_page.count("<tr class=") == 3


@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)"
)
def test_page_renders_in_chromium_failing_first_without_console_errors(tmp_path: Path) -> None:
    rows = [
        StatusRow(
            source="ci-loop",
            name=f"ok-{i}",
            failing=False,
            count=1,
            tenants=0,
            last_seen=f"2024-05-01T0{i}:00:00Z",
            detail="recovered",
        )
        for i in range(3)
    ]
    rows.append(
        StatusRow(
            source="field",
            name="doctor-failed",
            failing=True,
            count=7,
            tenants=3,
            last_seen="2024-04-30T00:00:00Z",
            detail="Worker down",
        )
    )
    page = tmp_path / "status.html"
    page.write_text(status_page.render_html(rows, generated_at=NOW))
    done = run_chromium(page, tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<title>Sync status</title>" in dom
    assert "1 failing" in dom
    order = re.findall(r'<tr class="(fail|ok)"', dom)
    assert order == ["fail", "ok", "ok", "ok"]
    assert [line for line in done.stderr.splitlines() if CONSOLE.search(line)] == []


@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)"
)
def test_console_error_detector_catches_a_broken_page(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>notDefined();</script></body></html>")
    done = run_chromium(page, tmp_path / "profile")
    assert any(CONSOLE.search(line) and "notDefined" in line for line in done.stderr.splitlines())
