"""A running object store (the process type every store kind returns) and moto, the default one.

Both kinds listen on 127.0.0.1 and report their port; `seaweed` builds the strict store on
`StoreProcess`, and `launcher.start_store` picks a kind.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sync_ci.errors import SettingsError, UnreachableError
from sync_ci.sandbox.processes import kill_group, spawn, stop_process_group

StoreKind = Literal["moto", "seaweedfs"]
STORE_KINDS: tuple[StoreKind, ...] = ("moto", "seaweedfs")
READY_TIMEOUT_S = 20.0
_RUNNING_ON = re.compile(rb"Running on http://127\.0\.0\.1:(\d+)")


@dataclass(slots=True, kw_only=True)
class StoreProcess:
    """A running store: where it answers, its throwaway credentials, and how to stop it."""

    kind: StoreKind
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    process: subprocess.Popen[bytes]
    data_dir: Path | None = None
    drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """The store's process id."""
        return self.process.pid

    def begin_stop(self) -> None:
        """Signal the store to go, without waiting: moto's bucket lives in its memory only, so
        there is nothing to flush and it is killed at once (its graceful exit, tearing down an
        interpreter full of modules, took 0.3-1 s of every smoke); SeaweedFS gets SIGTERM."""
        if self.process.poll() is None:
            kill_group(self.process.pid, signal.SIGKILL if self.kind == "moto" else signal.SIGTERM)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the store's process group (moto: SIGKILL; else SIGTERM, SIGKILL after `timeout_s`)."""
        try:
            self.begin_stop()
            stop_process_group(self.process, timeout_s)
        finally:
            if self.drain is not None:
                self.drain.join(timeout=2)


def _moto_command() -> list[str]:
    found = shutil.which(
        "moto_server",
        path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    )
    if found:
        return [found]
    return [sys.executable, "-m", "moto.server"]


def start_moto(log_path: Path | None = None) -> StoreProcess:
    """Start `moto_server` on an ephemeral loopback port."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        process = spawn(
            [*_moto_command(), "-H", "127.0.0.1", "-p", "0"], stdout=log, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise SettingsError(
            f"cannot start moto_server ({exc}); install it: pip install 'moto[server]'"
        ) from None
    port = _read_moto_port(process)
    return StoreProcess(
        drain=_drain(process),
        kind="moto",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id="sandbox",
        secret_access_key=secrets.token_hex(16),
        process=process,
    )


def _read_moto_port(process: subprocess.Popen[bytes]) -> int:
    assert process.stderr is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen = b""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen += line
        match = _RUNNING_ON.search(line)
        if match:
            return int(match.group(1))
    stop_process_group(process)
    tail = seen.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise UnreachableError(f"moto_server did not start within {READY_TIMEOUT_S:g} s: {tail[0]}")


def _drain(process: subprocess.Popen[bytes]) -> threading.Thread:
    """Keep reading stderr so the server never blocks on a full pipe; close it at EOF."""
    stream = process.stderr
    assert stream is not None

    def pump() -> None:
        for _ in iter(stream.readline, b""):
            pass
        stream.close()

    thread = threading.Thread(target=pump, daemon=True, name="store-stderr")
    thread.start()
    return thread
