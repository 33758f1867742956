"""Session fixtures: real servers on 127.0.0.1, each test with its own bucket or prefix."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from sync_ci import guards
from sync_ci.sandbox.store_server import StoreKind, StoreProcess, start_store
from sync_ci.store import Store, StoreEndpoint, open_store

STORE_KIND: StoreKind = "seaweedfs" if os.environ.get("SYNC_CI_TEST_STORE") == "seaweedfs" else "moto"


@pytest.fixture(scope="session")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    """One object store per test process (moto, or SeaweedFS when SYNC_CI_TEST_STORE=seaweedfs)."""
    server = start_store(STORE_KIND, data_dir=tmp_path_factory.mktemp("store"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store_endpoint(store_server: StoreProcess) -> StoreEndpoint:
    """A fresh, empty bucket of this test's own."""
    endpoint = StoreEndpoint(
        bucket=f"t-{secrets.token_hex(6)}",
        endpoint_url=store_server.endpoint_url,
        region_name="us-east-1",
        access_key_id=store_server.access_key_id,
        secret_access_key=store_server.secret_access_key,
    )
    open_store(endpoint, guards.sandbox_admin_policy()).ensure_bucket()
    return endpoint


@pytest.fixture
def admin_store(store_endpoint: StoreEndpoint) -> Store:
    """An unguarded-by-prefix client for arranging and inspecting the test bucket (loopback only)."""
    return open_store(store_endpoint, guards.sandbox_admin_policy())


@pytest.fixture
def ci_sha() -> str:
    """A fresh per-test commit sha."""
    return secrets.token_hex(20)
