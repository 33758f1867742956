"""Doctor: quiet when healthy, exit code = failure count, light imports, real servers."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sync_ci import guards
from sync_ci.config import Settings
from sync_ci.contract import CatalogEntry, parse_catalog, sha256_hex
from sync_ci.field import (
    cron,
    cron_table,
    doctor,
    doctor_context,
    doctor_host,
    doctor_local,
    doctor_worker,
)
from sync_ci.report import Result, make_report
from sync_ci.store import endpoint_from_settings, open_store
from sync_ci.worker import Answer, WorkerClient, WorkerTarget
from tests.conftest import FaultySandbox
from tests.field.conftest import REPO, run_cli
from tests.field.test_alerts import blocked_state_dir, closed_port_url

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


# --- pure --------------------------------------------------------------------------------------


def test_cap_exit_never_wraps_to_zero() -> None:
    rows = [Result(id=f"r{i}", title="t", status="fail") for i in range(256)]
    report = make_report(
        suite="doctor",
        target="sandbox",
        mode="field",
        sha="",
        started_at=datetime.now(UTC),
        duration_s=0.0,
        results=rows,
    )
    assert doctor.cap_exit(report) == 100


def test_evaluate_health() -> None:
    assert doctor_worker.evaluate_health(200, {"ok": True, "contract": 1}).status == "pass"
    assert "contract 2" in doctor_worker.evaluate_health(200, {"ok": True, "contract": 2}).detail
    assert doctor_worker.evaluate_health(200, {"ok": True}).status == "fail"
    assert doctor_worker.evaluate_health(503, None).status == "fail"


def test_evaluate_skew_threshold_both_ways() -> None:
    assert doctor_worker.evaluate_skew("Wed, 01 May 2024 12:04:00 GMT", NOW).status == "pass"
    ahead = doctor_worker.evaluate_skew("Wed, 01 May 2024 11:54:00 GMT", NOW)
    assert ahead.status == "fail"
    assert "360 s ahead" in ahead.detail
    assert doctor_worker.evaluate_skew("Wed, 01 May 2024 12:06:00 GMT", NOW).status == "fail"
    assert doctor_worker.evaluate_skew("", NOW).status == "fail"


def test_evaluate_pull_age_and_free_space_and_secrets(tmp_path: Path) -> None:
    now = NOW.timestamp()
    assert doctor_local.evaluate_pull_age(None, now).status == "skip"
    assert doctor_local.evaluate_pull_age(now - 3600, now).status == "pass"
    assert doctor_local.evaluate_pull_age(now - 25 * 3600, now).status == "fail"
    assert doctor_local.evaluate_free_space(10 * 2**20, tmp_path).status == "fail"
    assert doctor_local.evaluate_free_space(10 * 2**30, tmp_path).status == "pass"
    assert doctor_local.evaluate_secrets_file(tmp_path, 0o600, 5, 5).status == "pass"
    assert doctor_local.evaluate_secrets_file(tmp_path, 0o640, 5, 5).status == "fail"
    assert doctor_local.evaluate_secrets_file(tmp_path, 0o600, 6, 5).status == "fail"


def test_summarize_parity_keeps_failing_cells() -> None:
    cells = [
        Result(id="a", title="", status="pass"),
        Result(id="b", title="", status="fail"),
        Result(id="c", title="", status="skip"),
    ]
    rows = doctor_host.summarize_parity(cells)
    assert [r.id for r in rows] == ["mirror-parity", "b"]
    assert [r.status for r in rows] == ["skip", "fail"]


BLOB = b"hello, tenant\n"
BLOB_SHA = sha256_hex(BLOB)
RAY = {"cf-ray": "0123456789abcdef-SJC", "server-timing": "kv;dur=1.0, total;dur=2.5"}


def answer(path: str, status: int = 200, body: bytes = b"", **headers: str) -> Answer:
    merged = {**RAY, "x-cache": "miss", **{k.replace("_", "-"): v for k, v in headers.items()}}
    return Answer(
        status=status,
        headers={k: v for k, v in merged.items() if v},
        body=body,
        elapsed_s=0.0,
        url=f"http://w{path}",
    )


def listing(generation: int = 3, **entries: str) -> dict[str, object]:
    return {
        "generation": generation,
        "entries": {n: {"sha256": d, "size": len(BLOB)} for n, d in entries.items()},
    }


def test_evaluate_install_wants_a_manifest_with_entries() -> None:
    good = json.dumps({"schema": 1, "object_base": "/o/", **listing(a=BLOB_SHA)}).encode()
    row, manifest = doctor_worker.evaluate_install(answer("/install", body=good))
    assert (row.status, row.detail) == ("pass", "generation 3, 1 entries")
    assert manifest is not None and manifest.object_base == "/o/"
    faulted = answer("/install", 503, b'{"error": "injected fault: 5xx_rate", "code": 503}')
    row, manifest = doctor_worker.evaluate_install(faulted)
    assert (row.status, manifest) == ("fail", None)
    assert "answered 503" in row.detail and "injected fault" in row.detail
    assert "0123456789abcdef-SJC" in row.detail
    empty = json.dumps({"schema": 1, "object_base": "/o/", **listing()}).encode()
    assert (
        "lists no entries"
        in doctor_worker.evaluate_install(answer("/install", body=empty))[0].detail
    )
    no_base = json.dumps({"schema": 1, **listing(a=BLOB_SHA)}).encode()
    assert (
        "object_base" in doctor_worker.evaluate_install(answer("/install", body=no_base))[0].detail
    )
    for body in (b"<html>", b'{"schema": 2}', b'{"error": "oops"}'):
        assert doctor_worker.evaluate_install(answer("/install", body=body))[0].status == "fail"


def test_evaluate_catalog_must_agree_with_install() -> None:
    manifest = doctor_worker.Manifest(
        catalog=parse_catalog({"schema": 1, **listing(a=BLOB_SHA, b=BLOB_SHA)}), object_base="/o/"
    )

    def judge(document: dict[str, object], with_manifest: bool = True) -> Result:
        body = json.dumps({"schema": 1, **document}).encode()
        return doctor_worker.evaluate_catalog(
            answer("/catalog", body=body), manifest if with_manifest else None
        )[0]

    assert judge(listing(a=BLOB_SHA, b=BLOB_SHA)).status == "pass"
    assert "generation 4, /install says 3" in judge(listing(4, a=BLOB_SHA, b=BLOB_SHA)).detail
    assert "only in /install: b" in judge(listing(a=BLOB_SHA)).detail
    assert "only in /catalog: c" in judge(listing(a=BLOB_SHA, b=BLOB_SHA, c=BLOB_SHA)).detail
    assert "differs for b" in judge(listing(a=BLOB_SHA, b="0" * 64)).detail
    assert "not compared" in judge(listing(4, a=BLOB_SHA), with_manifest=False).detail
    assert doctor_worker.evaluate_catalog(answer("/catalog", 502), manifest)[0].status == "fail"


def test_choose_sample_is_small_bounded_and_rotates() -> None:
    entries = [CatalogEntry(name=f"f{i}", sha256="0" * 64, size=i) for i in range(20)]
    huge = CatalogEntry(name="huge", sha256="1" * 64, size=doctor_worker.SAMPLE_MAX_BYTES + 1)
    picks = {doctor_worker.choose_sample([*entries, huge], seed=str(hour)) for hour in range(24)}
    assert all(len(p) == doctor_worker.READ_SAMPLE for p in picks)
    assert len(picks) > 1, "the sample should rotate with the seed"
    assert not any(huge in p for p in picks)
    assert doctor_worker.choose_sample([huge], seed="x") == (huge,)
    assert doctor_worker.choose_sample([], seed="x") == ()


def test_evaluate_objects_checks_every_sampled_digest() -> None:
    entry = CatalogEntry(name="a.txt", sha256=BLOB_SHA, size=len(BLOB))
    good = doctor_worker.evaluate_objects([(entry, answer(f"/o/{BLOB_SHA}", body=BLOB), "")])
    assert (good.status, good.detail) == ("pass", "1 match: a.txt")
    tampered = doctor_worker.evaluate_objects([(entry, answer(f"/o/{BLOB_SHA}", body=b"evil"), "")])
    assert tampered.status == "fail" and "hashing to" in tampered.detail
    gone = doctor_worker.evaluate_objects([(entry, answer(f"/o/{BLOB_SHA}", 404), "")])
    assert "answered 404" in gone.detail
    down = doctor_worker.evaluate_objects([(entry, None, "connection failed")])
    assert down.detail == "a.txt: connection failed"
    assert doctor_worker.evaluate_objects([]).status == "skip"


def test_evaluate_headers_names_each_missing_header() -> None:
    fine = [("/_health", answer("/_health", x_cache="")), ("/catalog", answer("/catalog"))]
    assert doctor_worker.evaluate_headers(fine).status == "pass"
    assert "colo SJC" in doctor_worker.evaluate_headers(fine).detail
    cases = {
        "GET /catalog: no cf-ray": answer("/catalog", cf_ray=""),
        "GET /catalog: cf-ray 'abc' is not": answer("/catalog", cf_ray="abc"),
        "GET /catalog: no server-timing": answer("/catalog", server_timing=""),
        "GET /catalog: server-timing 'kv;dur=1' has no total": answer(
            "/catalog", server_timing="kv;dur=1"
        ),
        "GET /catalog: no x-cache": answer("/catalog", x_cache=""),
        "GET /catalog: x-cache 'stale' is not hit|miss": answer("/catalog", x_cache="stale"),
    }
    for expected, broken in cases.items():
        row = doctor_worker.evaluate_headers([*fine, ("/catalog", broken)])
        assert row.status == "fail" and expected in row.detail, (expected, row.detail)
    # an error answer read no KV, so it owes no x-cache; it still owes cf-ray and server-timing
    assert (
        doctor_worker.evaluate_headers([("/catalog", answer("/catalog", 503, x_cache=""))]).status
        == "pass"
    )


def test_probe_writable_creates_and_removes_a_file(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state"
    assert doctor_context.probe_writable(state) == ""
    assert state.is_dir() and list(state.iterdir()) == []
    blocked = blocked_state_dir(tmp_path)
    assert doctor_context.probe_writable(blocked) == "Not a directory"
    assert doctor_context.probe_writable(blocked.parent) != ""
    row = doctor_local.evaluate_state_dir(blocked, "Not a directory")
    assert row.status == "fail" and "SYNC_CI_STATE_DIR" in row.detail
    assert doctor_local.evaluate_state_dir(state, "").status == "pass"


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
    cron_table.install("tenant", paths, user=cron_user)
    doctor_local.record_pull(tenant_settings.state_dir)
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
        "worker-install",
        "worker-catalog",
        "worker-objects",
        "worker-headers",
        "state-dir",
        "clock-skew",
        "cron-entry",
        "last-pull",
        "mirror-parity",
        "free-space",
        "alert-spool",
    }
    rows = {r["id"]: r for r in document["results"]}
    assert rows["mirror-parity"]["status"] == "pass"
    assert rows["worker-objects"]["observed"]["sampled"] == doctor_worker.READ_SAMPLE


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
    from sync_ci.field.status import fetch_status

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
    cron_table.uninstall(("tenant",), user=user)  # 1: cron-entry
    stamp = tenant_settings.state_dir / doctor_local.LAST_PULL_STAMP
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


def sandbox_control(settings: Settings, path: str, body: dict[str, object]) -> None:
    """POST to one of the sandbox Worker's `/_sandbox/*` control endpoints as the admin."""
    target = WorkerTarget(
        base_url=settings.worker_url, read_only=False, timeout_s=10, allowed_posts=(path,)
    )
    admin = {"authorization": f"Bearer {settings.secrets.admin_token}"}
    with WorkerClient(target) as client:
        answer = client.post(path, json_body=body, headers=admin, retry=False)
    assert answer.status == 200, answer.body


def test_clock_skew_from_the_workers_date_header(
    tenant_settings: Settings, field_env: dict[str, str]
) -> None:
    sandbox_control(tenant_settings, "/_sandbox/clock", {"offset_s": 900})
    try:
        target = WorkerTarget(base_url=tenant_settings.worker_url, read_only=True, timeout_s=5)
        with WorkerClient(target) as client:
            date = client.get("/_health").header("date")
        from email.utils import parsedate_to_datetime

        if abs((parsedate_to_datetime(date) - datetime.now(UTC)).total_seconds()) < 600:
            pytest.skip("the reference Worker's Date header ignores /_sandbox/clock")
        done = run_cli(field_env, "doctor", "clock-skew")
    finally:
        sandbox_control(tenant_settings, "/_sandbox/clock", {"offset_s": 0})
    assert done.returncode == 1
    assert "behind the Worker" in done.stdout


def doctor_rows(env: dict[str, str], out: Path, *names: str) -> tuple[int, dict[str, Any]]:
    """Run `sync-ci doctor` in a subprocess; return its exit code and its rows by id."""
    done = run_cli(env, "doctor", *names, "--json", str(out))
    assert "Traceback" not in done.stderr, done.stderr
    document = json.loads(out.read_text())
    failing = sum(r["status"] in ("fail", "error") for r in document["results"])
    assert done.returncode == failing, done.stdout
    return done.returncode, {r["id"]: r for r in document["results"]}


def on_sandbox(env: dict[str, str], settings: Settings) -> dict[str, str]:
    """Point a tenant environment at another sandbox (its ready file)."""
    return {**env, "SYNC_CI_SANDBOX": settings.sandbox_file}


def test_broken_worker_fails_the_read_path_rows(
    faulty_sandbox: FaultySandbox, field_env: dict[str, str], tmp_path: Path
) -> None:
    broken = on_sandbox(field_env, faulty_sandbox(faults={"5xx_rate": "1"}))
    code, rows = doctor_rows(broken, tmp_path / "d.json", "worker", "read-path")
    assert rows["worker"]["status"] == "pass", "/_health is exempt from faults"
    for row_id in ("worker-install", "worker-catalog"):
        assert rows[row_id]["status"] == "fail"
        assert "answered 503" in rows[row_id]["detail"]
        assert "injected fault: 5xx_rate" in rows[row_id]["detail"]
    assert rows["worker-objects"]["status"] == "skip"
    assert rows["worker-headers"]["status"] == "pass"
    assert code == 2


def test_corrupt_objects_fail_the_sample_through_the_real_worker(
    faulty_sandbox: FaultySandbox, field_env: dict[str, str], tmp_path: Path
) -> None:
    settings = faulty_sandbox()
    store = open_store(endpoint_from_settings(settings), guards.sandbox_admin_policy())
    catalog = parse_catalog(json.loads(store.get(f"{settings.live_root}catalog.json") or b""))
    for entry in catalog.entries:  # bit rot in the bucket, before any region cached a blob
        store.put(f"{settings.live_root}objects/{entry.sha256}", b"bit rot")
    code, rows = doctor_rows(on_sandbox(field_env, settings), tmp_path / "d.json", "read-path")
    assert rows["worker-install"]["status"] == rows["worker-catalog"]["status"] == "pass"
    assert rows["worker-objects"]["status"] == "fail"
    assert rows["worker-objects"]["detail"].count("answered 502") == doctor_worker.READ_SAMPLE
    assert code == 1


def test_unwritable_state_dir_fails_one_row_and_skips_what_needs_it(
    healthy: dict[str, str], tmp_path: Path
) -> None:
    state_dir = blocked_state_dir(tmp_path)
    names = ("state-dir", "last-pull", "alert-spool", "free-space")
    code, rows = doctor_rows(
        {**healthy, "SYNC_CI_STATE_DIR": str(state_dir)}, tmp_path / "d.json", *names
    )
    assert rows["state-dir"]["status"] == "fail"
    assert str(state_dir) in rows["state-dir"]["detail"]
    assert "Not a directory" in rows["state-dir"]["detail"]
    assert rows["last-pull"]["status"] == rows["alert-spool"]["status"] == "skip"
    assert code == 1
