"""Private files written whole: the one atomic, owner-only write every module uses.

A ready file, a result document, an alert file, the last doctor report and a Locust job may each
quote a secret or what a server said, and a reader (another process, a cron job, a test) must see
either the old file or the new one, never half of one. So each is written to a temporary file
made with mode 600 in the same directory, synced, and renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def write_private(
    path: str | os.PathLike[str], data: str | bytes, *, parents: bool = False
) -> Path:
    """Write `data` to `path` atomically, readable by the owner alone; return the path.

    With `parents`, missing parent directories are created owner-only (an existing one is left
    as it is). Raises OSError; on failure the target is unchanged and no temporary file is left.
    """
    target = Path(path)
    if parents:
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return target
