"""Status view: alert files and /_status as one table; the page checked in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync_ci import alerts, status
from sync_ci.config import Settings
from sync_ci.status import StatusRow
from tests.field.conftest import run_cli

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CONSOLE = re.compile(r":CONSOLE[:(]")


def test_file_rows_only_an_unrecovered_recent_degradation_fails() -> None:
    files = [
        ("sync-degraded-20240501T060000Z.md", "# Sync degraded: worker-get (20240501T060000Z)"),
        ("sync-degraded-20240420T000000Z.md", "# Sync degraded: old"),
        ("unrelated.md", "# ignored"),
    ]
    rows = status.file_rows(files, NOW)
    assert [(r.name[:22], r.failing) for r in rows] == [
        ("sync-degraded-20240501", True),
        ("sync-degraded-20240420", False),
    ]
    assert rows[0].detail == "Sync degraded: worker-get (20240501T060000Z)"
    recovered = status.file_rows([*files, ("sync-recovered-20240501T070000Z.md", "# ok")], NOW)
    assert not any(r.failing for r in recovered)


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
    rows = status.order_rows(status.worker_rows(summary, NOW))
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
    page = status.render_html(rows, generated_at=NOW)
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
    alerts_dir.mkdir()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (alerts_dir / f"sync-degraded-{stamp}.md").write_text(
        f"# Sync degraded: catalog ({stamp})\n\nmore\n"
    )
    page = tmp_path / "status.html"
    done = run_cli(field_env, "status", "--alerts-dir", str(alerts_dir), "--html", str(page))
    assert done.returncode == 1, done.stderr  # something is failing
    assert check in done.stdout
    assert "Sync degraded: catalog" in done.stdout
    assert page.read_text().count('data-status="fail"') >= 2


def run_chromium(page: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


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
    page.write_text(status.render_html(rows, generated_at=NOW))
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
