"""`invoke cleanup` and `sync-ci cleanup` mean the same thing by --max-delete, on the sandbox.

The invoke task calls the cleanup function with values (no argv rebuilt), so the one place the
two front ends differ is how "not given" is spelled: `sync-ci` leaves the option out, invoke passes
-1. Both are run here against the sandbox target (this test's own bucket on the embedded store).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sync_ci import cli
from sync_ci.store import Store, StoreEndpoint
from tests.test_front_ends import run_invoke


@pytest.fixture
def sandbox_bucket(
    store_endpoint: StoreEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> StoreEndpoint:
    """`--target sandbox` pointed at this test's bucket on the embedded store (loopback)."""
    monkeypatch.chdir(tmp_path)
    for name in ("SYNC_CI_CONFIG", "SYNC_CI_SECRETS_FILE", "SYNC_CI_SANDBOX", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SYNC_CI_TARGET", "sandbox")
    monkeypatch.setenv("SYNC_CI_BUCKET", store_endpoint.bucket)
    monkeypatch.setenv("SYNC_CI_ENDPOINT_URL", store_endpoint.endpoint_url)
    monkeypatch.setenv("SYNC_CI_ACCESS_KEY_ID", store_endpoint.access_key_id)
    monkeypatch.setenv("SYNC_CI_SECRET_ACCESS_KEY", store_endpoint.secret_access_key)
    return store_endpoint


def _keys(store: Store, prefix: str) -> list[str]:
    return [listed.key for listed in store.list(prefix)]


def test_max_delete_means_the_same_from_invoke_and_sync_ci_on_the_sandbox(
    sandbox_bucket: StoreEndpoint,
    ci_store: Store,
    ci_sha: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = f"snappy-os-ci/{ci_sha}/"
    later = (datetime.now(UTC) + timedelta(days=8)).isoformat()
    common = ["--now", later, "--quiet"]

    # 0 refuses any deletion, before anything is deleted, from both front ends.
    ci_store.put(prefix + "old", b"x")
    assert cli.main(["cleanup", *common, "--max-delete", "0"]) == 1
    assert run_invoke("cleanup", *common, "--max-delete", "0") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("more than --max-delete 0" in line for line in err), err
    assert _keys(ci_store, prefix) == [prefix + "old"]

    # A cap the plan fits under deletes, from both.
    assert run_invoke("cleanup", *common, "--max-delete", "1") == 0
    assert _keys(ci_store, prefix) == []
    ci_store.put(prefix + "old", b"x")
    assert cli.main(["cleanup", *common, "--max-delete", "1"]) == 0
    assert _keys(ci_store, prefix) == []

    # Not given is no cap: sync-ci leaves the option out, invoke's default spells it -1.
    ci_store.put(prefix + "old", b"x")
    assert run_invoke("cleanup", *common) == 0
    assert _keys(ci_store, prefix) == []
    ci_store.put(prefix + "old", b"x")
    assert cli.main(["cleanup", *common]) == 0
    assert _keys(ci_store, prefix) == []
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("front_end", ["sync-ci", "invoke"])
def test_a_negative_cap_is_one_usage_line_from_either_front_end(
    sandbox_bucket: StoreEndpoint, front_end: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["cleanup", "--max-delete", "-2", "--dry-run"]
    code = cli.main(argv) if front_end == "sync-ci" else run_invoke(*argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("sync-ci: error: --max-delete ") and "0 or more" in err[0]
