"""Session fixtures: real servers on 127.0.0.1, each test with its own bucket or prefix."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

import pytest

from sync_ci import guards
from sync_ci.config import Settings, load_settings
from sync_ci.sandbox.attach import attach
from sync_ci.sandbox.launcher import Sandbox, start_sandbox, write_ready_file
from sync_ci.sandbox.store_server import StoreKind, StoreProcess, start_store
from sync_ci.store import Store, StoreEndpoint, open_store

STORE_KIND: StoreKind = (
    "seaweedfs" if os.environ.get("SYNC_CI_TEST_STORE") == "seaweedfs" else "moto"
)


@pytest.fixture(scope="session")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    """One object store per test process (moto, or SeaweedFS when SYNC_CI_TEST_STORE=seaweedfs)."""
    server = start_store(STORE_KIND, data_dir=tmp_path_factory.mktemp("store"))
    try:
        yield server
    finally:
        server.stop()


def new_bucket(store_server: StoreProcess, prefix: str = "t") -> StoreEndpoint:
    """Create a fresh, empty bucket on the test store and return its endpoint."""
    endpoint = StoreEndpoint(
        bucket=f"{prefix}-{secrets.token_hex(6)}",
        endpoint_url=store_server.endpoint_url,
        region_name="us-east-1",
        access_key_id=store_server.access_key_id,
        secret_access_key=store_server.secret_access_key,
    )
    open_store(endpoint, guards.sandbox_admin_policy()).ensure_bucket()
    return endpoint


@pytest.fixture
def store_endpoint(store_server: StoreProcess) -> StoreEndpoint:
    """A fresh, empty bucket of this test's own."""
    return new_bucket(store_server)


@pytest.fixture
def admin_store(store_endpoint: StoreEndpoint) -> Store:
    """An unguarded-by-prefix client for arranging and inspecting the test bucket (loopback only)."""
    return open_store(store_endpoint, guards.sandbox_admin_policy())


@pytest.fixture
def ci_sha() -> str:
    """A fresh per-test commit sha."""
    return secrets.token_hex(20)


def sandbox_env_for(ready_file: Path, home: Path) -> dict[str, str]:
    """A hermetic environment for a sandbox run: nothing comes from the real home or config."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "sync-ci.toml"
    config.touch()
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state-home"),
        "SYNC_CI_CONFIG": str(config),
        "SYNC_CI_TARGET": "sandbox",
        "SYNC_CI_SHA": secrets.token_hex(20),
        "SYNC_CI_STATE_DIR": str(home / "state"),
        "SYNC_CI_MIRROR_DIR": str(home / "mirror"),
        "SYNC_CI_SANDBOX": str(ready_file),
    }


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox (store + seeded live root + reference Worker) per test process; no faults."""
    with start_sandbox(store=STORE_KIND, workdir=tmp_path_factory.mktemp("sandbox")) as running:
        yield running


@pytest.fixture(scope="session")
def sandbox_ready_file(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session sandbox's ready file (what SYNC_CI_SANDBOX names)."""
    return write_ready_file(sandbox.info, tmp_path_factory.mktemp("sandbox-ready") / "ready.json")


@pytest.fixture
def sandbox_env(sandbox_ready_file: Path, tmp_path: Path) -> dict[str, str]:
    """This test's environment for the session sandbox: its own sha, state and mirror dirs."""
    return sandbox_env_for(sandbox_ready_file, tmp_path / "home")


@pytest.fixture
def sandbox_settings(sandbox_env: dict[str, str]) -> Iterator[Settings]:
    """Settings for this test attached to the session sandbox (writes go under ci_prefix)."""
    with attach(load_settings(env=sandbox_env)) as settings:
        yield settings


FaultySandbox = Callable[..., Settings]


@pytest.fixture
def faulty_sandbox(tmp_path: Path) -> Iterator[FaultySandbox]:
    """Start short-lived sandboxes of this test's own (faults at start or run time stay here)."""
    started: list[Sandbox] = []
    with ExitStack() as stack:

        def start(
            faults: Mapping[str, str] | None = None, kv_miss_ms: Mapping[str, int] | None = None
        ) -> Settings:
            workdir = tmp_path / f"faulty-{len(started)}"
            running = start_sandbox(
                store=STORE_KIND, faults=faults, kv_miss_ms=kv_miss_ms, workdir=workdir
            )
            started.append(stack.enter_context(running))
            ready = write_ready_file(running.info, workdir / "ready.json")
            env = sandbox_env_for(ready, workdir / "home")
            return stack.enter_context(attach(load_settings(env=env)))

        yield start


@pytest.fixture
def ci_store(store_endpoint: StoreEndpoint, ci_sha: str) -> Store:
    """The per-commit CI-prefix client: writes only under `snappy-os-ci/<ci_sha>/` (the firewall refuses the rest)."""
    return open_store(
        store_endpoint, guards.prefix_policy(store_endpoint.bucket, f"snappy-os-ci/{ci_sha}/")
    )
