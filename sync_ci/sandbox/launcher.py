"""Start the embedded sandbox (store, seeded "live" root, reference Worker); stop it by PID."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.errors import SettingsError, UnreachableError, UsageError
from sync_ci.extras import require_extra
from sync_ci.files import write_private
from sync_ci.sandbox.processes import (
    is_running,
    own_workdir,
    release_workdir,
    spawn,
    start_ticks,
    stop_all_groups,
    stop_process_group,
)
from sync_ci.sandbox.seed import seed_root
from sync_ci.sandbox.store_server import STORE_KINDS, StoreKind, StoreProcess
from sync_ci.sandbox.workerd import Runtime, check_runtime, workerd_command, write_project_file

if TYPE_CHECKING:
    from sync_ci.store import Store

SCHEMA = "sync-ci/sandbox@1"
BUCKET = "sync-ci-sandbox"
LIVE_ROOT = "snappy-os/"
CI_ROOT = "snappy-os-ci/"
TENANT_ID = "sandbox-tenant"
STORE_REGION = "us-east-1"
WORKER_READY_TIMEOUT_S = 30.0
WORKDIR_PREFIX = "sync-ci-sandbox-"
OWNER_FILE = "owner.json"
# The reference Worker; a module constant so a test can substitute a child that fails on purpose.
WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "sync_ci.sandbox.worker_main")
REFERENCE_WORKER_COMMAND = WORKER_COMMAND
# The reference Worker's imports (aiohttp, boto3, the app) cost about what the store's start does,
# so the sandbox starts it first, as this bootstrap: it imports them while the store boots, reads
# the store's address and keys from its stdin once the bucket exists, and says "ready" on a pipe.
PRELOADED_WORKER_COMMAND: tuple[str, ...] = (
    sys.executable,
    "-c",
    "from sync_ci.sandbox.launcher import run_preloaded_worker; run_preloaded_worker()",
    REFERENCE_WORKER_COMMAND[-1],
)
WORKER_PRELOAD = ("aiohttp.web", "sync_ci.store", "sync_ci.sandbox.worker_app")
# What this process imports for its admin client (boto3) while the store boots.
ADMIN_PRELOAD = "sync_ci.store"
# workerd starts slower than aiohttp (miniflare, a bundle, one isolate per region).
WORKERD_READY_TIMEOUT_S = 90.0
DEFAULT_COLOS = ("SJC", "IAD", "FRA", "SIN", "GRU")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreInfo:
    """Where the sandbox's bucket is and how to sign for it."""

    kind: StoreKind
    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RegionInfo:
    """One Worker listener."""

    name: str
    colo: str
    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    """The reference Worker process and its regions (the first region is its main URL)."""

    pid: int
    url: str
    regions: tuple[RegionInfo, ...]
    runtime: Runtime = "python"


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxInfo:
    """Everything a client needs to use a running sandbox; the ready file is its JSON."""

    store: StoreInfo
    worker: WorkerInfo
    live_root: str
    ci_root: str
    tenant_id: str
    tenant_secret: str = field(repr=False)
    admin_token: str = field(repr=False)
    started_at: str
    # The process that runs the sandbox: its ready file is void once that process is gone.
    owner_pid: int = field(default_factory=os.getpid)
    owner_started: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Render as the ready-file document (schema sync-ci/sandbox@1)."""
        return {
            "schema": SCHEMA,
            "store": {
                "kind": self.store.kind,
                "endpoint_url": self.store.endpoint_url,
                "bucket": self.store.bucket,
                "access_key_id": self.store.access_key_id,
                "secret_access_key": self.store.secret_access_key,
                "pid": self.store.pid,
            },
            "worker": {
                "pid": self.worker.pid,
                "url": self.worker.url,
                "regions": [
                    {"name": r.name, "colo": r.colo, "url": r.url} for r in self.worker.regions
                ],
                "runtime": self.worker.runtime,
            },
            "live_root": self.live_root,
            "ci_root": self.ci_root,
            "tenant_id": self.tenant_id,
            "tenant_secret": self.tenant_secret,
            "admin_token": self.admin_token,
            "started_at": self.started_at,
            "owner": {"pid": self.owner_pid, "started": self.owner_started},
        }


def info_from_json(document: Any, what: str = "sandbox ready file") -> SandboxInfo:
    """Parse a ready-file document, raising SettingsError naming what is wrong."""

    def need(mapping: Any, key: str, kind: type, where: str) -> Any:
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            raise SettingsError(f"{what}: {where}{key} is missing or not a {kind.__name__}")
        return value

    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise SettingsError(f"{what} is not a {SCHEMA} document")
    store, worker = document.get("store"), document.get("worker")
    worker = worker if isinstance(worker, dict) else {}
    regions = []
    raw_regions = need(worker, "regions", list, "worker.")
    for index, item in enumerate(raw_regions):
        where = f"worker.regions[{index}]."
        regions.append(
            RegionInfo(
                name=need(item, "name", str, where),
                colo=need(item, "colo", str, where),
                url=need(item, "url", str, where),
            )
        )
    owner = document.get("owner")
    owner_pid = need(owner, "pid", int, "owner.")
    owner_started = owner.get("started") if isinstance(owner, dict) else None
    if owner_started is not None and (
        not isinstance(owner_started, int) or isinstance(owner_started, bool)
    ):
        raise SettingsError(f"{what}: owner.started is not a whole number")
    kind = need(store, "kind", str, "store.")
    if kind not in STORE_KINDS:
        raise SettingsError(f"{what}: store.kind {kind!r} is not one of {', '.join(STORE_KINDS)}")
    return SandboxInfo(
        store=StoreInfo(
            kind=kind,
            endpoint_url=need(store, "endpoint_url", str, "store."),
            bucket=need(store, "bucket", str, "store."),
            access_key_id=need(store, "access_key_id", str, "store."),
            secret_access_key=need(store, "secret_access_key", str, "store."),
            pid=need(store, "pid", int, "store."),
        ),
        worker=WorkerInfo(
            pid=need(worker, "pid", int, "worker."),
            url=need(worker, "url", str, "worker."),
            regions=tuple(regions),
            runtime="workerd" if worker.get("runtime") == "workerd" else "python",
        ),
        live_root=need(document, "live_root", str, ""),
        ci_root=need(document, "ci_root", str, ""),
        tenant_id=need(document, "tenant_id", str, ""),
        tenant_secret=need(document, "tenant_secret", str, ""),
        admin_token=need(document, "admin_token", str, ""),
        started_at=need(document, "started_at", str, ""),
        owner_pid=owner_pid,
        owner_started=owner_started,
    )


def write_ready_file(info: SandboxInfo, path: Path) -> Path:
    """Write the ready file atomically, readable by the owner alone (mode 600)."""
    text = json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n"
    return write_private(path, text, parents=True)


def read_ready_file(path: Path) -> SandboxInfo:
    """Read a ready file, raising SettingsError when it is missing or malformed."""
    hint = f"start a sandbox with `sync-ci sandbox --ready-file {path}`"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"SYNC_CI_SANDBOX names {path}, which does not exist; {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read the sandbox ready file {path}: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"the sandbox ready file {path} is not JSON ({exc}); {hint}") from None
    info = info_from_json(document, f"the sandbox ready file {path}")
    if not is_running(info.owner_pid, info.owner_started):
        raise SettingsError(
            f"the sandbox ready file {path} is stale: the sandbox that wrote it (pid "
            f"{info.owner_pid}) is no longer running; start a new one with "
            f"`sync-ci sandbox --ready-file {path}` or unset SYNC_CI_SANDBOX"
        )
    return info


def validate_faults(faults: Mapping[str, str], colos: Sequence[str] = DEFAULT_COLOS) -> None:
    """Check fault names and values as the Worker will, so a typo is a usage error (exit 2)."""
    if not faults:
        return  # the check imports the Worker app (aiohttp, ~0.5 s): only pay for it when needed
    from sync_ci.sandbox.worker_app import parse_fault_value

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
    if not mutant:
        return
    from sync_ci.sandbox.worker_app import MUTANTS

    if mutant not in MUTANTS:
        raise UsageError(f"--mutant {mutant!r} is not one of: {', '.join(sorted(MUTANTS))}")


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
            stop_all_groups([self.worker, self.store.process])
        finally:
            try:
                self.store.stop()
            finally:
                if self.owns_workdir:
                    release_workdir(self.workdir)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
        if runtime == "python" and tuple(WORKER_COMMAND) == REFERENCE_WORKER_COMMAND:
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
            started_at=_now_iso(),
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


def _start_store(kind: StoreKind, workdir: Path) -> StoreProcess:
    from sync_ci.sandbox.store_server import start_store

    data_dir = workdir / "store-data"
    return start_store(kind, data_dir=data_dir)


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
    from sync_ci.sandbox.seed import seed_root

    seed_root(admin_store(store_info), LIVE_ROOT)


def worker_arguments(
    ready_file: Path,
    faults: Mapping[str, str],
    kv_miss_ms: Mapping[str, int],
    mutant: str = "",
    command: Sequence[str] = WORKER_COMMAND,
) -> list[str]:
    """Build the reference Worker's command line for the sandbox (both runtimes take it)."""
    args = [
        *command,
        "--ready-file",
        str(ready_file),
        "--host",
        "127.0.0.1",
        "--root",
        LIVE_ROOT,
        "--ci-root",
        CI_ROOT,
        "--write-prefix",
        LIVE_ROOT,
        "--write-prefix",
        CI_ROOT,
        "--allow-root-header",
        "--sandbox-control",
    ]
    if kv_miss_ms:
        args += ["--kv-miss-ms", ",".join(f"{c}={ms}" for c, ms in kv_miss_ms.items())]
    for key, value in faults.items():
        args += ["--fault", f"{key}={value}"]
    if mutant:
        args += ["--mutant", mutant]
    return args


def _worker_env(tenant_secret: str, admin_token: str) -> dict[str, str]:
    """The Worker's environment but the store's: the tree sync_ci runs from, and its secrets."""
    package_parent = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SYNC_CI_WORKER_")},
        # The child imports sync_ci from the same tree even when it is not installed.
        "PYTHONPATH": python_path,
        "SYNC_CI_WORKER_TENANT_SECRET": tenant_secret,
        "SYNC_CI_WORKER_ADMIN_TOKEN": admin_token,
    }


def _store_env(store_info: StoreInfo) -> dict[str, str]:
    return {
        "SYNC_CI_WORKER_STORE_ENDPOINT": store_info.endpoint_url,
        "SYNC_CI_WORKER_BUCKET": store_info.bucket,
        "SYNC_CI_WORKER_ACCESS_KEY_ID": store_info.access_key_id,
        "SYNC_CI_WORKER_SECRET_ACCESS_KEY": store_info.secret_access_key,
    }


@dataclass(slots=True, kw_only=True)
class EarlyWorker:
    """The reference Worker started before its store: waiting on stdin, saying "ready" on a pipe."""

    process: subprocess.Popen[bytes]
    ready_file: Path
    log_path: Path
    notify: int

    def release(self, store_info: StoreInfo) -> None:
        """Hand the Worker its store (one JSON line on stdin; secrets never go on argv)."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(_store_env(store_info)).encode() + b"\n")
            stdin.close()
        except BrokenPipeError:
            pass  # it died while importing: wait_for_worker reports its exit code and last line

    def close(self) -> None:
        """Close this side's pipes (stdin unread means the Worker exits without serving)."""
        stdin = self.process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()
        with contextlib.suppress(OSError):
            os.close(self.notify)


def spawn_early_worker(
    *,
    workdir: Path,
    faults: Mapping[str, str],
    kv_miss_ms: Mapping[str, int],
    tenant_secret: str,
    admin_token: str,
    mutant: str = "",
) -> EarlyWorker:
    """Start the reference Worker's bootstrap now; `release` gives it the store when it exists."""
    ready_file = workdir / "worker-ready.json"
    ready_file.unlink(missing_ok=True)
    log_path = workdir / "worker.log"
    notify, told = os.pipe()
    try:
        with open(log_path, "wb") as log:
            command = (*PRELOADED_WORKER_COMMAND, str(told))
            process = spawn(
                worker_arguments(ready_file, faults, kv_miss_ms, mutant, command),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_worker_env(tenant_secret, admin_token),
                pass_fds=(told,),
            )
    except OSError as exc:
        os.close(notify)
        raise SettingsError(f"cannot start the reference Worker: {exc}") from None
    finally:
        os.close(told)
    return EarlyWorker(process=process, ready_file=ready_file, log_path=log_path, notify=notify)


def run_preloaded_worker() -> None:
    """Child side of PRELOADED_WORKER_COMMAND: import, wait for the store, serve, say "ready"."""
    worker_main = importlib.import_module(sys.argv[1])
    told, argv = int(sys.argv[2]), sys.argv[3:]
    for name in WORKER_PRELOAD:
        importlib.import_module(name)
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)  # the launcher gave up before its store was ready
    os.environ.update(json.loads(line))
    write = worker_main.write_ready_file

    def write_and_tell(path: Path, document: Mapping[str, Any]) -> None:
        write(path, document)
        os.write(told, b"ready\n")
        os.close(told)

    setattr(worker_main, "write_ready_file", write_and_tell)  # noqa: B010  (a module global)
    sys.exit(worker_main.main(argv))


def start_worker(
    store_info: StoreInfo,
    *,
    workdir: Path,
    faults: Mapping[str, str],
    kv_miss_ms: Mapping[str, int],
    tenant_secret: str,
    admin_token: str,
    timeout_s: float = WORKER_READY_TIMEOUT_S,
    while_booting: Callable[[], object] | None = None,
    mutant: str = "",
    runtime: Runtime = "python",
    project: str = "",
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start the reference Worker in its own session and wait for its ready file."""
    command: Sequence[str] = WORKER_COMMAND
    if runtime == "workerd" or project:
        command = workerd_command()
        timeout_s = max(timeout_s, WORKERD_READY_TIMEOUT_S)
        if project:
            command = (*command, "--project", str(write_project_file(Path(project), workdir)))
    ready_file = workdir / "worker-ready.json"
    ready_file.unlink(missing_ok=True)
    log_path = workdir / "worker.log"
    env = {**_worker_env(tenant_secret, admin_token), **_store_env(store_info)}
    with open(log_path, "wb") as log:
        try:
            worker = spawn(
                worker_arguments(ready_file, faults, kv_miss_ms, mutant, command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        except OSError as exc:
            raise SettingsError(f"cannot start the reference Worker: {exc}") from None
    try:
        if while_booting is not None:
            while_booting()
        document = wait_for_worker(worker, ready_file, log_path, timeout_s)
    except BaseException:
        stop_process_group(worker)
        raise
    return worker, document


def wait_for_worker(
    worker: subprocess.Popen[bytes],
    ready_file: Path,
    log_path: Path,
    timeout_s: float,
    *,
    notify: int | None = None,
) -> dict[str, Any]:
    """Wait for the Worker's ready file; raise UnreachableError if it dies or takes too long.

    With `notify` (the read end of a pipe the Worker writes "ready" to, and which reaches EOF when
    it exits) this blocks until one of those happens; without, it polls.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = worker.poll()
        if code is not None:
            raise UnreachableError(
                f"the reference Worker exited with code {code} before it was ready: "
                f"{last_line(log_path)}"
            )
        document = _read_worker_ready(ready_file)
        if document is not None:
            return document
        if notify is None:
            time.sleep(0.05)
            continue
        readable, _, _ = select.select([notify], [], [], max(0.0, deadline - time.monotonic()))
        if readable and not os.read(notify, 64):
            # EOF: the Worker is gone (or going); its exit code is the next thing to report.
            notify = None
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=max(0.0, deadline - time.monotonic()))
    raise UnreachableError(
        f"the reference Worker was not ready within {timeout_s:g} s; "
        f"last log line: {last_line(log_path)}"
    )


def _read_worker_ready(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not isinstance(document, dict):
        document = {}
    regions = document.get("regions")
    if document.get("contract") != 1 or not isinstance(regions, list) or not regions:
        raise UnreachableError(
            f"the reference Worker wrote an unexpected ready file {path}: "
            "want contract 1 and at least one region"
        )
    for region in regions:
        if not isinstance(region, dict) or not {"name", "colo", "url"} <= region.keys():
            raise UnreachableError(f"the reference Worker's ready file {path} has a bad region")
    return document


def last_line(path: Path) -> str:
    """Return the last non-empty line of a log file (for one-line errors)."""
    try:
        lines = path.read_bytes().decode(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(no output)"
