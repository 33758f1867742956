"""Fault injection, sandbox control, argument errors and SIGTERM of the reference Worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from sync_ci import contract
from sync_ci.store import Store, StoreEndpoint
from tests.sandbox.conftest import RefWorker, worker_command, worker_env
from tests.sandbox.test_worker_http import assert_error, seed_catalog, timings

TIMEOUT = 10


def control(worker: RefWorker, body: Any) -> requests.Response:
    """POST /_sandbox/faults with the admin token."""
    return requests.post(
        worker.url() + "/_sandbox/faults",
        json=body,
        headers=worker.admin_headers(),
        timeout=TIMEOUT,
    )


@pytest.fixture
def faulty(ref_worker: RefWorker) -> Iterator[RefWorker]:
    """The module Worker, with every fault cleared again after the test."""
    assert control(ref_worker, {"clear": True}).json() == {"faults": {}}
    try:
        yield ref_worker
    finally:
        control(ref_worker, {"clear": True})


def timed_get(
    worker: RefWorker, path: str, colo: str = "SJC", root: str = ""
) -> tuple[float, requests.Response]:
    headers = {contract.ROOT_HEADER: root} if root else {}
    started = time.perf_counter()
    response = requests.get(worker.url(colo) + path, headers=headers, timeout=TIMEOUT)
    return (time.perf_counter() - started) * 1000, response


def test_5xx_rate_fails_contract_requests_but_not_health_or_control(faulty: RefWorker) -> None:
    assert control(faulty, {"5xx_rate": 1}).json() == {"faults": {"5xx_rate": 1.0}}
    _, failed = timed_get(faulty, "/catalog")
    assert_error(failed, 503)
    assert "5xx" in failed.json()["error"]
    assert_error(timed_get(faulty, "/_probe/kv/abcdefgh-5xx")[1], 503)
    assert timed_get(faulty, "/_health")[1].status_code == 200
    listed = requests.get(
        faulty.url() + "/_sandbox/faults", headers=faulty.admin_headers(), timeout=TIMEOUT
    )
    assert listed.json() == {"faults": {"5xx_rate": 1.0}}
    assert control(faulty, {"5xx_rate": None}).json() == {"faults": {}}
    assert timed_get(faulty, "/_probe/kv/abcdefgh-ok")[1].status_code == 200


def test_latency_fault_delays_contract_answers(faulty: RefWorker) -> None:
    control(faulty, {"latency_ms": 250})
    slow_ms, slow = timed_get(faulty, "/_probe/kv/latency-probe-1")
    _, health = timed_get(faulty, "/_health")
    assert slow.status_code == health.status_code == 200
    assert slow_ms >= 250
    assert timings(slow)["fault"] == 250
    assert "fault" not in timings(health)


def test_bucket_latency_fault_slows_bucket_reads_only(
    faulty: RefWorker, seed_store: Store, worker_root: str
) -> None:
    seed_catalog(seed_store, worker_root, {"f": b"data"})
    control(faulty, {"bucket_latency_ms": 300})
    miss_ms, miss = timed_get(faulty, "/catalog", root=worker_root)
    _, hit = timed_get(faulty, "/catalog", root=worker_root)
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert miss_ms >= 300
    assert timings(miss)["bucket"] >= 300
    assert "bucket" not in timings(hit)


def test_kv_miss_override_changes_one_region(faulty: RefWorker) -> None:
    control(faulty, {"kv_miss_ms.IAD": 400})
    iad = timed_get(faulty, "/_probe/kv/override-iad-1", colo="IAD")[1].json()
    sjc = timed_get(faulty, "/_probe/kv/override-sjc-1", colo="SJC")[1].json()
    assert iad["kv_ms"] >= 400
    assert sjc["kv_ms"] >= 30  # SJC keeps its own profile (lower bounds only: load only adds)
    assert (iad["colo"], sjc["colo"]) == ("IAD", "SJC")


def test_fault_updates_are_validated_and_atomic(faulty: RefWorker) -> None:
    control(faulty, {"latency_ms": 5})
    for bad in (
        {"bogus": 1},
        {"5xx_rate": 2},
        {"latency_ms": -1},
        {"latency_ms": "fast"},
        {"kv_miss_ms.XYZ": 10},
        {"latency_ms": 10, "5xx_rate": True},
        {"clear": "yes"},
        ["latency_ms", 1],
    ):
        assert_error(control(faulty, bad), 400)
    listed = requests.get(
        faulty.url() + "/_sandbox/faults", headers=faulty.admin_headers(), timeout=TIMEOUT
    )
    assert listed.json() == {"faults": {"latency_ms": 5.0}}


def test_control_endpoints_need_the_admin_token(faulty: RefWorker) -> None:
    for method, path in (
        ("GET", "/_sandbox/faults"),
        ("POST", "/_sandbox/faults"),
        ("POST", "/_sandbox/clock"),
    ):
        response = requests.request(
            method, faulty.url() + path, json={"clear": True}, timeout=TIMEOUT
        )
        assert_error(response, 401)
    bad_clock = requests.post(
        faulty.url() + "/_sandbox/clock",
        json={"offset_s": "soon"},
        headers=faulty.admin_headers(),
        timeout=TIMEOUT,
    )
    assert_error(bad_clock, 400)


def test_start_time_faults_without_control_endpoints(
    start_ref_worker: Callable[..., RefWorker], store_endpoint: StoreEndpoint
) -> None:
    worker = start_ref_worker(
        "--fault", "5xx_rate=1", "--regions", "SJC,AMS", "--kv-miss-ms", "AMS=7"
    )
    assert [r["colo"] for r in worker.ready["regions"]] == ["SJC", "AMS"]
    assert_error(timed_get(worker, "/catalog", colo="AMS")[1], 503)
    health = timed_get(worker, "/_health", colo="AMS")[1]
    assert health.json()["colo"] == "AMS"
    faults = requests.get(
        worker.url() + "/_sandbox/faults", headers=worker.admin_headers(), timeout=TIMEOUT
    )
    assert_error(faults, 404)
    # Without --allow-root-header only the default root is accepted.
    assert_error(timed_get(worker, "/_health", root="snappy-os-ci/abc1234/")[1], 400)
    assert timed_get(worker, "/_health", root="snappy-os/")[1].status_code == 200


def test_write_prefix_limits_what_the_worker_may_write(
    start_ref_worker: Callable[..., RefWorker], admin_store: Store
) -> None:
    worker = start_ref_worker("--allow-root-header", "--write-prefix", "snappy-os-ci/abc1234/")
    allowed = worker.tenant_headers("acme", "snappy-os-ci/abc1234/")
    refused = worker.tenant_headers("acme", "snappy-os-ci/def5678/")
    ok = requests.post(worker.url() + "/_push", data=b"{}", headers=allowed, timeout=TIMEOUT)
    denied = requests.post(worker.url() + "/_push", data=b"{}", headers=refused, timeout=TIMEOUT)
    assert ok.status_code == 201
    assert_error(denied, 403)
    assert admin_store.get("snappy-os-ci/def5678/tenants/acme/state.json") is None


def test_sigterm_stops_the_worker_promptly(start_ref_worker: Callable[..., RefWorker]) -> None:
    worker = start_ref_worker()
    port = urlsplit(worker.url()).port
    assert port
    worker.process.send_signal(signal.SIGTERM)
    code = worker.process.wait(timeout=10)
    assert code == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# Every refusal is unit-tested in test_worker_units.py; these prove the process-level contract.
BAD_ARGS = [
    ["--fault", "bogus=1"],
    ["--regions", "SJC,XX"],
    ["--no-such-flag"],
]


@pytest.mark.parametrize("args", BAD_ARGS, ids=[" ".join(a) for a in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(args: list[str], tmp_path: Path) -> None:
    endpoint = StoreEndpoint(
        bucket="unused",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        access_key_id="k",
        secret_access_key="s",
    )
    ready = tmp_path / "ready.json"
    done = subprocess.run(
        worker_command(ready, *args),
        env=worker_env(endpoint, "t", "a"),
        capture_output=True,
        timeout=30,
    )
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2
    assert len(lines) == 1
    assert lines[0].startswith("sync-ci: error: ")
    assert not ready.exists()


def test_missing_environment_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_CI_WORKER_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        worker_command(tmp_path / "ready.json"), env=env, capture_output=True, timeout=30
    )
    assert done.returncode == 2
    assert b"SYNC_CI_WORKER_TENANT_SECRET" in done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1


def test_missing_bucket_fails_before_ready(store_endpoint: StoreEndpoint, tmp_path: Path) -> None:
    endpoint = StoreEndpoint(
        bucket="no-such-bucket-here",
        endpoint_url=store_endpoint.endpoint_url,
        region_name="us-east-1",
        access_key_id="k",
        secret_access_key="s",
    )
    ready = tmp_path / "ready.json"
    done = subprocess.run(
        worker_command(ready), env=worker_env(endpoint, "t", "a"), capture_output=True, timeout=60
    )
    assert done.returncode == 1
    assert b"NoSuchBucket" in done.stderr
    assert not ready.exists()
