"""Sandbox start-up: the Worker starts beside its store, and readiness is waited on, not polled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sync_ci.errors import UnreachableError
from sync_ci.sandbox import launcher, worker_process
from sync_ci.sandbox.processes import spawn, start_ticks, stop_process_group
from sync_ci.worker import WorkerClient, WorkerTarget
from tests.sandbox.test_launcher import _children

HANG_S = 120.0


def test_the_worker_starts_before_the_store_is_up_and_serves_the_seeded_root() -> None:
    with launcher.start_sandbox() as sandbox:
        worker_started = start_ticks(sandbox.worker.pid)
        store_started = start_ticks(sandbox.store.pid)
        assert worker_started is not None and store_started is not None
        # Spawned first, it imported while the store booted (before: it began once the store was up).
        assert worker_started <= store_started
        target = WorkerTarget(base_url=sandbox.info.worker.url, read_only=True, timeout_s=10)
        with WorkerClient(target) as client:
            assert client.get("/catalog").json()["generation"] == 1
        # The store's keys reached it on stdin: neither its argv nor its environment holds them.
        secret = sandbox.info.store.secret_access_key.encode()
        proc = Path(f"/proc/{sandbox.worker.pid}")
        assert secret not in (proc / "cmdline").read_bytes()
        assert secret not in (proc / "environ").read_bytes()


def test_an_early_worker_that_dies_reports_its_exit_code_and_last_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = (
        "import sys; sys.stdin.readline(); print('importing', flush=True); "
        "sys.stderr.write('boom: the store refused\\n'); sys.exit(4)"
    )
    monkeypatch.setattr(worker_process, "PRELOADED_WORKER_COMMAND", (sys.executable, "-c", script))
    before = _children(os.getpid())
    with pytest.raises(UnreachableError, match=r"exited with code 4 .*: boom: the store refused$"):
        launcher.start_sandbox(workdir=tmp_path / "work")
    assert _children(os.getpid()) <= before


def test_waiting_on_the_notify_pipe_returns_once_the_ready_file_is_written(tmp_path: Path) -> None:
    ready, log_path = tmp_path / "ready.json", tmp_path / "log"
    document = {"contract": 1, "regions": [{"name": "sjc", "colo": "SJC", "url": "http://x"}]}
    notify, told = os.pipe()
    # Writes the ready file after a while, says so on the pipe, then stays up: only the pipe can
    # end the wait early (a 60 s sleep-poll interval would leave it waiting).
    script = (
        "import os, sys, time; time.sleep(0.5); "
        f"open({str(ready)!r}, 'w').write({json.dumps(document)!r}); "
        "os.write(int(sys.argv[1]), b'ready'); time.sleep(60)"
    )
    log = open(log_path, "wb")  # noqa: SIM115
    child = spawn(
        [sys.executable, "-c", script, str(told)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        pass_fds=(told,),
    )
    os.close(told)
    log.close()
    try:
        found = worker_process.wait_for_worker(child, ready, log_path, HANG_S, notify=notify)
        assert found == document
        assert child.poll() is None
    finally:
        os.close(notify)
        stop_process_group(child)


def test_waiting_on_the_notify_pipe_sees_a_death_at_once(tmp_path: Path) -> None:
    notify, told = os.pipe()
    with open(tmp_path / "log", "wb") as log:
        child = spawn(
            [sys.executable, "-c", "import sys; print('bye: no store'); sys.exit(5)", str(told)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(told,),
        )
    os.close(told)
    try:
        # The EOF ends the wait: a timeout would say "not ready within", not the exit code.
        with pytest.raises(UnreachableError, match=r"exited with code 5 .*: bye: no store$"):
            worker_process.wait_for_worker(
                child, tmp_path / "never.json", tmp_path / "log", HANG_S, notify=notify
            )
    finally:
        os.close(notify)
        stop_process_group(child)
