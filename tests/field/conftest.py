"""Field-loop fixtures: a throwaway cron user, a sync-ci executable, and subprocess environments."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync_ci.attachment import field_settings
from sync_ci.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def _run_quiet(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


@pytest.fixture
def cron_user() -> Iterator[str]:
    """A throwaway system user (no home) whose crontab the test may change through `crontab -u`."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("crontab"):
        pytest.skip("needs root, useradd and the crontab binary (Debian cron) for a throwaway user")
    name = f"scift{secrets.token_hex(4)}"
    for _ in range(20):  # useradd refuses while another process holds /etc/passwd's lock
        done = _run_quiet(["useradd", "-M", "-s", "/usr/sbin/nologin", name])
        if done.returncode == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"useradd {name} failed: {done.stderr}")
    try:
        yield name
    finally:
        _run_quiet(["crontab", "-u", name, "-r"])
        for _ in range(20):
            if _run_quiet(["userdel", name]).returncode in (0, 6):
                break
            time.sleep(0.2)


@pytest.fixture
def fake_exe(tmp_path: Path) -> Path:
    """An executable `sync-ci` that runs this checkout (what a venv's console script would do)."""
    path = tmp_path / "venv" / "bin" / "sync-ci"
    path.parent.mkdir(parents=True)
    path.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m sync_ci "$@"\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def tenant_id() -> str:
    """A tenant of this test's own, so /_status rows and rate limits are not shared."""
    return f"t-{secrets.token_hex(5)}"


@pytest.fixture
def field_env(sandbox_env: dict[str, str], tenant_id: str) -> dict[str, str]:
    """A complete subprocess environment for this test's tenant on the session sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_CI_", "AWS_"))}
    env.update(sandbox_env)
    env["SYNC_CI_TENANT_ID"] = tenant_id
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture
def tenant_settings(field_env: dict[str, str]) -> Settings:
    """The tenant's settings, filled in from the sandbox ready file as `doctor`/`alert` do."""
    return field_settings(load_settings(env=field_env, check_remote=False))


def run_cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m sync_ci ARGS` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "sync_ci", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd or REPO,
    )
