"""verify: the seed's checklist, automated against the sandbox and a real crontab."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from sync_ci.config import Settings
from sync_ci.config_env import Secrets
from sync_ci.field import cron, cron_table, verify
from tests.field.conftest import REPO, run_cli


def test_verify_runs_the_line_as_its_user_and_fails_one_they_cannot_run(
    tenant_settings: Settings, cron_user: str, fake_exe: Path
) -> None:
    """A line with root's paths in a user's crontab: verify runs it as the user and says no."""
    paths = cron.resolve_paths("tenant", exe=str(fake_exe), state_dir=tenant_settings.state_dir)
    cron_table.install("tenant", paths, user=cron_user)
    report = verify.verify("tenant", tenant_settings, cron_user=cron_user, repo=REPO)
    rows = {r.id: r for r in report.results}
    assert list(rows) == ["crontab", "cron-job", "alert-in-status", "lints", "cleanup"]
    assert rows["crontab"].status == "fail"
    assert f"out of reach of {cron_user}" in rows["crontab"].detail
    assert rows["cron-job"].status == "fail"
    assert "never took its lock" in rows["cron-job"].detail
    assert not (tenant_settings.state_dir / "last-doctor.json").exists()
    assert rows["alert-in-status"].status == "pass", rows["alert-in-status"].detail
    assert rows["cleanup"].status == "pass", rows["cleanup"].detail
    assert rows["lints"].status in ("pass", "skip")
    assert not report.ok


def test_verify_fails_without_the_entry_and_skips_without_admin(
    tenant_settings: Settings, cron_user: str
) -> None:
    no_admin = tenant_settings.with_values(
        secrets=Secrets(tenant_token=tenant_settings.secrets.tenant_token)
    )
    report = verify.verify("maintainer", no_admin, cron_user=cron_user, repo=REPO)
    rows = {r.id: r for r in report.results}
    assert rows["crontab"].status == "fail"
    assert "cron install --role maintainer" in rows["crontab"].detail
    assert rows["cron-job"].status == "skip"
    assert rows["alert-in-status"].status == "skip"
    assert not report.ok


def test_cleanup_step_with_a_synthetic_listing() -> None:
    settings_like = Settings(
        target="sandbox",
        bucket="",
        endpoint_url="",
        region_name="us-east-1",
        live_root="snappy-os/",
        ci_root="snappy-os-ci/",
        worker_url="",
        preview_url="",
        worker_timeout_s=5.0,
        tenant_id="",
        state_dir=Path("/nonexistent"),
        mirror_dir=Path("/nonexistent"),
        sha="abcdef1",
    )
    result = verify.verify_cleanup(settings_like, now=datetime(2024, 5, 1, tzinfo=UTC))
    assert result.status == "pass"
    assert "1 of 2 CI prefixes would go" in result.detail


class Recorder(BaseHTTPRequestHandler):
    """Stands in for the live Worker: records every request, answers GETs with empty JSON."""

    seen: ClassVar[list[tuple[str, str]]] = []

    def _answer(self, status: int) -> None:
        self.seen.append((self.command, self.path))
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = b'{"ok": true, "checks": {}, "tenants": {}}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200)

    def do_HEAD(self) -> None:
        self._answer(200)

    def do_POST(self) -> None:
        self._answer(202)

    def do_PUT(self) -> None:
        self._answer(201)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def live_worker() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A recording HTTP server on 127.0.0.1 in the live Worker's place."""
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Recorder.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("role", ["maintainer", "tenant"])
def test_verify_on_live_never_writes(
    role: str,
    live_worker: tuple[str, list[tuple[str, str]]],
    field_env: dict[str, str],
    cron_user: str,
    tmp_path: Path,
) -> None:
    """With everything it needs to alert, verify --target live sends not one write."""
    url, seen = live_worker
    env = {
        **field_env,
        "SYNC_CI_WORKER_URL": url,
        "SYNC_CI_TENANT_SECRET": secrets.token_hex(16),
        "SYNC_CI_ADMIN_TOKEN": secrets.token_hex(16),
    }
    env.pop("SYNC_CI_SANDBOX")
    out = run_cli(
        env,
        "verify",
        "--role",
        role,
        "--target",
        "live",
        "--cron-user",
        cron_user,
        "--repo",
        str(tmp_path),
    )
    assert "Traceback" not in out.stderr
    assert [m for m, _ in seen if m not in ("GET", "HEAD")] == []
    assert "verify never writes to production" in out.stdout


def test_cli_verify_prints_a_table(field_env: dict[str, str], cron_user: str) -> None:
    out = run_cli(field_env, "verify", "--role", "tenant", "--cron-user", cron_user)
    assert out.returncode == 1, out.stdout + out.stderr  # no entry installed for that user
    assert "alert-in-status" in out.stdout
    assert "cron-job" in out.stdout
    assert "crontab" in out.stdout
