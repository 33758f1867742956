"""The lock that makes a ci-loop pass or a doctor run exclusive: its path and how it is taken.

The command takes the lock itself (cron lines carry no `flock`), so a run by hand and a run from
cron exclude each other the same way, and the lock's directory is created here when missing.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from sync_ci.errors import ExitCode, LockBusy, SyncCIError

Job = Literal["ci-loop", "doctor"]
LOCK_FILES: dict[Job, str] = {"ci-loop": "ci-loop.lock", "doctor": "doctor.lock"}
RUN_NOUN: dict[Job, str] = {"ci-loop": "pass", "doctor": "run"}


class LockUnavailable(SyncCIError):
    """The lock file cannot be created or opened: nothing ran, so nothing was measured."""

    exit_code = ExitCode.UNMEASURED


def lock_path(state_dir: Path, job: Job) -> Path:
    """Return where `job`'s lock lives under the state directory."""
    return state_dir / LOCK_FILES[job]


@contextmanager
def hold_lock(path: Path, job: Job) -> Iterator[None]:
    """Hold an exclusive non-blocking flock on `path` for one run; raise LockBusy if taken.

    The directory is created (owner-only) when missing; LockUnavailable when it cannot be.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise LockUnavailable(
            f"cannot create the {job} lock {path}: {exc.strerror or exc}; make {path.parent} "
            "writable by this user, or point SYNC_CI_STATE_DIR at a directory that is"
        ) from None
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "?"
            raise LockBusy(
                f"another {job} {RUN_NOUN[job]} holds {path} (pid {holder}); "
                "this one exits without running"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def lock_is_held(path: Path) -> bool:
    """Return True when some process holds the lock on `path` right now (False if none exists)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
