"""`weed mini`, the strict store: loopback ports, real SigV4, 1,000-key cap, clean stop."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sync_ci import guards
from sync_ci.errors import SettingsError, StoreError
from sync_ci.sandbox import seaweed
from sync_ci.sandbox.seaweed import (
    GRPC_OFFSET,
    SERVICES,
    SeaweedProcess,
    choose_ports,
    start_seaweedfs,
    weed_arguments,
)
from sync_ci.store import StoreEndpoint, open_store, translate_errors


def _weed_or_skip() -> Path:
    try:
        return seaweed.find_weed()
    except SettingsError as exc:
        pytest.skip(str(exc))


def _endpoint(server: SeaweedProcess, bucket: str, secret: str | None = None) -> StoreEndpoint:
    return StoreEndpoint(
        bucket=bucket,
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key if secret is None else secret,
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_command_line_sets_every_port_and_stays_on_loopback(tmp_path: Path) -> None:
    ports = dict(zip(SERVICES, (21000, 21001, 21002, 21003, 21004), strict=True))
    args = weed_arguments(
        tmp_path / "weed",
        data_dir=tmp_path / "d",
        runtime_dir=tmp_path / "r",
        ports=ports,
        s3_config=tmp_path / "s3.json",
    )
    assert args[1] == "mini"
    for flag in (
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ):
        assert flag in args
    for service, port in ports.items():
        assert f"-{service}.port={port}" in args
        assert f"-{service}.port.grpc={port + GRPC_OFFSET}" in args


def test_chosen_ports_are_distinct_pairs_that_are_free() -> None:
    ports = choose_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        for candidate in (port, port + GRPC_OFFSET):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", candidate))


@pytest.mark.slow
@pytest.mark.strict_store
def test_weed_mini_is_strict_isolated_and_stops_clean(tmp_path: Path) -> None:
    _weed_or_skip()
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda d: start_seaweedfs(d), [tmp_path / "a", None])
    try:
        assert first.endpoint_url != second.endpoint_url
        assert first.data_dir == tmp_path / "a"
        assert second.owns_data_dir
        admin = open_store(_endpoint(first, "strict-a"), guards.sandbox_admin_policy())
        admin.ensure_bucket()
        admin.put("snappy-os-ci/abc1234/x.txt", b"x")

        wrong = open_store(_endpoint(first, "strict-a", secret="0" * 40), guards.read_only_policy())
        with pytest.raises(StoreError, match="SignatureDoesNotMatch"):
            wrong.get("snappy-os-ci/abc1234/x.txt")
        # The second instance has its own credentials: the first one's are unknown there.
        crossed = StoreEndpoint(
            bucket="strict-a",
            endpoint_url=second.endpoint_url,
            region_name="us-east-1",
            access_key_id=first.access_key_id,
            secret_access_key=first.secret_access_key,
        )
        with pytest.raises(StoreError, match=r"InvalidAccessKeyId|AccessDenied"):
            open_store(crossed, guards.read_only_policy()).get("snappy-os-ci/abc1234/x.txt")

        keys = [f"snappy-os-ci/abc1234/k{n:04d}" for n in range(1001)]
        with pytest.raises(StoreError, match="InvalidArgument"), translate_errors("delete"):
            admin.client.delete_objects(
                Bucket="strict-a", Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )
        assert admin.delete_many(keys) == []
        assert admin.get("snappy-os-ci/abc1234/x.txt") == b"x"
    finally:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.stop(), [first, second]))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_alive(first.pid) or _alive(second.pid)):
        time.sleep(0.05)
    for server in (first, second):
        assert not _alive(server.pid)
        assert not server.runtime_dir.exists()
        assert not any(_listening(p) for p in server.ports)
        for port in server.ports:
            assert not list(Path("/tmp").glob(f"seaweedfs-*-{port}.sock"))
    assert (tmp_path / "a").is_dir()  # a data dir given by the caller is kept
    assert second.data_dir is not None
    assert not second.data_dir.exists()


@pytest.mark.slow
@pytest.mark.strict_store
def test_sandbox_runs_on_seaweedfs(tmp_path: Path) -> None:
    _weed_or_skip()
    from sync_ci.sandbox.launcher import start_sandbox
    from sync_ci.worker import WorkerClient, WorkerTarget

    with start_sandbox(store="seaweedfs", workdir=tmp_path / "work") as running:
        assert running.info.store.kind == "seaweedfs"
        target = WorkerTarget(base_url=running.info.worker.url, read_only=True, retries=0)
        with WorkerClient(target) as client:
            catalog = client.get("/catalog").json()
        assert catalog["generation"] == 1
        assert len(catalog["entries"]) == 12
        pids = (running.store.pid, running.worker.pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
