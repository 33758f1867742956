"""The installed cron lines, read back from the real crontab and run as cron runs them.

For root's own crontab and for a throwaway user installed by root (`cron install --user`, as
bootstrap does): the job really runs against the sandbox standing in for production, and a
second run while one holds the lock exits 0 without running and without firing the alert.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sync_ci.field import cron_lines
from sync_ci.field.cron_access import Account
from sync_ci.field.cron_lines import Role
from sync_ci.locks import Job, hold_lock, lock_path
from sync_ci.sandbox.launcher import STORE_REGION, Sandbox
from tests.e2e.conftest import REPO, give, installed_command, run_as_cron, user_executable


def installer_env() -> dict[str, str]:
    """Root's environment as bootstrap has it: nothing of sync-ci's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_CI_", "AWS_", "XDG_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def sync_ci(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `sync-ci ARGS` as the installer (root)."""
    return subprocess.run(
        [sys.executable, "-m", "sync_ci", *args],
        env=installer_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def write_deployment(
    sandbox: Sandbox, where: Path, account: Account, *, state_dir: Path | None
) -> tuple[Path, Path]:
    """Write a settings file naming the sandbox as production, and an owner-only secrets file."""
    info = sandbox.info
    where.mkdir(parents=True, exist_ok=True)
    state = f'state_dir = "{state_dir}"\n' if state_dir else ""
    config = where / "sync-ci.toml"
    config.write_text(
        'target = "live"\n\n[store]\n'
        f'bucket = "{info.store.bucket}"\nendpoint_url = "{info.store.endpoint_url}"\n'
        f'region = "{STORE_REGION}"\nlive_root = "{info.live_root}"\nci_root = "{info.ci_root}"\n\n'
        f'[worker]\nurl = "{info.worker.url}"\n\n'
        f'[tenant]\nid = "e2e-{secrets.token_hex(4)}"\n{state}'
    )
    secrets_file = where / "secrets.env"
    secrets_file.write_text(
        f"SYNC_CI_ACCESS_KEY_ID={info.store.access_key_id}\n"
        f"SYNC_CI_SECRET_ACCESS_KEY={info.store.secret_access_key}\n"
        f"SYNC_CI_TENANT_SECRET={info.tenant_secret}\n"
    )
    secrets_file.chmod(0o600)
    give(account, where)
    return config, secrets_file


def user_owned_file(path: Path, account: Account) -> Path:
    """Create `path` (empty) as if `account` had: a lock or stamp root must not own."""
    path.touch(mode=0o600, exist_ok=True)
    os.chown(path, account.uid, account.gid)
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class Installed:
    """A line installed for a test, and where its job leaves traces."""

    config: Path
    state: Path
    repo: Path


def install_line(who: str, role: Role, account: Account, sandbox: Sandbox, base: Path) -> Installed:
    """Install `role`'s line with `sync-ci cron install` as root (for `account` when a user)."""
    if who == "root":
        exe = Path(sys.prefix) / "bin" / "sync-ci"
        state = base / "state"
        if not exe.exists():
            pytest.skip(f"no console script at {exe} (install the package into this venv)")
    else:
        exe = user_executable(account)
        base, state = Path(account.home), Path(account.home) / ".local/state/sync-ci"
    repo = base / "repo"
    deploy_dir = repo if role == "maintainer" else base / "deploy"
    config, secrets_file = write_deployment(
        sandbox, deploy_dir, account, state_dir=state if who == "root" else None
    )
    args = ["cron", "install", "--role", role, "--exe", str(exe)]
    args += ["--secrets-file", str(secrets_file)]
    if role == "maintainer":
        (repo / "pyproject.toml").write_text("[project]\nname = 'sync-ci'\n")
        args += ["--repo", str(repo)]  # the settings file is found where the job cds to
    else:
        args += ["--config", str(config)]
    if who == "user":
        args += ["--user", account.name]
    installed = sync_ci(*args)
    assert installed.returncode == 0, installed.stderr
    if role == "tenant":  # a tenant that pulled recently: doctor has nothing to say
        user_owned_file(state / "last-pull", account)
    return Installed(config=config, state=state, repo=repo)


@pytest.mark.parametrize("role", ["tenant", "maintainer"])
@pytest.mark.parametrize("who", ["root", "user"])
def test_installed_line_runs_as_cron_runs_it(
    who: str, role: Role, request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path
) -> None:
    account: Account = request.getfixturevalue("root_crontab" if who == "root" else "home_user")
    line = install_line(who, role, account, sandbox, tmp_path)
    config, state, repo = line.config, line.state, line.repo
    command = installed_command(account, role)
    assert "flock" not in command
    assert f"SYNC_CI_STATE_DIR={state}" in command
    assert f"SYNC_CI_CONFIG={config}" in command
    if who == "user":
        assert "/root" not in command
        assert state.stat().st_uid == account.uid  # install made the user's state dir theirs
    shown = sync_ci("cron", "show", *(["--user", account.name] if who == "user" else []))
    assert shown.returncode == 0, shown.stderr

    job: Job = "ci-loop" if role == "maintainer" else "doctor"
    shutil.rmtree(state)  # a fresh machine: the job itself creates its lock's directory
    lock = lock_path(state, job)
    state.mkdir(mode=0o700)
    os.chown(state, account.uid, account.gid)
    with hold_lock(user_owned_file(lock, account), job):
        busy = run_as_cron(account, command)
    assert busy.returncode == 0, busy.stderr
    assert busy.stdout == ""
    report = state / "last-doctor.json"
    alerts = repo / "state/log/alerts"
    if role == "tenant":
        assert busy.stderr == ""  # quiet, and `|| sync-ci alert doctor-failed` did not fire
        assert not report.exists()
    else:
        assert busy.stderr.count("\n") == 1 and "exits without running" in busy.stderr
        assert not alerts.exists() or not list(alerts.iterdir())

    shutil.rmtree(state)
    if role == "tenant":
        state.mkdir(mode=0o700, parents=True)
        os.chown(state, account.uid, account.gid)
        user_owned_file(state / "last-pull", account)
    done = run_as_cron(account, command)
    if role == "tenant":
        assert report.is_file(), done.stdout + done.stderr
        document = json.loads(report.read_text())
        failing = [r for r in document["results"] if r["status"] in ("fail", "error")]
        assert document["suite"] == "doctor" and failing == []
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        assert report.stat().st_uid == account.uid
    else:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ci-loop: ok" in done.stdout
        assert lock.stat().st_uid == account.uid


def test_install_for_a_user_refuses_what_they_cannot_use(
    home_user: Account, tmp_path: Path
) -> None:
    """Root's own paths (its venv, a secrets file only root reads) are refused for a --user."""
    exe = user_executable(home_user)
    root_exe = tmp_path / "venv" / "bin" / "sync-ci"  # under pytest's owner-only temp root
    root_exe.parent.mkdir(parents=True)
    root_exe.write_text(exe.read_text())
    root_exe.chmod(0o755)
    root_secrets = Path(home_user.home) / "root-secrets.env"
    root_secrets.write_text("SYNC_CI_TENANT_SECRET=x\n")
    root_secrets.chmod(0o600)  # owner-only, and the owner is root
    cases = {
        "sync-ci executable": ["--exe", str(root_exe)],
        "secrets file": ["--exe", str(exe), "--secrets-file", str(root_secrets)],
    }
    for label, extra in cases.items():
        done = sync_ci("cron", "install", "--role", "tenant", "--user", home_user.name, *extra)
        assert done.returncode == 2, (label, done.stdout, done.stderr)
        assert done.stderr.startswith("sync-ci: error:") and done.stderr.count("\n") == 1
        assert label in done.stderr and home_user.name in done.stderr
        assert "Traceback" not in done.stderr
    listed = subprocess.run(
        ["crontab", "-u", home_user.name, "-l"], capture_output=True, text=True, timeout=30
    )
    assert cron_lines.begin_marker("tenant") not in listed.stdout


@pytest.mark.parametrize("role", ["tenant", "maintainer"])
def test_verify_runs_the_installed_line_and_catches_one_that_never_runs(
    role: Role, home_user: Account, sandbox: Sandbox, sandbox_ready_file: Path, tmp_path: Path
) -> None:
    """`sync-ci verify` runs the user's line as cron would; the old flock-wrapped line fails it."""
    line = install_line("user", role, home_user, sandbox, tmp_path)
    env = {**installer_env(), "SYNC_CI_SANDBOX": str(sandbox_ready_file)}

    def verify() -> dict[str, dict[str, str]]:
        args = ["verify", "--role", role, "--cron-user", home_user.name, "--repo", str(tmp_path)]
        done = subprocess.run(
            [sys.executable, "-m", "sync_ci", *args, "--json", str(tmp_path / "verify.json")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
        assert "Traceback" not in done.stderr
        document = json.loads((tmp_path / "verify.json").read_text())
        return {r["id"]: r for r in document["results"]}

    rows = verify()
    assert rows["crontab"]["status"] == "pass", rows["crontab"]["detail"]
    assert rows["cron-job"]["status"] == "pass", rows["cron-job"]["detail"]
    assert f"ran as {home_user.name}" in rows["cron-job"]["detail"]
    if role == "tenant":
        assert (line.state / "last-doctor.json").stat().st_uid == home_user.uid

    # The line as it was before the lock had one owner: flock held the lock the job then wanted.
    text = subprocess.run(
        ["crontab", "-u", home_user.name, "-l"], capture_output=True, text=True, timeout=30
    ).stdout
    job: Job = "ci-loop" if role == "maintainer" else "doctor"
    exe = f"{home_user.home}/venv/bin/sync-ci {job}"
    old = text.replace(exe, f"/usr/bin/flock -n -E 0 {lock_path(line.state, job)} {exe}", 1)
    assert old != text
    subprocess.run(["crontab", "-u", home_user.name, "-"], input=old, text=True, check=True)
    rows = verify()
    assert rows["cron-job"]["status"] == "fail"
    assert "never took its lock" in rows["cron-job"]["detail"]
    assert "wrapped in `flock`" in rows["crontab"]["detail"]
