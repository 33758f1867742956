"""verify: the seed's checklist, automated against the sandbox and a real crontab."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sync_ci import cron, verify
from sync_ci.config import Secrets, Settings
from tests.field.conftest import REPO, run_cli


def test_verify_tenant_end_to_end(
    tenant_settings: Settings, cron_user: str, fake_exe: Path
) -> None:
    paths = cron.resolve_paths("tenant", exe=str(fake_exe), state_dir=tenant_settings.state_dir)
    cron.install("tenant", paths, user=cron_user)
    report = verify.verify("tenant", tenant_settings, cron_user=cron_user, repo=REPO)
    rows = {r.id: r for r in report.results}
    assert list(rows) == ["crontab", "alert-in-status", "lints", "cleanup"]
    assert rows["crontab"].status == "pass"
    assert "doctor --silent" in rows["crontab"].detail
    assert rows["alert-in-status"].status == "pass", rows["alert-in-status"].detail
    assert rows["cleanup"].status == "pass", rows["cleanup"].detail
    assert rows["lints"].status in ("pass", "skip")


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


def test_cli_verify_prints_a_table(
    field_env: dict[str, str], cron_user: str, fake_exe: Path, tmp_path: Path
) -> None:
    done = run_cli(
        field_env,
        "cron",
        "install",
        "--role",
        "tenant",
        "--exe",
        str(fake_exe),
        "--user",
        cron_user,
    )
    assert done.returncode == 0, done.stderr
    out = run_cli(field_env, "verify", "--role", "tenant", "--cron-user", cron_user)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "alert-in-status" in out.stdout
    assert "crontab" in out.stdout
