"""The phase-mirror smoke against the real sandbox: passes, fails by phase, never writes where it must not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sync_ci import guards
from sync_ci.config import Settings
from sync_ci.contract import catalog_key, object_key
from sync_ci.errors import GuardViolation, UsageError
from sync_ci.smoke import READ_ONLY_PHASES, WRITE_PHASES, run_smoke
from sync_ci.smoke_run import open_run
from sync_ci.store import Store, StoreEndpoint, endpoint_from_settings, open_store
from tests.conftest import FaultySandbox


def admin(settings: Settings) -> Store:
    return open_store(endpoint_from_settings(settings), guards.sandbox_admin_policy())


def snapshot(store: Store, prefix: str = "") -> dict[str, bytes]:
    return {o.key: store.get(o.key) or b"" for o in store.list(prefix)}


def statuses(report_rows: tuple[object, ...]) -> dict[str, str]:
    return {r.id.removeprefix("phase:"): r.status for r in report_rows}  # type: ignore[attr-defined]


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**env, "PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "sync_ci", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=env["HOME"],
    )


@pytest.mark.strict_store
def test_write_mode_passes_and_writes_only_under_its_prefix(sandbox_settings: Settings) -> None:
    store = admin(sandbox_settings)
    live_before = snapshot(store, sandbox_settings.live_root)
    others_before = {k for k in snapshot(store) if not k.startswith(sandbox_settings.ci_prefix)}
    report = run_smoke(sandbox_settings, mode="write")
    assert statuses(report.results) == dict.fromkeys(WRITE_PHASES, "pass"), report.results
    assert report.ok
    after = snapshot(store)
    new_keys = {k for k in after if k not in others_before}
    assert new_keys and all(k.startswith(sandbox_settings.ci_prefix) for k in new_keys)
    assert f"{sandbox_settings.ci_prefix}_ci/run.json" in new_keys
    assert snapshot(store, sandbox_settings.live_root) == live_before
    assert any(c.status == "pass" for c in report.parity)


@pytest.mark.strict_store
def test_read_only_mode_writes_nothing(sandbox_settings: Settings) -> None:
    store = admin(sandbox_settings)
    before = snapshot(store)
    report = run_smoke(sandbox_settings, mode="read-only", sample=3)
    assert statuses(report.results) == dict.fromkeys(READ_ONLY_PHASES, "pass"), report.results
    assert snapshot(store) == before
    assert not sandbox_settings.mirror_dir.exists()


def test_read_only_clients_refuse_writes(sandbox_settings: Settings) -> None:
    with open_run(sandbox_settings, mode="read-only") as run:
        with pytest.raises(GuardViolation):
            run.store.put(f"{sandbox_settings.ci_prefix}x", b"x")
        with pytest.raises(GuardViolation):
            run.worker.post("/_alert", json_body={})


def test_live_target_refuses_write_mode(sandbox_settings: Settings) -> None:
    with (
        pytest.raises(UsageError, match="read-only"),
        open_run(sandbox_settings.with_values(target="live"), mode="write"),
    ):
        pass


def test_5xx_fault_fails_and_names_the_phase(faulty_sandbox: FaultySandbox) -> None:
    settings = faulty_sandbox({"5xx_rate": "1"})
    report = run_smoke(settings, mode="write")
    rows = statuses(report.results)
    assert rows["preflight"] == "pass" and rows["seed"] == "pass"
    assert rows["install"] == "fail"
    assert not report.ok
    assert "503" in next(r.detail for r in report.results if r.id == "phase:install")


@pytest.mark.strict_store
def test_corrupt_object_and_malformed_catalog_fail_read_only(faulty_sandbox: FaultySandbox) -> None:
    settings = faulty_sandbox()
    store = admin(settings)
    catalog = json.loads(store.get(catalog_key(settings.live_root)) or b"{}")
    digest = next(iter(catalog["entries"].values()))["sha256"]
    store.put(object_key(settings.live_root, digest), b"tampered bytes")
    report = run_smoke(settings, mode="read-only", sample=0)
    rows = statuses(report.results)
    assert rows["pull-dry"] == "fail" and rows["parity"] == "fail"
    assert digest[:12] in next(r.detail for r in report.results if r.id == "phase:pull-dry")

    broken = faulty_sandbox()
    broken_store = admin(broken)
    broken_store.put(
        catalog_key(broken.live_root), b'{"schema": 1, "generation": -1, "entries": {}}'
    )
    report = run_smoke(broken, mode="read-only")
    install = next(r for r in report.results if r.id == "phase:install")
    assert install.status == "fail" and "generation" in install.detail


def test_unreachable_worker_is_unmeasured(sandbox_settings: Settings) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = sandbox_settings.with_values(worker_url=f"http://127.0.0.1:{port}", worker_timeout_s=1.0)
    report = run_smoke(dead, mode="read-only")
    assert report.unmeasured is True
    assert statuses(report.results)["preflight"] == "fail"
    assert all(s == "skip" for k, s in statuses(report.results).items() if k != "preflight")


def test_cli_prints_table_and_matrix(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    out = run_cli(
        sandbox_env, "smoke", "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")
    )
    assert out.returncode == 0, out.stderr
    for phase in WRITE_PHASES:
        assert f"phase:{phase}" in out.stdout
    assert "bucket~worker" in out.stdout
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["schema"] == "sync-ci/result@1" and document["ok"] is True
    assert "<testsuite" in (tmp_path / "r.xml").read_text()


def test_cli_fault_on_ephemeral_sandbox_exits_1(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "SYNC_CI_SHA": "abcdef1234",
        "SYNC_CI_STATE_DIR": str(tmp_path / "state"),
    }
    out = run_cli(env, "smoke", "--fault", "5xx_rate=1")
    assert out.returncode == 1, out.stderr
    assert "FAIL" in out.stdout and "phase:install" in out.stdout


def test_cli_bad_input_is_one_line(sandbox_env: dict[str, str]) -> None:
    for args, code in ((["smoke", "--fault", "nonsense"], 2), (["smoke", "--sample", "-1"], 2)):
        out = run_cli(sandbox_env, *args)
        assert out.returncode == code, (args, out.stderr)
        assert out.stderr.startswith("sync-ci: error:") and "Traceback" not in out.stderr


@pytest.mark.strict_store
def test_ci_target_with_local_worker_writes_only_its_prefix(
    store_endpoint: StoreEndpoint, admin_store: Store, ci_sha: str, tmp_path: Path
) -> None:
    admin_store.put("snappy-os/catalog.json", b'{"schema": 1, "generation": 7, "entries": {}}')
    admin_store.put("snappy-os-ci/0123456789/old.txt", b"another run")
    before = snapshot(admin_store)
    env = {
        "HOME": str(tmp_path),
        "SYNC_CI_TARGET": "ci",
        "GITHUB_SHA": ci_sha,
        "SYNC_CI_BUCKET": store_endpoint.bucket,
        "SYNC_CI_ENDPOINT_URL": store_endpoint.endpoint_url,
        "SYNC_CI_ACCESS_KEY_ID": store_endpoint.access_key_id,
        "SYNC_CI_SECRET_ACCESS_KEY": store_endpoint.secret_access_key,
        "SYNC_CI_STATE_DIR": str(tmp_path / "state"),
    }
    out = run_cli(env, "smoke")
    assert out.returncode == 0, out.stdout + out.stderr
    after = snapshot(admin_store)
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith(f"snappy-os-ci/{ci_sha}/") for k in after.keys() - before.keys())
    assert f"snappy-os-ci/{ci_sha}/tenants/ci-smoke/state.json" in after


def test_live_target_smoke_is_read_only(sandbox_settings: Settings) -> None:
    store = admin(sandbox_settings)
    before = snapshot(store)
    live = sandbox_settings.with_values(target="live")
    report = run_smoke(live, mode="read-only")
    assert report.ok and report.mode == "read-only"
    assert snapshot(store) == before


def test_a_mirror_behind_the_worker_is_reported_as_behind_not_as_a_failure(
    sandbox_settings: Settings, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from sync_ci.ci_loop import run_pass
    from sync_ci.parity import mirror_path
    from sync_ci.sandbox.seed import seed_files

    files = seed_files()
    for name, data in files.items():
        target = mirror_path(sandbox_settings.mirror_dir, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    # The maintainer has not pulled the last publish yet: two files are the previous release's.
    for name in ("VERSION", "manifest.json"):
        mirror_path(sandbox_settings.mirror_dir, name).write_bytes(b"previous release\n")
    report = run_smoke(sandbox_settings, mode="read-only", sample=0)
    rows = {r.id: r for r in report.results}
    assert report.ok, report.results
    assert rows["phase:pull-dry"].observed["mirror_behind"] == 2
    assert "behind by 2 file(s)" in rows["phase:pull-dry"].detail
    assert "mirror is behind on 2 file(s)" in rows["phase:parity"].detail
    behind = [c for c in report.parity if "behind" in c.detail]
    assert {c.observed["artifact"] for c in behind} == {"VERSION", "manifest.json"}
    assert all(c.status == "skip" for c in behind)
    outcome = run_pass(sandbox_settings, alerts_dir=tmp_path / "alerts", now=datetime.now(UTC))
    assert outcome.report.ok and outcome.alert_file is None


def test_a_bucket_fault_still_fails_with_a_mirror_present(faulty_sandbox: FaultySandbox) -> None:
    from sync_ci.parity import mirror_path
    from sync_ci.sandbox.seed import seed_files

    settings = faulty_sandbox()
    for name, data in seed_files().items():
        target = mirror_path(settings.mirror_dir, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    store = admin(settings)
    catalog = json.loads(store.get(catalog_key(settings.live_root)) or b"{}")
    digest = catalog["entries"]["VERSION"]["sha256"]
    store.put(object_key(settings.live_root, digest), b"tampered\n")
    report = run_smoke(settings, mode="read-only", sample=0)
    assert statuses(report.results)["parity"] == "fail"
    failing = [c for c in report.parity if c.status == "fail"]
    assert failing and all(c.observed["artifact"] == "VERSION" for c in failing)


def test_regions_asked_are_the_configured_direct_ones(sandbox_settings: Settings) -> None:
    from sync_ci.config import Region
    from sync_ci.target import colo_of, regions_to_ask

    main = sandbox_settings.worker_url
    regions = (
        Region(name="sjc", url=main, colo="SJC"),
        Region(name="fra", url="http://127.0.0.1:9/", colo="FRA"),
        Region(name="sin", url=main, colo="SIN", proxy="http://127.0.0.1:8"),
    )
    live = sandbox_settings.with_values(target="live", regions=regions)
    assert [r.colo for r in regions_to_ask(live, main)] == ["FRA"]
    assert colo_of(live, main) == "SJC"
    assert regions_to_ask(live.with_values(target="ci"), main) == []


def test_the_freshness_bound_is_never_looser_than_the_contract() -> None:
    from sync_ci.smoke_catalog import declared_bound
    from sync_ci.smoke_run import FRESHNESS_BOUND_S

    assert declared_bound(3) == 3.0
    assert declared_bound(600) == FRESHNESS_BOUND_S
    assert declared_bound(None) == declared_bound(True) == declared_bound("5") == FRESHNESS_BOUND_S
    assert declared_bound(-1) == 0.0


def test_only_a_surface_allowed_to_lag_is_reported_behind() -> None:
    from sync_ci.parity import Observation, evaluate_cells

    good, old = "a" * 64, "b" * 64
    observations = [
        Observation(artifact="f", surface="bucket", digest=good),
        Observation(artifact="f", surface="worker", digest=good),
        Observation(artifact="f", surface="mirror", digest=old),
    ]
    lenient = {
        c.id: c for c in evaluate_cells(observations, expected={"f": good}, behind_ok=("mirror",))
    }
    assert lenient["parity:f:worker~mirror"].status == "skip"
    assert "mirror behind" in lenient["parity:f:worker~mirror"].detail
    strict = {c.id: c.status for c in evaluate_cells(observations, expected={"f": good})}
    assert strict["parity:f:worker~mirror"] == "fail"
    # When the bucket is the odd one out, the mirror is not "behind": the bucket is wrong.
    tampered = [Observation(artifact="f", surface="bucket", digest=old), *observations[1:2]]
    tampered.append(Observation(artifact="f", surface="mirror", digest=good))
    cells = {
        c.id: c.status
        for c in evaluate_cells(tampered, expected={"f": good}, behind_ok=("mirror",))
    }
    assert cells["parity:f:bucket~mirror"] == "fail"


def test_a_phase_passing_on_retry_keeps_what_the_retry_measured(
    sandbox_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ci-loop retries a failing phase once; the row kept is the retry's, threshold included."""
    from sync_ci import smoke
    from sync_ci.smoke_run import PhaseFailed, PhaseOutcome, SmokeRun

    real = smoke.PHASES["catalog"]
    tries: list[int] = []

    def first_try_fails(run: SmokeRun) -> PhaseOutcome:
        tries.append(len(tries))
        if len(tries) == 1:
            raise PhaseFailed("a region answered late")
        outcome = real(run)
        assert isinstance(outcome, PhaseOutcome)
        return PhaseOutcome(
            detail=outcome.detail, observed=outcome.observed, threshold={"regions_min": 1}
        )

    monkeypatch.setitem(smoke.PHASES, "catalog", first_try_fails)
    with open_run(sandbox_settings, mode="read-only") as run:
        rows, _ = smoke.run_phases(run, retry_failed=True)
    row = {r.id: r for r in rows}["phase:catalog"]
    assert len(tries) == 2
    assert row.status == "pass"
    assert row.detail.startswith("passed on retry (first try: a region answered late)")
    assert row.threshold == {"regions_min": 1}
    assert row.observed["regions"] >= 1


def invoke_in(env: dict[str, str], cwd: Path, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """Run `invoke ARGV` in this process with `env` set and `cwd` as the working directory."""
    from tests.test_front_ends import run_invoke

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    return run_invoke(*argv)


def test_invoke_smoke_calls_the_command_with_its_values(
    sandbox_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`invoke smoke` hands its typed values to the command: the mode, the sample, the outputs."""
    result = tmp_path / "r.json"
    argv = ("smoke", "--read-only", "--sample", "2", "--json", str(result), "--quiet")
    code = invoke_in(sandbox_env, tmp_path, monkeypatch, *argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == ""  # --quiet reached the command
    document = json.loads(result.read_text())
    assert document["ok"] is True and document["mode"] == "read-only"
    rows = {r["id"]: r for r in document["results"]}
    assert [r["id"].removeprefix("phase:") for r in document["results"]] == list(READ_ONLY_PHASES)
    assert "; 2 sampled objects verified" in rows["phase:pull-dry"]["detail"]
