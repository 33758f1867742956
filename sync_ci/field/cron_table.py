"""The real crontab: read and write it through the `crontab` binary, edit our block in it,
and run an installed line as cron would (its user, its environment, `sh -c`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from sync_ci.errors import SettingsError, SyncCIError
from sync_ci.field.cron_access import Account
from sync_ci.field.cron_lines import (
    SCHEDULE_START,
    SCHEDULES,
    CronPaths,
    Job,
    Role,
    apply_block,
    remove_block,
    render_block,
    render_diff,
    validate_schedule,
)

CRONTAB_TIMEOUT_S = 10.0

JOB_TIMEOUT_S = 1200.0  # above ci-loop's own 900 s budget


def _crontab(args: list[str], user: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("crontab")
    if binary is None:
        raise SettingsError("the `crontab` program is not installed (Debian: apt-get install cron)")
    argv = [binary, *(["-u", user] if user else []), *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=CRONTAB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SyncCIError(f"`{' '.join(argv)}` did not finish in {CRONTAB_TIMEOUT_S:g} s") from None


def read_crontab(user: str = "") -> str:
    """Return the raw crontab text of `user` (current user when ''), '' when there is none."""
    done = _crontab(["-l"], user)
    if done.returncode == 0:
        return done.stdout
    if "no crontab for" in done.stderr:
        return ""
    raise SyncCIError(f"crontab -l failed: {done.stderr.strip() or done.returncode}")


def write_crontab(text: str, user: str = "") -> None:
    """Install `text` as the crontab of `user` through the real binary (it validates the syntax)."""
    with tempfile.TemporaryDirectory(prefix="sync-ci-cron-") as tmp:
        path = Path(tmp) / "crontab"
        path.write_text(text, encoding="utf-8")
        done = _crontab([str(path)], user)
    if done.returncode != 0:
        raise SyncCIError(
            f"crontab refused the new table: {done.stderr.strip() or done.returncode}"
        )


def cron_environment(text: str, account: Account) -> dict[str, str]:
    """Return the environment Debian cron gives `account`'s jobs from crontab `text`."""
    env = {
        "HOME": account.home,
        "LOGNAME": account.name,
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
    }
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or SCHEDULE_START.match(stripped):
            continue
        name, sep, value = stripped.partition("=")
        name, value = name.strip(), value.strip()
        if sep and name.isidentifier() and name != "LOGNAME":
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[name] = value
    return env


def run_job(
    job: Job, text: str, account: Account, *, timeout_s: float = JOB_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a job's command as cron does: as `account`, in its home, `sh -c` in cron's environment.

    The whole process group is killed on timeout, so no child outlives the call.
    """
    as_other = account.uid != os.geteuid()
    process = subprocess.Popen(
        ["/bin/sh", "-c", job.command],
        env=cron_environment(text, account),
        cwd=account.home if Path(account.home).is_dir() else "/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        user=account.uid if as_other else None,
        group=account.gid if as_other else None,
        extra_groups=sorted(account.groups) if as_other else None,
    )
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise SyncCIError(
            f"the installed {job.role} line did not finish in {timeout_s:g} s; it was stopped"
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a child it left behind goes too
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def install(role: Role, paths: CronPaths, *, user: str = "", dry_run: bool = False) -> str:
    """Install or update our block for `role`; return the diff ('' when already up to date)."""
    block = render_block(role, paths)
    validate_schedule(SCHEDULES[role])
    before = read_crontab(user)
    after = apply_block(before, role, block)
    diff = render_diff(before, after, f"crontab{' -u ' + user if user else ''}")
    if diff and not dry_run:
        write_crontab(after, user)
    return diff


def uninstall(roles: tuple[Role, ...], *, user: str = "", dry_run: bool = False) -> str:
    """Remove our blocks for `roles`; return the diff."""
    before = read_crontab(user)
    after = before
    for role in roles:
        after = remove_block(after, role)
    diff = render_diff(before, after, f"crontab{' -u ' + user if user else ''}")
    if diff and not dry_run:
        write_crontab(after, user)
    return diff
