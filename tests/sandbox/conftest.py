"""Fixtures that start the reference Worker (`worker_main`) as a subprocess over a moto bucket."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sync_ci import contract, guards
from sync_ci.sandbox.store_server import StoreProcess
from sync_ci.store import Store, StoreEndpoint, open_store
from tests.conftest import new_bucket

READY_TIMEOUT_S = 20.0
REPO = Path(__file__).resolve().parents[2]


@dataclass(slots=True, kw_only=True)
class RefWorker:
    """A running reference Worker: its ready document, secrets and how to stop it."""

    process: subprocess.Popen[bytes]
    ready: dict[str, Any]
    ready_file: Path
    endpoint: StoreEndpoint
    tenant_secret: str = field(repr=False)
    admin_token: str = field(repr=False)
    log_path: Path

    @property
    def urls(self) -> dict[str, str]:
        """Base URL per colo."""
        return {region["colo"]: region["url"] for region in self.ready["regions"]}

    def url(self, colo: str = "SJC") -> str:
        """Base URL of one region."""
        return self.urls[colo]

    def tenant_headers(self, tenant: str, root: str | None = None) -> dict[str, str]:
        """Headers authenticating `tenant` (and selecting `root` when given)."""
        headers = {
            "x-sync-tenant": tenant,
            "authorization": f"Bearer {contract.tenant_token(self.tenant_secret, tenant)}",
        }
        if root:
            headers[contract.ROOT_HEADER] = root
        return headers

    def admin_headers(self, root: str | None = None) -> dict[str, str]:
        """Headers carrying the admin token (and selecting `root` when given)."""
        headers = {"authorization": f"Bearer {self.admin_token}"}
        if root:
            headers[contract.ROOT_HEADER] = root
        return headers

    def stop(self, timeout_s: float = 5.0) -> int:
        """SIGTERM the Worker and return its exit code (SIGKILL if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        return int(self.process.returncode)


def worker_env(endpoint: StoreEndpoint, tenant_secret: str, admin_token: str) -> dict[str, str]:
    """The environment the Worker reads its store and secrets from."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_CI_WORKER_")}
    env.update(
        {
            "SYNC_CI_WORKER_STORE_ENDPOINT": endpoint.endpoint_url,
            "SYNC_CI_WORKER_BUCKET": endpoint.bucket,
            "SYNC_CI_WORKER_ACCESS_KEY_ID": endpoint.access_key_id,
            "SYNC_CI_WORKER_SECRET_ACCESS_KEY": endpoint.secret_access_key,
            "SYNC_CI_WORKER_TENANT_SECRET": tenant_secret,
            "SYNC_CI_WORKER_ADMIN_TOKEN": admin_token,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
    )
    return env


def worker_command(ready_file: Path, *args: str) -> list[str]:
    """The Worker's command line."""
    return [
        sys.executable,
        "-m",
        "sync_ci.sandbox.worker_main",
        "--ready-file",
        str(ready_file),
        *args,
    ]


def start_worker(endpoint: StoreEndpoint, workdir: Path, *args: str) -> RefWorker:
    """Start `worker_main` with `args` and wait for its ready file."""
    workdir.mkdir(parents=True, exist_ok=True)
    ready_file = workdir / f"worker-{secrets.token_hex(4)}.json"
    log_path = ready_file.with_suffix(".log")
    tenant_secret, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            worker_command(ready_file, *args),
            env=worker_env(endpoint, tenant_secret, admin_token),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=5)
            raise RuntimeError(f"worker did not start: {log_path.read_text(errors='replace')}")
        time.sleep(0.02)
    return RefWorker(
        process=process,
        ready=json.loads(ready_file.read_text()),
        ready_file=ready_file,
        endpoint=endpoint,
        tenant_secret=tenant_secret,
        admin_token=admin_token,
        log_path=log_path,
    )


@pytest.fixture(scope="module")
def worker_bucket(store_server: StoreProcess) -> StoreEndpoint:
    """A bucket of this test module's own (the Worker outlives one test, so one per module)."""
    return new_bucket(store_server, "w")


@pytest.fixture(scope="module")
def seed_store(worker_bucket: StoreEndpoint) -> Store:
    """A loopback-only admin client on the module bucket, for arranging and inspecting it."""
    return open_store(worker_bucket, guards.sandbox_admin_policy())


@pytest.fixture(scope="module")
def ref_worker(
    worker_bucket: StoreEndpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RefWorker]:
    """One reference Worker per test module, root header and sandbox control on."""
    worker = start_worker(
        worker_bucket,
        tmp_path_factory.mktemp("worker"),
        "--allow-root-header",
        "--sandbox-control",
    )
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def worker_root(ci_sha: str) -> str:
    """A fresh CI root (`snappy-os-ci/<sha>/`) so tests sharing a Worker share no state."""
    return f"snappy-os-ci/{ci_sha}/"


@pytest.fixture
def start_ref_worker(
    store_endpoint: StoreEndpoint, tmp_path: Path
) -> Iterator[Callable[..., RefWorker]]:
    """Start dedicated Workers over this test's own bucket; every one is stopped afterwards."""
    started: list[RefWorker] = []

    def start(*args: str) -> RefWorker:
        worker = start_worker(store_endpoint, tmp_path / f"w{len(started)}", *args)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
