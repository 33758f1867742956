"""`sync-ci gate load|latency --engine locust` end to end against the sandbox (loopback only).

Healthy runs are judged for behaviour (tests.gates.verdicts), never for this machine's speed; the
process waits are hang guards a loaded machine never reaches.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from sync_ci.cli import main
from tests.conftest import sandbox_env_for
from tests.gates.recording import RecordingProxy
from tests.gates.verdicts import assert_honest, behaviour_verdicts

SYNC_CI = [sys.executable, "-m", "sync_ci"]
# Hang guards: generous enough that only a hung process reaches them, however loaded the machine.
HANG_S = 300
# How long a master waits for its workers to connect (it proceeds as soon as they have).
GATHER_S = "300"


def document(path: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def rows(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    results: list[dict[str, object]] = doc["results"]  # type: ignore[assignment]
    return {str(r["id"]): r for r in results}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_locust_and_builtin_give_the_same_verdict_and_counts(
    gate_env: dict[str, str], tmp_path: Path
) -> None:
    builtin, locust = tmp_path / "builtin.json", tmp_path / "locust.json"
    code = main(["gate", "load", "-q", "--json", str(builtin)])
    assert_honest(document(builtin), code)
    args = ["--engine", "locust", "--processes", "2", "--json", str(locust)]
    args += ["--expect-workers-max-wait", GATHER_S]
    code = main(["gate", "load", "-q", *args])
    assert_honest(document(locust), code)
    mine, theirs = document(locust), document(builtin)
    assert mine["schema"] == theirs["schema"] == "sync-ci/result@1"
    # The same rows; the same verdict wherever the verdict is behaviour, not this machine's speed.
    assert rows(mine).keys() == rows(theirs).keys()
    assert behaviour_verdicts(rows(mine).values()) == behaviour_verdicts(rows(theirs).values())
    for row in ("load.burst.install.p95_ms", "load.burst.push.p95_ms"):
        observed_mine, observed_theirs = rows(mine)[row]["observed"], rows(theirs)[row]["observed"]
        assert observed_mine["count"] == observed_theirs["count"]  # type: ignore[index]
        assert observed_mine["ok"] == observed_theirs["ok"]  # type: ignore[index]
    extra: dict[str, object] = mine["extra"]  # type: ignore[assignment]
    assert extra["engine"] == "locust" and extra["workers"] == 2
    per_worker: dict[str, dict[str, int]] = extra["worker_samples"]  # type: ignore[assignment]
    assert sorted(w["samples"] for w in per_worker.values()) == [550, 550]
    # This process ran the built-in engine and orchestrated Locust; it never imported gevent.
    assert "gevent" not in sys.modules and "locust" not in sys.modules


def test_both_engines_fail_on_a_1_percent_5xx_fault(
    gate_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    for engine in ("builtin", "locust"):
        args = ["--engine", engine, "--fault", "5xx_rate=0.01"]
        if engine == "locust":
            args += ["--expect-workers-max-wait", GATHER_S]
        code = main(["gate", "load", "-q", *args])
        out = capsys.readouterr().out
        assert code == 1, engine
        assert "breached load.5xx" in out, engine


def spawn(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            [*SYNC_CI, *args], stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT
        )


def reap(process: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def await_dialers(
    listener: socket.socket, count: int, workers: list[subprocess.Popen[bytes]]
) -> None:
    """Accept (and reset) `count` connections: the workers are up and dialling the master's port."""
    listener.settimeout(1)
    accepted = 0
    for _ in range(HANG_S):
        if accepted == count:
            return
        assert all(w.poll() is None for w in workers), [w.returncode for w in workers]
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        # Reset, not close: a closed connection's TIME_WAIT would keep the master off this port.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
        accepted += 1
    raise AssertionError(f"only {accepted} of {count} workers dialled the master's port")


def test_master_refuses_to_run_short_handed(gate_env: dict[str, str], tmp_path: Path) -> None:
    # The workers start first and dial the port until a master answers (they retry), so that the
    # master's short wait for a third worker measures refusal, not how fast Python starts here.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    worker_args = ["gate", "load", "--engine", "locust", "--worker", "--master-host", "127.0.0.1"]
    worker_args += ["--master-port", str(port), "--expect-workers-max-wait", GATHER_S]
    workers = [spawn(*worker_args, log=tmp_path / f"w{i}.log") for i in range(2)]
    try:
        with listener:
            await_dialers(listener, 2, workers)
        master_args = ["gate", "load", "--engine", "locust", "--master", "--expect-workers", "3"]
        master_args += ["--expect-workers-max-wait", "20", "--master-bind-host", "127.0.0.1"]
        master_args += ["--master-bind-port", str(port)]
        master = subprocess.Popen(
            [*SYNC_CI, *master_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = master.communicate(timeout=HANG_S)
        finally:
            if master.poll() is None:
                master.kill()
                master.wait(timeout=5)
        codes = [reap(w, HANG_S) for w in workers]
    finally:
        for worker in workers:  # only after a failed step above: never wait out the connect wait
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=5)
    assert master.returncode == 3, err.decode()
    lines = err.decode().strip().splitlines()
    assert lines == [
        "sync-ci: error: expected 3 Locust workers but 2 connected within 20 s; "
        "refusing to run the load gate short-handed"
    ]
    assert codes == [3, 3]
    assert "refusing to run" in (tmp_path / "w0.log").read_text(encoding="utf-8")
    assert not out.strip()


def test_distributed_latency_uses_the_region_tags(gate_env: dict[str, str], tmp_path: Path) -> None:
    port, result = free_port(), tmp_path / "latency.json"
    master = spawn(
        *("gate", "latency", "-q", "--engine", "locust", "--master", "--expect-workers", "2"),
        *("--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)),
        *("--expect-workers-max-wait", GATHER_S, "--json", str(result)),
        log=tmp_path / "master.log",
    )
    worker = ["gate", "latency", "--engine", "locust", "--worker", "--master-host", "127.0.0.1"]
    worker += ["--master-port", str(port), "--expect-workers-max-wait", GATHER_S]
    workers = [
        spawn(*worker, "--region", "sjc", log=tmp_path / "sjc.log"),
        spawn(*worker, log=tmp_path / "any.log"),
    ]
    code = reap(master, 2 * HANG_S)
    assert [reap(w, HANG_S) for w in workers] == [0, 0]
    assert result.exists(), (tmp_path / "master.log").read_text(encoding="utf-8")
    doc = document(result)
    assert_honest(doc, code)
    extra: dict[str, object] = doc["extra"]  # type: ignore[assignment]
    per_worker: dict[str, dict[str, object]] = extra["worker_samples"]  # type: ignore[assignment]
    by_region = {str(w["region"]): w["samples"] for w in per_worker.values()}
    assert by_region == {"sjc": 200, "": 800}
    regions: dict[str, dict[str, int]] = extra["regions"]  # type: ignore[assignment]
    assert {name: r["ok"] for name, r in regions.items()} == dict.fromkeys(regions, 200)
    assert len(regions) == 5
    assert "sent 200 samples" in (tmp_path / "sjc.log").read_text(encoding="utf-8")


def test_engine_flags_are_usage_errors(
    gate_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gate", "load", "--master"]) == 2
    assert main(["gate", "latency", "--engine", "locust", "--worker"]) == 2
    assert main(["gate", "load", "--engine", "locust", "--processes", "0"]) == 2
    err = capsys.readouterr().err
    assert "need --engine locust" in err and "--master-host" in err


def test_cheap_paths_never_import_locust_or_gevent() -> None:
    script = (
        "import sys\n"
        "from sync_ci.cli import build_parser\n"
        "import sync_ci.field.doctor, sync_ci.gates.cli, sync_ci.gates.load, sync_ci.gates.latency\n"
        "import sync_ci.gates.locust_engine\n"
        "build_parser().parse_args(['gate', 'load', '--engine', 'locust', '--processes', '2'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_worker_on_a_read_only_target_refuses_to_push_whatever_its_master_says(
    sandbox_ready_file: Path, tmp_path: Path
) -> None:
    import dataclasses

    from sync_ci.sandbox.launcher import read_ready_file, write_ready_file

    info = read_ready_file(sandbox_ready_file)
    proxy = RecordingProxy(info.worker.url)
    try:
        proxied = dataclasses.replace(info, worker=dataclasses.replace(info.worker, url=proxy.url))
        ready = write_ready_file(proxied, tmp_path / "ready.json")
        base = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_CI_")}
        master_env = {**base, **sandbox_env_for(ready, tmp_path / "master")}
        live_env = {**base, **sandbox_env_for(ready, tmp_path / "worker")}
        del live_env["SYNC_CI_SANDBOX"]
        live_env |= {
            "SYNC_CI_TARGET": "live",
            "SYNC_CI_BUCKET": "production",
            "SYNC_CI_ENDPOINT_URL": "http://127.0.0.1:9",
            "SYNC_CI_ACCESS_KEY_ID": "live-key-id",
            "SYNC_CI_SECRET_ACCESS_KEY": "live-secret-key",
            "SYNC_CI_WORKER_URL": "http://127.0.0.1:9",
            # The worker holds a valid tenant secret: only its own read-only policy stops it.
            "SYNC_CI_TENANT_SECRET": info.tenant_secret,
        }
        port = free_port()
        master = subprocess.Popen(
            [
                *(*SYNC_CI, "gate", "load", "-q", "--engine", "locust", "--master"),
                *("--expect-workers", "1", "--expect-workers-max-wait", GATHER_S),
                *("--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=master_env,
        )
        worker = subprocess.Popen(
            [
                *(*SYNC_CI, "gate", "load", "--engine", "locust", "--worker"),
                *("--master-host", "127.0.0.1", "--master-port", str(port)),
                *("--expect-workers-max-wait", GATHER_S),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=live_env,
        )
        try:
            _, master_err = master.communicate(timeout=2 * HANG_S)
            _, worker_err = worker.communicate(timeout=HANG_S)
        finally:
            for process in (master, worker):
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=5)
    finally:
        proxy.close()
    refusal = "refused POST /_push: this run is read-only (GET and HEAD only)"
    assert (master.returncode, worker.returncode) == (1, 1)
    (master_line,) = master_err.decode().strip().splitlines()
    assert master_line.startswith("sync-ci: error: Locust worker ") and refusal in master_line
    assert worker_err.decode().strip().splitlines() == [f"sync-ci: error: {refusal}"]
    # The only write that reached the Worker is the master's own first push (sandbox, CI root).
    writes = proxy.writes()
    assert [w.headers.get("user-agent") for w in writes] == ["sync-ci-gate"]
    assert not [r for r in proxy.requests if "locust" in r.headers.get("user-agent", "")]
