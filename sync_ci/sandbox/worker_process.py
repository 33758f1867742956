"""The reference Worker's process: its command line and environment, start, and readiness.

The sandbox starts the Python Worker early (it imports while the store boots) through
`PRELOADED_WORKER_COMMAND`; workerd and substitute commands start once the store exists.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sync_ci.errors import SettingsError, UnreachableError
from sync_ci.sandbox.processes import last_line, spawn, stop_process_group
from sync_ci.sandbox.ready_file import CI_ROOT, LIVE_ROOT, StoreInfo
from sync_ci.sandbox.workerd import Runtime, workerd_command, write_project_file

WORKER_READY_TIMEOUT_S = 30.0
# The reference Worker; a module constant so a test can substitute a child that fails on purpose.
WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "sync_ci.sandbox.worker_main")
REFERENCE_WORKER_COMMAND = WORKER_COMMAND
# The reference Worker's imports (aiohttp, boto3, the app) cost about what the store's start does,
# so the sandbox starts it first, as this bootstrap: it imports them while the store boots, reads
# the store's address and keys from its stdin once the bucket exists, and says "ready" on a pipe.
PRELOADED_WORKER_COMMAND: tuple[str, ...] = (
    sys.executable,
    "-c",
    "from sync_ci.sandbox.worker_process import run_preloaded_worker; run_preloaded_worker()",
    REFERENCE_WORKER_COMMAND[-1],
)
WORKER_PRELOAD = ("aiohttp.web", "sync_ci.store", "sync_ci.sandbox.worker_app")
# workerd starts slower than aiohttp (miniflare, a bundle, one isolate per region).
WORKERD_READY_TIMEOUT_S = 90.0


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
    worker_main.exit_served(worker_main.main(argv))


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
