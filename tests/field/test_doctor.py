"""Doctor: quiet when healthy, exit code = failure count, light imports, real servers."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync_ci import cron, doctor
from sync_ci.config import Settings
from sync_ci.report import Result, make_report
from sync_ci.worker import WorkerClient, WorkerTarget
from tests.field.conftest import REPO, run_cli
from tests.field.test_alerts import closed_port_url

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


# --- pure --------------------------------------------------------------------------------------


def test_cap_exit_never_wraps_to_zero() -> None:
    rows = [Result(id=f"r{i}", title="t", status="fail") for i in range(256)]
    report = make_report(
        suite="doctor",
        target="sandbox",
        mode="field",
        sha="",
        started_at="",
        duration_s=0.0,
        results=rows,
    )
    assert doctor.cap_exit(report) == 100


def test_evaluate_health() -> None:
    assert doctor.evaluate_health(200, {"ok": True, "contract": 1}).status == "pass"
    assert "contract 2" in doctor.evaluate_health(200, {"ok": True, "contract": 2}).detail
    assert doctor.evaluate_health(200, {"ok": True}).status == "fail"
    assert doctor.evaluate_health(503, None).status == "fail"


def test_evaluate_skew_threshold_both_ways() -> None:
    assert doctor.evaluate_skew("Wed, 01 May 2024 12:04:00 GMT", NOW).status == "pass"
    ahead = doctor.evaluate_skew("Wed, 01 May 2024 11:54:00 GMT", NOW)
    assert ahead.status == "fail"
    assert "360 s ahead" in ahead.detail
    assert doctor.evaluate_skew("Wed, 01 May 2024 12:06:00 GMT", NOW).status == "fail"
    assert doctor.evaluate_skew("", NOW).status == "fail"


def test_evaluate_pull_age_and_free_space_and_secrets(tmp_path: Path) -> None:
    now = NOW.timestamp()
    assert doctor.evaluate_pull_age(None, now).status == "skip"
    assert doctor.evaluate_pull_age(now - 3600, now).status == "pass"
    assert doctor.evaluate_pull_age(now - 25 * 3600, now).status == "fail"
    assert doctor.evaluate_free_space(10 * 2**20, tmp_path).status == "fail"
    assert doctor.evaluate_free_space(10 * 2**30, tmp_path).status == "pass"
    assert doctor.evaluate_secrets_file(tmp_path, 0o600, 5, 5).status == "pass"
    assert doctor.evaluate_secrets_file(tmp_path, 0o640, 5, 5).status == "fail"
    assert doctor.evaluate_secrets_file(tmp_path, 0o600, 6, 5).status == "fail"


def test_summarize_parity_keeps_failing_cells() -> None:
    cells = [
        Result(id="a", title="", status="pass"),
        Result(id="b", title="", status="fail"),
        Result(id="c", title="", status="skip"),
    ]
    rows = doctor.summarize_parity(cells)
    assert [r.id for r in rows] == ["mirror-parity", "b"]
    assert [r.status for r in rows] == ["skip", "fail"]


# --- against the sandbox -----------------------------------------------------------------------


def build_mirror(settings: Settings) -> None:
    target = WorkerTarget(base_url=settings.worker_url, read_only=True, timeout_s=5)
    with WorkerClient(target) as client:
        catalog = client.get("/catalog").json()
        for name, entry in catalog["entries"].items():
            path = settings.mirror_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get(f"/o/{entry['sha256']}").body)
    assert catalog["entries"], "the sandbox live root should be seeded"


@pytest.fixture
def healthy(
    tenant_settings: Settings, cron_user: str, fake_exe: Path, field_env: dict[str, str]
) -> dict[str, str]:
    """A tenant machine in order: cron entry, recent pull, mirror in parity."""
    paths = cron.resolve_paths("tenant", exe=str(fake_exe), state_dir=tenant_settings.state_dir)
    cron.install("tenant", paths, user=cron_user)
    doctor.record_pull(tenant_settings.state_dir)
    build_mirror(tenant_settings)
    return {**field_env, "SYNC_CI_TEST_CRON_USER": cron_user}


def test_healthy_silent_run_prints_nothing_and_exits_zero(
    healthy: dict[str, str], tenant_settings: Settings
) -> None:
    done = run_cli(healthy, "doctor", "--silent", "--cron-user", healthy["SYNC_CI_TEST_CRON_USER"])
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    saved = tenant_settings.state_dir / "last-doctor.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    document = json.loads(saved.read_text())
    assert document["ok"]
    assert {r["id"] for r in document["results"]} >= {
        "settings",
        "tenant",
        "worker",
        "clock-skew",
        "cron-entry",
        "last-pull",
        "mirror-parity",
        "free-space",
        "alert-spool",
    }
    assert next(r for r in document["results"] if r["id"] == "mirror-parity")["status"] == "pass"


def test_healthy_run_imports_neither_boto3_nor_aiohttp(healthy: dict[str, str]) -> None:
    probe = (
        "import sys\nfrom sync_ci.cli import main\n"
        f"rc = main(['doctor', '--silent', '--cron-user', {healthy['SYNC_CI_TEST_CRON_USER']!r}])\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore', 'aiohttp'}\n"
        "heavy = sorted(heavy)\n"
        "print(rc, heavy)\n"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=healthy,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.stdout.strip() == "0 []", done.stdout + done.stderr


def test_heartbeat_on_success_reaches_status(
    healthy: dict[str, str], tenant_settings: Settings
) -> None:
    from sync_ci.status import fetch_status

    done = run_cli(
        healthy,
        "doctor",
        "--silent",
        "--heartbeat",
        "--cron-user",
        healthy["SYNC_CI_TEST_CRON_USER"],
    )
    assert (done.returncode, done.stdout) == (0, "")
    assert tenant_settings.tenant_id in fetch_status(tenant_settings)["reporting_tenants"]


def test_exit_code_equals_the_failure_count(
    healthy: dict[str, str], tenant_settings: Settings, tmp_path: Path
) -> None:
    user = healthy["SYNC_CI_TEST_CRON_USER"]
    cron.uninstall(("tenant",), user=user)  # 1: cron-entry
    stamp = tenant_settings.state_dir / doctor.LAST_PULL_STAMP
    os.utime(stamp, (time.time() - 2 * 86400, time.time() - 2 * 86400))  # 2: last-pull
    victim = next(p for p in tenant_settings.mirror_dir.rglob("*") if p.is_file())
    victim.write_bytes(b"tampered")  # 3: one parity cell
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("SYNC_CI_ADMIN_TOKEN=x\n")
    secrets_file.chmod(0o600)
    os.chown(secrets_file, 12345, -1)  # 4: not our file
    report = tmp_path / "doctor.json"
    done = run_cli(
        {**healthy, "SYNC_CI_SECRETS_FILE": str(secrets_file)},
        "doctor",
        "--silent",
        "--json",
        str(report),
        "--cron-user",
        user,
    )
    document = json.loads(report.read_text())
    failing = sorted(r["id"] for r in document["results"] if r["status"] in ("fail", "error"))
    assert done.returncode == len(failing) == 4, done.stdout
    assert failing[:3] == ["cron-entry", "last-pull", "parity:" + failing[2].split(":", 1)[1]]
    assert "secrets-file" in failing
    assert "PASS" not in done.stdout
    assert "cron-entry" in done.stdout


def test_worker_down_counts_once_and_skips_what_needs_it(field_env: dict[str, str]) -> None:
    env = {**field_env, "SYNC_CI_WORKER_URL": closed_port_url()}
    done = run_cli(env, "doctor", "settings", "worker", "clock-skew", "mirror-parity")
    assert done.returncode == 1, done.stdout
    assert "Worker unreachable" in done.stdout
    assert "Traceback" not in done.stderr


def test_invalid_settings_fail_one_row_and_skip_the_rest(
    field_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "bad.json"
    done = run_cli({**field_env, "SYNC_CI_TARGET": "bogus"}, "doctor", "--json", str(out))
    rows = {r["id"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["settings"]["status"] == "fail"
    assert "'bogus' is unknown" in rows["settings"]["detail"]
    assert rows["worker"]["status"] == rows["tenant"]["status"] == "skip"
    assert done.returncode == sum(r["status"] in ("fail", "error") for r in rows.values())
    assert "Traceback" not in done.stderr


def test_list_checks_subset_and_unknown_names(field_env: dict[str, str], tmp_path: Path) -> None:
    listed = run_cli(field_env, "doctor", "--list-checks")
    assert listed.returncode == 0
    for check in doctor.CHECKS:
        assert check.name in listed.stdout
    out = tmp_path / "subset.json"
    done = run_cli(field_env, "doctor", "settings", "free-space", "--json", str(out))
    assert done.returncode == 0, done.stdout
    assert [r["id"] for r in json.loads(out.read_text())["results"]] == ["settings", "free-space"]
    bad = run_cli(field_env, "doctor", "nonsense")
    assert bad.returncode == 2
    assert bad.stderr.startswith("sync-ci: error: unknown check nonsense")


def test_clock_skew_from_the_workers_date_header(
    tenant_settings: Settings, field_env: dict[str, str]
) -> None:
    admin = {"authorization": f"Bearer {tenant_settings.secrets.admin_token}"}
    target = WorkerTarget(
        base_url=tenant_settings.worker_url,
        read_only=False,
        timeout_s=5,
        allowed_posts=("/_sandbox/clock",),
    )
    with WorkerClient(target) as client:
        assert (
            client.post("/_sandbox/clock", json_body={"offset_s": 900}, headers=admin).status == 200
        )
        try:
            date = client.get("/_health").header("date")
            from email.utils import parsedate_to_datetime

            if abs((parsedate_to_datetime(date) - datetime.now(UTC)).total_seconds()) < 600:
                pytest.skip("the reference Worker's Date header ignores /_sandbox/clock")
            done = run_cli(field_env, "doctor", "clock-skew")
        finally:
            client.post("/_sandbox/clock", json_body={"offset_s": 0}, headers=admin)
    assert done.returncode == 1
    assert "behind the Worker" in done.stdout
