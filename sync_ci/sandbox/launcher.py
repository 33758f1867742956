"""Start the embedded sandbox (store, seeded "live" root, reference Worker); stop it by PID.

The ready file is `sandbox.ready_file`, the Worker's process `sandbox.worker_process`. This module
re-exports, deliberately, the names that tests starting a sandbox take from here with it:
`SandboxInfo`, `StoreInfo`, `STORE_REGION`, `read_ready_file`, `write_ready_file` and
`start_worker`; code in `sync_ci` imports them from their owners.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sync_ci.clock import utc_stamp
from sync_ci.errors import SettingsError, UsageError
from sync_ci.extras import require_extra
from sync_ci.sandbox import worker_process
from sync_ci.sandbox.faults import parse_fault_value
from sync_ci.sandbox.mutants import check_mutant
from sync_ci.sandbox.processes import (
    is_running,
    own_workdir,
    release_workdir,
    start_ticks,
    stop_all_groups,
    stop_process_group,
)
from sync_ci.sandbox.ready_file import (
    BUCKET,
    CI_ROOT,
    LIVE_ROOT,
    TENANT_ID,
    RegionInfo,
    WorkerInfo,
)
from sync_ci.sandbox.ready_file import STORE_REGION as STORE_REGION
from sync_ci.sandbox.ready_file import SandboxInfo as SandboxInfo
from sync_ci.sandbox.ready_file import StoreInfo as StoreInfo
from sync_ci.sandbox.ready_file import read_ready_file as read_ready_file
from sync_ci.sandbox.ready_file import write_ready_file as write_ready_file
from sync_ci.sandbox.seed import seed_root
from sync_ci.sandbox.store_server import STORE_KINDS, StoreKind, StoreProcess, start_moto
from sync_ci.sandbox.worker_config import DEFAULT_COLOS
from sync_ci.sandbox.worker_process import (
    WORKER_READY_TIMEOUT_S,
    EarlyWorker,
    spawn_early_worker,
    wait_for_worker,
)
from sync_ci.sandbox.worker_process import start_worker as start_worker
from sync_ci.sandbox.workerd import Runtime, check_runtime

if TYPE_CHECKING:
    from sync_ci.store import Store

WORKDIR_PREFIX = "sync-ci-sandbox-"
OWNER_FILE = "owner.json"
# What this process imports for its admin client (boto3) while the store boots.
ADMIN_PRELOAD = "sync_ci.store"


def validate_faults(faults: Mapping[str, str], colos: Sequence[str] = DEFAULT_COLOS) -> None:
    """Check fault names and values as the Worker will, so a typo is a usage error (exit 2)."""
    for key, value in faults.items():
        parse_fault_value(key, value, colos)


def validate_kv_miss_ms(
    kv_miss_ms: Mapping[str, int], colos: Sequence[str] = DEFAULT_COLOS
) -> None:
    """Check every colo is served and every latency is 0..60,000 ms."""
    for colo, value in kv_miss_ms.items():
        if colo not in colos or isinstance(value, bool) or not 0 <= value <= 60_000:
            raise UsageError(
                f"--kv-miss-ms {colo}={value}: want COLO=MS with COLO one of {','.join(colos)} "
                "and MS in 0..60000"
            )


def validate_mutant(mutant: str) -> None:
    """Check a --mutant name against the reference Worker's catalogue (usage error, exit 2)."""
    check_mutant(mutant)


class Sandbox:
    """A running sandbox: store and Worker processes, their info, and how to stop both."""

    def __init__(
        self,
        *,
        info: SandboxInfo,
        store: StoreProcess,
        worker: subprocess.Popen[bytes],
        workdir: Path,
        owns_workdir: bool,
    ) -> None:
        self.info = info
        self.store = store
        self.worker = worker
        self.workdir = workdir
        self.owns_workdir = owns_workdir
        self._stopped = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Sandbox(worker={self.info.worker.url}, store={self.info.store.endpoint_url})"

    def alive(self) -> bool:
        """True while both the Worker and the store are running."""
        return self.worker.poll() is None and self.store.process.poll() is None

    def stop(self) -> None:
        """Stop the Worker and the store (whole process groups, both at once), tidy the workdir."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.store.begin_stop()
            stop_all_groups([self.worker, self.store.process])
        finally:
            try:
                self.store.stop()
            finally:
                if self.owns_workdir:
                    release_workdir(self.workdir)


def start_sandbox(
    *,
    store: StoreKind = "moto",
    faults: Mapping[str, str] | None = None,
    kv_miss_ms: Mapping[str, int] | None = None,
    workdir: Path | None = None,
    mutant: str = "",
    runtime: Runtime = "python",
    project: str = "",
) -> Sandbox:
    """Start the store, seed the live root and start the reference Worker; return the sandbox.

    `project` (a wrangler.toml) runs that Worker project on workerd instead of the reference one.
    """
    runtime = "workerd" if project else runtime
    check_runtime(runtime)
    # Both run in child processes: find them here, or a child dies with a traceback in its log.
    if store == "moto":
        require_extra("moto", "sandbox", needed_by="the sandbox")
    if runtime == "python":
        require_extra("aiohttp", "sandbox", needed_by="the sandbox")
    faults = dict(faults or {})
    kv_miss_ms = dict(kv_miss_ms or {})
    if store not in STORE_KINDS:
        raise UsageError(f"unknown store {store!r}; use one of: {', '.join(STORE_KINDS)}")
    validate_faults(faults)
    validate_kv_miss_ms(kv_miss_ms)
    validate_mutant(mutant)
    owns_workdir = workdir is None
    if workdir is None:
        sweep_stale_workdirs()
        workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        own_workdir(workdir)
        write_owner(workdir)
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    server: StoreProcess | None = None
    worker: subprocess.Popen[bytes] | None = None
    early: EarlyWorker | None = None
    tenant_secret, admin_token = secrets.token_hex(32), secrets.token_hex(32)
    try:
        if (
            runtime == "python"
            and tuple(worker_process.WORKER_COMMAND) == worker_process.REFERENCE_WORKER_COMMAND
        ):
            early = spawn_early_worker(
                workdir=workdir,
                faults=faults,
                kv_miss_ms=kv_miss_ms,
                tenant_secret=tenant_secret,
                admin_token=admin_token,
                mutant=mutant,
            )
            worker = early.process
        # Spawned children first, then boto3's import beside the store's start (both mostly
        # CPU; on two cores the three start-ups overlap instead of queueing).
        importer = threading.Thread(
            target=importlib.import_module, args=(ADMIN_PRELOAD,), daemon=True
        )
        importer.start()
        server = _start_store(store, workdir)
        store_info = StoreInfo(
            kind=store,
            endpoint_url=server.endpoint_url,
            bucket=BUCKET,
            access_key_id=server.access_key_id,
            secret_access_key=server.secret_access_key,
            pid=server.pid,
        )
        importer.join()
        admin = admin_store(store_info)
        # The Worker needs only the bucket to exist: seed the live root while it boots.
        if early is not None:
            early.release(store_info)
            seed_root(admin, LIVE_ROOT)
            document = wait_for_worker(
                early.process,
                early.ready_file,
                early.log_path,
                WORKER_READY_TIMEOUT_S,
                notify=early.notify,
            )
            running = early.process
        else:
            worker, document = start_worker(
                store_info,
                workdir=workdir,
                faults=faults,
                kv_miss_ms=kv_miss_ms,
                tenant_secret=tenant_secret,
                admin_token=admin_token,
                while_booting=lambda: seed_root(admin, LIVE_ROOT),
                mutant=mutant,
                runtime=runtime,
                project=project,
            )
            running = worker
        regions = tuple(
            RegionInfo(name=str(r["name"]), colo=str(r["colo"]), url=str(r["url"]))
            for r in document["regions"]
        )
        info = SandboxInfo(
            store=store_info,
            worker=WorkerInfo(
                pid=running.pid, url=regions[0].url, regions=regions, runtime=runtime
            ),
            live_root=LIVE_ROOT,
            ci_root=CI_ROOT,
            tenant_id=TENANT_ID,
            tenant_secret=tenant_secret,
            admin_token=admin_token,
            started_at=utc_stamp(datetime.now(UTC)),
            owner_pid=os.getpid(),
            owner_started=start_ticks(os.getpid()),
        )
    except BaseException:
        if worker is not None:
            stop_process_group(worker)
        if server is not None:
            server.stop()
        if owns_workdir:
            release_workdir(workdir)
        raise
    finally:
        if early is not None:
            early.close()
    return Sandbox(
        info=info, store=server, worker=running, workdir=workdir, owns_workdir=owns_workdir
    )


def write_owner(workdir: Path) -> None:
    """Record which process owns `workdir`, so a later start can sweep it once that one is gone."""
    document = {"pid": os.getpid(), "started": start_ticks(os.getpid())}
    (workdir / OWNER_FILE).write_text(json.dumps(document), encoding="utf-8")


def sweep_stale_workdirs(parent: Path | None = None) -> list[Path]:
    """Remove this user's sandbox workdirs whose owner died without tidying (SIGKILL); list them."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    removed = []
    for path in parent.glob(f"{WORKDIR_PREFIX}*"):
        try:
            if path.is_symlink() or path.lstat().st_uid != os.getuid():
                continue
            owner = json.loads((path / OWNER_FILE).read_text(encoding="utf-8"))
            pid, started = int(owner["pid"]), owner.get("started")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge (being created, or from elsewhere)
        if not is_running(pid, started if isinstance(started, int) else None):
            release_workdir(path)
            removed.append(path)
    return removed


def start_store(kind: StoreKind = "moto", *, data_dir: Path | None = None) -> StoreProcess:
    """Start the named store kind on 127.0.0.1."""
    if kind == "moto":
        return start_moto()
    if kind == "seaweedfs":
        from sync_ci.sandbox.seaweed import start_seaweedfs

        return start_seaweedfs(data_dir=data_dir)
    raise SettingsError(f"unknown store {kind!r}; use one of: {', '.join(STORE_KINDS)}")


def _start_store(kind: StoreKind, workdir: Path) -> StoreProcess:
    return start_store(kind, data_dir=workdir / "store-data")


def admin_store(store_info: StoreInfo) -> Store:
    """Create the sandbox bucket and return a loopback-only admin client on it."""
    from sync_ci import guards
    from sync_ci.store import StoreEndpoint, open_store

    endpoint = StoreEndpoint(
        bucket=store_info.bucket,
        endpoint_url=store_info.endpoint_url,
        region_name=STORE_REGION,
        access_key_id=store_info.access_key_id,
        secret_access_key=store_info.secret_access_key,
    )
    admin = open_store(endpoint, guards.sandbox_admin_policy())
    admin.ensure_bucket()
    return admin


def seed_store(store_info: StoreInfo) -> None:
    """Create the sandbox bucket and seed the live root through a loopback-only admin client."""
    seed_root(admin_store(store_info), LIVE_ROOT)
