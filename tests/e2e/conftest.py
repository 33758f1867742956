"""As-deployed fixtures: a throwaway user with a real home, root's crontab saved and restored.

Each e2e module keeps its own scenario fixtures; what is here is generic. Every case in this
directory runs in the normal `nox -s tests` (no marker deselects it). The cases that exercise the
Worker run once per Worker runtime (`ON_BOTH_RUNTIMES`): the Python one and the JavaScript one on
workerd.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

import pytest

from sync_ci.attachment import SUITE, open_target
from sync_ci.config import Settings, load_settings
from sync_ci.errors import SettingsError
from sync_ci.field import cron_access, cron_lines
from sync_ci.field.cron_access import Account
from sync_ci.sandbox import workerd
from sync_ci.sandbox.launcher import start_sandbox, write_ready_file
from tests.conftest import STORE_KIND, FaultySandbox, sandbox_env_for

REPO = Path(__file__).resolve().parents[2]
# Held (blocking) by every test that changes root's own crontab, across xdist workers and test
# runs, so two of them never interleave their save and restore.
ROOT_CRONTAB_LOCK = Path("/tmp/sync-ci-tests-root-crontab.lock")
CRON_PATH = "/usr/bin:/bin"


# A case marked with this runs against the Python Worker and against the JavaScript Worker on
# workerd; the workerd run skips, naming what to install, only where Node or `npm ci` is missing.
ON_BOTH_RUNTIMES = pytest.mark.parametrize("worker_runtime", workerd.RUNTIMES, indirect=True)


@pytest.fixture
def worker_runtime(request: pytest.FixtureRequest) -> workerd.Runtime:
    """The runtime of this case's sandbox Workers: python, unless the case is ON_BOTH_RUNTIMES."""
    runtime: workerd.Runtime = getattr(request, "param", "python")
    try:
        workerd.check_runtime(runtime)
    except SettingsError as exc:
        pytest.skip(str(exc))
    return runtime


@pytest.fixture
def faulty_sandbox(tmp_path: Path, worker_runtime: workerd.Runtime) -> Iterator[FaultySandbox]:
    """tests/conftest.py's short-lived sandboxes, with their Workers on `worker_runtime`."""
    started = 0
    with ExitStack() as stack:

        def start(
            faults: Mapping[str, str] | None = None, kv_miss_ms: Mapping[str, int] | None = None
        ) -> Settings:
            nonlocal started
            workdir = tmp_path / f"faulty-{started}"
            started += 1
            running = start_sandbox(
                store=STORE_KIND,
                faults=faults,
                kv_miss_ms=kv_miss_ms,
                workdir=workdir,
                runtime=worker_runtime,
            )
            ready = write_ready_file(stack.enter_context(running).info, workdir / "ready.json")
            env = sandbox_env_for(ready, workdir / "home")
            return stack.enter_context(open_target(load_settings(env=env), SUITE))

        yield start


def _quiet(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def need_root_and_cron() -> None:
    """Skip unless this runs as root with useradd and Debian cron's crontab binary."""
    if os.geteuid() != 0:
        pytest.skip("as-deployed cron cases run as root (they create users and edit crontabs)")
    for tool in ("useradd", "userdel", "crontab"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool} (Debian: apt-get install cron passwd)")


def _retry(argv: list[str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    # useradd/userdel refuse while another process holds /etc/passwd's lock
    for _ in range(50):
        done = _quiet(argv)
        if done.returncode in ok:
            return done
        time.sleep(0.2)
    return done


@pytest.fixture
def home_user() -> Iterator[Account]:
    """A throwaway login user with a real home (useradd -m); removed with its home and crontab."""
    need_root_and_cron()
    name = f"scie2e{secrets.token_hex(4)}"
    done = _retry(["useradd", "-m", "-s", "/bin/sh", name])
    if done.returncode != 0:
        pytest.fail(f"useradd -m {name} failed: {done.stderr}")
    try:
        yield cron_access.account_for(name)
    finally:
        _quiet(["crontab", "-u", name, "-r"])
        _retry(["userdel", "-r", name], ok=(0, 6, 12))


@pytest.fixture
def root_crontab() -> Iterator[Account]:
    """Root's own crontab, held exclusively for the test and restored byte for byte after it."""
    need_root_and_cron()
    ROOT_CRONTAB_LOCK.touch(mode=0o600, exist_ok=True)
    with ROOT_CRONTAB_LOCK.open("r") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        listed = subprocess.run(["crontab", "-l"], capture_output=True, timeout=30)
        saved = listed.stdout if listed.returncode == 0 else None
        try:
            yield cron_access.account_for("")
        finally:
            if saved is None:
                _quiet(["crontab", "-r"])
            else:
                subprocess.run(["crontab", "-"], input=saved, check=True, timeout=30)
            after = subprocess.run(["crontab", "-l"], capture_output=True, timeout=30)
            assert (after.stdout if after.returncode == 0 else None) == saved


def run_as_cron(account: Account, command: str) -> subprocess.CompletedProcess[str]:
    """Run a crontab line's command part the way cron does, as `account`, in its home."""
    argv = [
        "/usr/bin/env",
        "-i",
        f"HOME={account.home}",
        f"LOGNAME={account.name}",
        "SHELL=/bin/sh",
        f"PATH={CRON_PATH}",
        "sh",
        "-c",
        command,
    ]
    other = account.uid != os.geteuid()
    return subprocess.run(
        argv,
        cwd=account.home,
        capture_output=True,
        text=True,
        timeout=600,
        user=account.uid if other else None,
        group=account.gid if other else None,
        extra_groups=sorted(account.groups) if other else None,
    )


def installed_command(account: Account, role: cron_lines.Role) -> str:
    """Read `crontab -l` of `account` and return the command part of our `role` line."""
    listed = subprocess.run(
        ["crontab", "-u", account.name, "-l"], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    start = lines.index(cron_lines.begin_marker(role))
    job = lines[start + 1]
    assert lines[start + 2] == cron_lines.end_marker(role)
    return job.split(None, 5)[5]


def user_executable(account: Account) -> Path:
    """Write a `sync-ci` that `account` can run (this checkout on a system Python it can reach).

    The test venv's interpreter lives under /root, which other users cannot enter.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = next(
        (p for p in (f"/usr/bin/{version}", f"/usr/local/bin/{version}") if Path(p).exists()), ""
    )
    site = sysconfig.get_paths()["purelib"]
    if not python or any(
        cron_access.access_problem(account, path, "rx") for path in (python, site, str(REPO))
    ):
        pytest.skip(f"no {version} that {account.name} can run with this checkout and its deps")
    exe = Path(account.home) / "venv" / "bin" / "sync-ci"
    exe.parent.mkdir(parents=True)
    exe.write_text(f'#!/bin/sh\nPYTHONPATH={REPO}:{site} exec {python} -m sync_ci "$@"\n')
    exe.chmod(0o755)
    give(account, Path(account.home) / "venv")
    return exe


def give(account: Account, top: Path) -> None:
    """Hand `top` and everything below it to `account` (what they would own had they made it)."""
    for path in [top, *top.rglob("*")]:
        os.chown(path, account.uid, account.gid, follow_symlinks=False)
