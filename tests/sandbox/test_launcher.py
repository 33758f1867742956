"""The sandbox launcher, ready file, opening a target, run-time faults and the `sync-ci sandbox` commands."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync_ci import contract, guards
from sync_ci.attachment import SUITE, open_target
from sync_ci.cli import main
from sync_ci.clock import parse_utc_stamp
from sync_ci.config import Settings, load_settings
from sync_ci.errors import SettingsError, UnreachableError, UsageError
from sync_ci.sandbox import launcher, processes, worker_process
from sync_ci.sandbox.attach import clear_faults, get_faults, set_faults
from sync_ci.sandbox.launcher import Sandbox, start_sandbox
from sync_ci.sandbox.mutants import MUTANTS
from sync_ci.sandbox.ready_file import SandboxInfo, read_ready_file, write_ready_file
from sync_ci.sandbox.seed import UNICODE_NAME, seed_files
from sync_ci.store import StoreEndpoint, open_store
from sync_ci.worker import WorkerClient, WorkerTarget
from tests.conftest import FaultySandbox, sandbox_env_for

REPO = Path(__file__).resolve().parents[2]
# Bounds that only stop a hung test; a loaded machine must never reach them.
HANG_S = 600.0
READY_KEYS = {
    "schema",
    "store",
    "worker",
    "live_root",
    "ci_root",
    "tenant_id",
    "tenant_secret",
    "admin_token",
    "started_at",
    "owner",
}


def _alive(pid: int) -> bool:
    """True when `pid` is a running (not zombie) process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def _wait_gone(*pids: int, timeout_s: float = HANG_S) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    return int(done.stdout)


def _reader(settings: Settings) -> WorkerClient:
    return WorkerClient(WorkerTarget(base_url=settings.worker_url, read_only=True, retries=0))


def _cli_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_CI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**env, **extra}


def _dead_info(info: SandboxInfo) -> SandboxInfo:
    """The same sandbox, but with its Worker on a loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    regions = (replace(info.worker.regions[0], url=url),)
    return replace(info, worker=replace(info.worker, url=url, regions=regions))


# --- seed content ----------------------------------------------------------------------------


def test_seed_files_are_deterministic_varied_and_distinct() -> None:
    files = seed_files()
    assert files == seed_files()
    assert 10 <= len(files) <= 14
    sizes = sorted(len(data) for data in files.values())
    assert sizes[0] <= 8
    assert 150 * 1024 <= sizes[-1] <= 210 * 1024
    assert UNICODE_NAME in files
    assert not UNICODE_NAME.isascii()
    assert len({contract.sha256_hex(d) for d in files.values()}) == len(files)
    assert seed_files(2)["VERSION"] != files["VERSION"]


def test_seeded_live_root_matches_its_catalog(sandbox: Sandbox) -> None:
    info = sandbox.info
    endpoint = StoreEndpoint(
        bucket=info.store.bucket,
        endpoint_url=info.store.endpoint_url,
        region_name="us-east-1",
        access_key_id=info.store.access_key_id,
        secret_access_key=info.store.secret_access_key,
    )
    store = open_store(endpoint, guards.read_only_policy())
    raw = store.get(contract.catalog_key(info.live_root))
    assert raw is not None
    catalog = contract.parse_catalog(contract.parse_json(raw, "catalog"))
    expected, _ = contract.build_catalog(seed_files(), 1)
    assert catalog == expected
    for entry in catalog.entries:
        blob = store.get(contract.object_key(info.live_root, entry.sha256))
        assert blob is not None
        assert (contract.sha256_hex(blob), len(blob)) == (entry.sha256, entry.size)
    by_name = {e.name: e for e in catalog.entries}
    target = WorkerTarget(base_url=info.worker.url, read_only=True, retries=0)
    with WorkerClient(target) as client:
        assert client.get("/catalog").json() == catalog.to_json()
        for name in (UNICODE_NAME, "bin/snappy"):
            answer = client.get(f"/o/{by_name[name].sha256}")
            assert answer.status == 200
            assert contract.sha256_hex(answer.body) == by_name[name].sha256


# --- ready file ------------------------------------------------------------------------------


def test_ready_file_is_private_complete_and_round_trips(sandbox: Sandbox, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "ready.json"
    write_ready_file(sandbox.info, path)
    write_ready_file(sandbox.info, path)  # replacing it keeps the mode and leaves no temp file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["ready.json"]
    document = json.loads(path.read_text())
    assert set(document) == READY_KEYS
    assert document["schema"] == "sync-ci/sandbox@1"
    assert document["store"]["pid"] == sandbox.store.pid
    assert document["store"]["bucket"] == "sync-ci-sandbox"
    assert set(document["store"]) == {
        "kind",
        "endpoint_url",
        "bucket",
        "access_key_id",
        "secret_access_key",
        "pid",
    }
    worker = document["worker"]
    assert worker["pid"] == sandbox.worker.pid
    assert worker["url"] == worker["regions"][0]["url"]
    assert [r["colo"] for r in worker["regions"]] == ["SJC", "IAD", "FRA", "SIN", "GRU"]
    assert len({r["url"] for r in worker["regions"]}) == 5
    assert (document["live_root"], document["ci_root"]) == ("snappy-os/", "snappy-os-ci/")
    assert document["tenant_id"] == "sandbox-tenant"
    assert parse_utc_stamp(document["started_at"]) <= datetime.now(UTC)
    assert len(document["admin_token"]) == 64
    assert len(document["tenant_secret"]) == 64
    assert document["owner"] == {
        "pid": os.getpid(),
        "started": processes.start_ticks(os.getpid()),
    }
    assert read_ready_file(path) == sandbox.info
    shown = repr(sandbox.info)
    for secret in (document["admin_token"], document["tenant_secret"]):
        assert secret not in shown


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "is not JSON"),
        ('{"schema": "other"}', "is not a sync-ci/sandbox@1 document"),
        ('{"schema": "sync-ci/sandbox@1", "store": {}, "worker": {}}', "worker.regions"),
    ],
)
def test_a_missing_or_malformed_ready_file_is_a_settings_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "ready.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError, match=message):
        read_ready_file(path)


# --- attach ----------------------------------------------------------------------------------


def test_sandbox_settings_point_at_the_session_sandbox(
    sandbox_settings: Settings, sandbox: Sandbox
) -> None:
    info = sandbox.info
    assert sandbox_settings.target == "sandbox"
    assert sandbox_settings.worker_url == info.worker.url
    assert (sandbox_settings.bucket, sandbox_settings.endpoint_url) == (
        "sync-ci-sandbox",
        info.store.endpoint_url,
    )
    assert [r.colo for r in sandbox_settings.regions] == ["SJC", "IAD", "FRA", "SIN", "GRU"]
    assert sandbox_settings.secrets.tenant_token == contract.tenant_token(
        info.tenant_secret, sandbox_settings.tenant_id
    )
    assert sandbox_settings.secrets.admin_token == info.admin_token
    assert sandbox_settings.ci_prefix.startswith("snappy-os-ci/")
    assert len(sandbox_settings.sha) == 40
    # The credentials are real: a write under this test's own CI prefix goes through.
    store = open_store(
        StoreEndpoint(
            bucket=sandbox_settings.bucket,
            endpoint_url=sandbox_settings.endpoint_url,
            region_name=sandbox_settings.region_name,
            access_key_id=sandbox_settings.secrets.access_key_id,
            secret_access_key=sandbox_settings.secrets.secret_access_key,
        ),
        guards.prefix_policy(sandbox_settings.bucket, sandbox_settings.ci_prefix),
    )
    store.put(f"{sandbox_settings.ci_prefix}probe.txt", b"ok")
    assert store.get(f"{sandbox_settings.ci_prefix}probe.txt") == b"ok"


def test_attached_sandbox_secrets_are_masked_like_any_other(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # The sandbox's secrets come from its ready file, not from settings: attaching registers them.
    ready = write_ready_file(sandbox.info, tmp_path / "ready.json")
    script = (
        "import sys\n"
        "from sync_ci.config import load_settings\n"
        "from sync_ci.redaction import redact\n"
        "from sync_ci.attachment import SUITE, open_target\n"
        "with open_target(load_settings(), SUITE) as s:\n"
        "    for value in (s.secrets.admin_token, s.secrets.tenant_token, s.secrets.tenant_secret):\n"
        "        print(redact(f'header {value} end'))\n"
    )
    env = _cli_env(sandbox_env_for(ready, tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=HANG_S
    )
    assert done.returncode == 0, done.stderr
    info = sandbox.info
    for value in (info.admin_token, info.tenant_secret):
        assert value not in done.stdout
    assert done.stdout.count("header ") == 3


@pytest.mark.parametrize("command", [["smoke"], ["gate", "latency"], ["conformance"]])
def test_a_local_ci_worker_without_a_store_endpoint_is_one_settings_line(
    command: list[str], tmp_path: Path
) -> None:
    (tmp_path / "sync-ci.toml").touch()
    env = {
        "HOME": str(tmp_path),
        "SYNC_CI_CONFIG": str(tmp_path / "sync-ci.toml"),
        "SYNC_CI_TARGET": "ci",
        "SYNC_CI_SHA": "a" * 40,
        "SYNC_CI_BUCKET": "real-bucket",
        "SYNC_CI_ACCESS_KEY_ID": "k",
        "SYNC_CI_SECRET_ACCESS_KEY": "s",
    }
    done = _run_cli(command, env, tmp_path)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.splitlines() == [
        "sync-ci: error: target ci without a preview URL starts a local Worker over the bucket, "
        "and it needs the store's endpoint: set [store] endpoint_url in sync-ci.toml or "
        "SYNC_CI_ENDPOINT_URL (or SYNC_CI_PREVIEW_URL to test a deployed preview)"
    ]


def test_attach_to_a_dead_sandbox_is_unreachable(sandbox: Sandbox, tmp_path: Path) -> None:
    ready = write_ready_file(_dead_info(sandbox.info), tmp_path / "dead.json")
    settings = load_settings(env=sandbox_env_for(ready, tmp_path / "home"))
    with pytest.raises(UnreachableError) as caught, open_target(settings, SUITE):
        pass
    assert str(caught.value) == (
        f"the sandbox named by SYNC_CI_SANDBOX={ready} is not answering; "
        f"start one with `sync-ci sandbox --ready-file {ready}`"
    )
    done = _run_cli(["sandbox-fault"], sandbox_env_for(ready, tmp_path / "home2"), tmp_path)
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"sync-ci: error: {caught.value}"]


def test_attach_without_a_ready_file_runs_an_ephemeral_sandbox(tmp_path: Path) -> None:
    env = sandbox_env_for(tmp_path / "unused.json", tmp_path / "home")
    del env["SYNC_CI_SANDBOX"]
    with open_target(load_settings(env=env), SUITE) as settings, _reader(settings) as client:
        answer = client.get("/catalog")
        assert answer.status == 200
        generation = answer.json()["generation"]
        worker_url = settings.worker_url
    assert generation == 1
    target = WorkerTarget(base_url=worker_url, read_only=True, retries=0, timeout_s=2)
    with pytest.raises(UnreachableError), WorkerClient(target) as client:
        client.get("/_health")


# --- start and stop --------------------------------------------------------------------------


def test_stop_leaves_no_process_and_no_workdir() -> None:
    running = start_sandbox()
    pids = (running.store.pid, running.worker.pid)
    assert all(_alive(p) for p in pids)
    assert running.alive()
    workdir = running.workdir
    running.stop()
    running.stop()  # idempotent
    assert _wait_gone(*pids) == []
    assert not workdir.exists()


def test_a_worker_that_dies_at_start_reports_its_last_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = "import sys; print('starting', flush=True); sys.stderr.write('boom: no bucket\\n'); sys.exit(4)"
    monkeypatch.setattr(worker_process, "WORKER_COMMAND", (sys.executable, "-c", script))
    before = _children(os.getpid())
    with pytest.raises(UnreachableError, match=r"exited with code 4 .*: boom: no bucket$"):
        start_sandbox(workdir=tmp_path / "work")
    assert _children(os.getpid()) <= before


def test_bad_fault_syntax_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["sandbox", "--fault", "nonsense"],
        ["sandbox", "--fault", "bogus=1"],
        ["sandbox", "--fault", "5xx_rate=2"],
        ["sandbox", "--kv-miss-ms", "XYZ=5"],
        ["sandbox-fault", "--set", "latency_ms"],
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.splitlines()
        assert len(lines) == 1, (argv, lines)
        assert lines[0].startswith("sync-ci: error: "), (argv, lines)


_CHECK_WITHOUT_AIOHTTP = """
import sys
from sync_ci.errors import UsageError
from sync_ci.sandbox import launcher, worker_main
launcher.validate_faults({"5xx_rate": "0.5", "kv_miss_ms.SJC": "10"})
launcher.validate_mutant("no-413")
worker_main.parse_options(["--ready-file", "r.json", "--fault", "latency_ms=5", "--mutant", "no-413"])
for bad in ({"bogus": "1"}, {"5xx_rate": "2"}):
    try:
        launcher.validate_faults(bad)
    except UsageError:
        continue
    raise SystemExit(f"{bad} was accepted")
print(sorted(name for name in sys.modules if name.partition(".")[0] == "aiohttp"))
"""


def test_faults_and_mutants_are_checked_without_importing_aiohttp(tmp_path: Path) -> None:
    """The launcher, the Worker's options and `sync-ci sandbox` refuse bad input before aiohttp."""
    checked = subprocess.run(
        [sys.executable, "-c", _CHECK_WITHOUT_AIOHTTP],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "[]"
    # The command as a user runs it: the fault is parsed, the mutant refused, exit 2, no aiohttp.
    argv = ["sandbox", "--ready-file", str(tmp_path / "r.json"), "--fault", "5xx_rate=0.1"]
    command = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sync_ci", *argv, "--mutant", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
    errors = [line for line in command.stderr.splitlines() if not line.startswith("import time:")]
    assert command.returncode == 2, command.stderr
    assert errors == [
        f"sync-ci: error: --mutant 'nope' is not one of: {', '.join(sorted(MUTANTS))}"
    ]
    imported = [line.rsplit("|", 1)[-1].strip() for line in command.stderr.splitlines()]
    assert "sync_ci.sandbox.faults" in imported
    assert not [name for name in imported if name.partition(".")[0] == "aiohttp"]


def test_sandbox_refuses_the_ready_file_of_a_running_sandbox(
    sandbox_ready_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sandbox_ready_file.read_bytes()
    assert main(["sandbox", "--ready-file", str(sandbox_ready_file)]) == 2
    assert "a sandbox is already running" in capsys.readouterr().err
    assert sandbox_ready_file.read_bytes() == before


def test_sigterm_stops_the_sandbox_command_and_every_child(tmp_path: Path) -> None:
    ready = tmp_path / "run" / "ready.json"
    command = [sys.executable, "-m", "sync_ci", "sandbox", "--ready-file", str(ready)]
    with open(tmp_path / "out.txt", "wb") as out_file, open(tmp_path / "err.txt", "wb") as err:
        process = subprocess.Popen(
            command,
            stdout=out_file,
            stderr=err,
            env=_cli_env({"HOME": str(tmp_path)}),
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + HANG_S
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), (tmp_path / "err.txt").read_text()
        info = read_ready_file(ready)
        pids = (info.store.pid, info.worker.pid)
        assert all(_alive(p) for p in pids)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=HANG_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert _wait_gone(*pids) == []
    assert not ready.exists()
    out = (tmp_path / "out.txt").read_text()
    assert f"export SYNC_CI_SANDBOX={ready}" in out
    assert info.worker.regions[-1].url in out
    assert "(GRU)" in out
    for secret in (info.admin_token, info.tenant_secret, info.store.secret_access_key):
        assert secret not in out


# --- no orphans ------------------------------------------------------------------------------

_SPAWN_AND_WAIT = """
import subprocess, sys, time
from sync_ci.sandbox.processes import spawn
how = sys.argv[1]
argv = [sys.executable, "-c", "import time; time.sleep(600)"]
if how == "grandchild":  # a child that forks a server of its own, as miniflare runs workerd
    forks = "import subprocess, sys, time; print(subprocess.Popen(sys.argv[1:]).pid, flush=True)"
    argv = [sys.executable, "-c", forks + "; time.sleep(600)", *argv]
if how == "popen":
    child = subprocess.Popen(argv, start_new_session=True)
else:
    child = spawn(argv, watchdog=how != "death-signal", death_signal=how == "death-signal")
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(
    ("how", "survives"),
    [("death-signal", False), ("watchdog", False), ("grandchild", False), ("popen", True)],
)
def test_a_spawned_child_dies_with_its_parent(how: str, survives: bool, tmp_path: Path) -> None:
    # "popen" is the old way (own session, nothing else): it shows the check detects an orphan.
    parent = subprocess.Popen(
        [sys.executable, "-c", _SPAWN_AND_WAIT, how],
        stdout=subprocess.PIPE,
        env=_cli_env({}),
        cwd=tmp_path,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    if how == "grandchild":  # its whole process group must go: follow the grandchild
        child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=HANG_S)
        if survives:
            assert _wait_gone(child, timeout_s=2) == [child]
        else:
            assert _wait_gone(child) == []
    finally:
        processes.kill_group(child, signal.SIGKILL)
        parent.stdout.close()


def test_a_ready_file_whose_owner_is_gone_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    ready = write_ready_file(replace(sandbox.info, owner_pid=_dead_pid()), tmp_path / "r.json")
    with pytest.raises(SettingsError) as caught:
        read_ready_file(ready)
    assert "is stale: the sandbox that wrote it (pid" in str(caught.value)
    assert "is no longer running" in str(caught.value)
    # Same pid, another process (a reused pid): the start time tells them apart.
    reused = replace(sandbox.info, owner_started=(sandbox.info.owner_started or 0) + 1)
    with pytest.raises(SettingsError, match="is stale"):
        read_ready_file(write_ready_file(reused, tmp_path / "reused.json"))


def test_a_stale_workdir_is_swept_and_a_live_one_kept(tmp_path: Path) -> None:
    stale, live, foreign = (
        tmp_path / "sync-ci-sandbox-a",
        tmp_path / "sync-ci-sandbox-b",
        tmp_path / "sync-ci-sandbox-c",
    )
    for path in (stale, live, foreign):
        path.mkdir()
    (stale / launcher.OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "started": None}))
    launcher.write_owner(live)
    assert launcher.sweep_stale_workdirs(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and foreign.exists()


@contextlib.contextmanager
def _started_cli(argv: list[str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a command in its own session with TMPDIR under tmp_path; kill its group at the end."""
    env = _cli_env({"HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp")})
    (tmp_path / "tmp").mkdir(exist_ok=True)
    with open(tmp_path / "out.txt", "wb") as out, open(tmp_path / "err.txt", "wb") as err:
        process = subprocess.Popen(
            argv, stdout=out, stderr=err, env=env, cwd=tmp_path, start_new_session=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _run_cli(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sync_ci", *argv],
        env=_cli_env(env),
        capture_output=True,
        text=True,
        timeout=HANG_S,
        cwd=cwd,
    )


def _wait_for_sandbox(process: subprocess.Popen[bytes], tmp_path: Path) -> set[int]:
    """Wait until the command's sandbox Worker is ready; return its store and Worker pids."""
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline and process.poll() is None:
        ready = list((tmp_path / "tmp").glob("sync-ci-sandbox-*/worker-ready.json"))
        servers = {
            pid
            for pid in _descendants(process.pid)
            if "moto_server" in _cmdline(pid) or "worker_main" in _cmdline(pid)
        }
        if ready and len(servers) == 2:
            return servers
        time.sleep(0.1)
    raise AssertionError(f"no sandbox came up: {(tmp_path / 'err.txt').read_text()}")


SMOKE = [sys.executable, "-m", "sync_ci", "smoke", "--fault", "latency_ms=1500"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "timeout", "nox-ctrl-c"])
def test_stopping_the_smoke_leaves_no_server_and_no_temp_dir(how: str, tmp_path: Path) -> None:
    # timeout(1) forwards its SIGTERM to the command; nox follows the terminal's SIGINT with SIGTERM.
    argv = ["timeout", "600", *SMOKE] if how == "timeout" else SMOKE
    with _started_cli(argv, tmp_path) as process:
        servers = _wait_for_sandbox(process, tmp_path)
        if how == "nox-ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=HANG_S)
    err = (tmp_path / "err.txt").read_text()
    # After SIGINT the command may be done before nox's SIGTERM lands (then that kills it).
    assert code in ((130, -signal.SIGTERM) if how == "nox-ctrl-c" else (143,)), err
    assert "Traceback" not in err
    assert _wait_gone(*servers) == []
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
def test_a_killed_sandbox_takes_its_servers_and_its_ready_file_is_refused(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    argv = [sys.executable, "-m", "sync_ci", "sandbox", "--ready-file", str(ready)]
    with _started_cli(argv, tmp_path) as process:
        servers = _wait_for_sandbox(process, tmp_path)
        deadline = time.monotonic() + HANG_S
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists()
        process.kill()
        process.wait(timeout=HANG_S)
    assert _wait_gone(*servers) == []
    assert ready.exists()  # SIGKILL leaves it: readers must refuse it
    done = _run_cli(["smoke"], sandbox_env_for(ready, tmp_path / "home2"), tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"sync-ci: error: the sandbox ready file {ready} is stale"
    )
    assert launcher.sweep_stale_workdirs(tmp_path / "tmp") != []
    assert list((tmp_path / "tmp").iterdir()) == []


# --- faults ----------------------------------------------------------------------------------


def test_faults_set_at_run_time_are_observable(faulty_sandbox: FaultySandbox) -> None:
    settings = faulty_sandbox()
    with _reader(settings) as client:
        assert client.get("/catalog").status == 200
        assert set_faults(settings, {"5xx_rate": 1.0}) == {"5xx_rate": 1.0}
        failing = client.get("/catalog")
        assert failing.status == 503
        assert contract.colo_from_ray(failing.header("cf-ray")) == "SJC"
        assert get_faults(settings) == {"5xx_rate": 1.0}
        assert set_faults(settings, {"5xx_rate": None, "latency_ms": 300}) == {"latency_ms": 300}
        slow = client.get("/catalog")
        assert slow.status == 200
        assert slow.elapsed_s >= 0.3
        assert clear_faults(settings) == {}
        assert "fault" not in client.get("/catalog").header("server-timing")


def test_faults_given_at_start_and_changed_by_the_cli(
    faulty_sandbox: FaultySandbox, tmp_path: Path
) -> None:
    settings = faulty_sandbox(faults={"5xx_rate": "1"}, kv_miss_ms={"SIN": 5})
    with _reader(settings) as client:
        assert client.get("/catalog").status == 503
    env = _cli_env(
        {
            "SYNC_CI_SANDBOX": settings.sandbox_file,
            "SYNC_CI_CONFIG": str(Path(settings.sandbox_file).parent / "home" / "sync-ci.toml"),
            "HOME": str(tmp_path),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "sync_ci", "sandbox-fault", "--clear", "--set", "latency_ms=5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"latency_ms": 5.0}
    with _reader(settings) as client:
        assert client.get("/catalog").status == 200


def test_fault_changes_are_refused_off_the_sandbox_or_when_unknown(
    sandbox_settings: Settings,
) -> None:
    with pytest.raises(UsageError, match="unknown fault 'bogus'"):
        set_faults(sandbox_settings, {"bogus": 1})
    with pytest.raises(UsageError, match="only on the sandbox"):
        set_faults(sandbox_settings.with_values(target="ci"), {"5xx_rate": 1})
    assert get_faults(sandbox_settings) == {}


def test_a_second_signal_inside_the_first_handler_still_stops_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # timeout(1) sends SIGTERM to the command and then to its whole group: the second one can run
    # the handler again while the first is still stopping children. The first must still unwind.
    # The stand-in stops nothing: the real one would stop this test process's other children
    # (the session sandbox other tests share).
    calls: list[int] = []

    def terminate_all_then_signal_again() -> None:
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # handled here, nested in the first handler

    monkeypatch.setattr(processes, "terminate_all", terminate_all_then_signal_again)

    def signalled_block() -> None:
        with processes.stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes; never past this loop
                time.sleep(0.001)

    with pytest.raises(processes.SignalStop) as caught:
        signalled_block()
    assert caught.value.exit_code == 143
    assert len(calls) == 2
