"""The load gate's writes name the CI root, and the first one is read back before any other is sent.

A recording proxy sits between the gate and the reference Worker. Dropping the root header makes
the Worker behave like a preview Worker bound to production: it stores the push under its own
root. The gate must then stop with one line (exit 1) after that single write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync_ci import guards
from sync_ci.cli import main
from sync_ci.config import Settings
from sync_ci.contract import ROOT_HEADER, tenant_state_key
from sync_ci.errors import GuardViolation
from sync_ci.gates import load
from sync_ci.gates.http import push_policy, read_only_policy
from sync_ci.gates.scenario import LoadScenario
from sync_ci.sandbox.launcher import read_ready_file, write_ready_file
from sync_ci.store import endpoint_from_settings, open_store
from tests.conftest import FaultySandbox, sandbox_env_for
from tests.gates.conftest import TINY_SECRET, TinyWorker, use_env
from tests.gates.recording import RecordingProxy


@pytest.fixture
def private_sandbox(faulty_sandbox: FaultySandbox) -> Settings:
    """A sandbox of this test's own, so a misplaced write touches no other test's bucket."""
    return faulty_sandbox()


def behind_proxy(
    settings: Settings, proxy: RecordingProxy, home: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Point the CLI at `settings`' sandbox with its Worker URL replaced by the proxy's."""
    info = read_ready_file(Path(settings.sandbox_file))
    info = dataclasses.replace(info, worker=dataclasses.replace(info.worker, url=proxy.url))
    env = sandbox_env_for(write_ready_file(info, home / "ready.json"), home)
    return use_env(env, monkeypatch, home)


@pytest.fixture
def stripping_proxy(private_sandbox: Settings) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(private_sandbox.worker_url, strip=[ROOT_HEADER])
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_worker_that_ignores_the_ci_root_stops_the_gate_after_one_write(
    private_sandbox: Settings,
    stripping_proxy: RecordingProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = behind_proxy(private_sandbox, stripping_proxy, tmp_path / "home", monkeypatch)
    assert main(["gate", "load", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sync-ci: error: the first push answered push key 'snappy-os/")
    assert "stopped before sending any other write" in err[0]
    (write,) = stripping_proxy.writes()
    ci_prefix = f"{private_sandbox.ci_root}{env['SYNC_CI_SHA']}/"
    assert (write.method, write.path, write.headers[ROOT_HEADER]) == ("POST", "/_push", ci_prefix)
    store = open_store(endpoint_from_settings(private_sandbox), guards.read_only_policy())
    assert [o.key for o in store.list(f"{private_sandbox.live_root}tenants/")] == [
        f"{private_sandbox.live_root}tenants/gate-000/state.json"
    ]
    assert not list(store.list(ci_prefix))


def test_the_first_push_is_read_back_under_the_ci_prefix(private_sandbox: Settings) -> None:
    prefix = private_sandbox.ci_prefix
    proxy = RecordingProxy(private_sandbox.worker_url)
    try:
        store = open_store(endpoint_from_settings(private_sandbox), guards.read_only_policy())
        key = load.confirm_first_push(
            LoadScenario(),
            private_sandbox.secrets.tenant_secret,
            proxy.url,
            policy=push_policy(prefix),
            read_back=store.get,
        )
    finally:
        proxy.close()
    assert key == tenant_state_key(prefix, "gate-000")
    assert store.get(key) is not None
    assert [w.headers[ROOT_HEADER] for w in proxy.writes()] == [prefix]


def test_a_worker_that_answers_201_but_stores_nothing_is_caught(
    tiny_worker: TinyWorker, private_sandbox: Settings
) -> None:
    url = str(tiny_worker()["url"])  # answers a conforming 201 and writes no bucket at all
    store = open_store(endpoint_from_settings(private_sandbox), guards.read_only_policy())
    with pytest.raises(load.MisplacedWrite, match="the bucket holds nothing at snappy-os-ci/"):
        load.confirm_first_push(
            LoadScenario(),
            TINY_SECRET,
            url,
            policy=push_policy(private_sandbox.ci_prefix),
            read_back=store.get,
        )


def test_a_read_only_target_sends_no_first_push() -> None:
    def never(key: str) -> bytes | None:
        raise AssertionError(f"read back {key} on a read-only target")

    with pytest.raises(GuardViolation):
        push_policy("snappy-os/")
    assert (
        load.confirm_first_push(
            LoadScenario(),
            "s",
            "http://127.0.0.1:1",
            policy=read_only_policy(),
            read_back=never,
        )
        == ""
    )
