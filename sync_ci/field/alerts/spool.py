"""The alert spool: undelivered alerts as owner-only files, oldest first, bounded, locked."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from sync_ci.alert_files import write_owner_only
from sync_ci.field.alerts.model import MAX_ROWS, Alert, fit_alert

SPOOL_LIMIT = 100


class Spool:
    """Undelivered alerts as owner-only JSON files, named so that sorting gives arrival order."""

    def __init__(self, state_dir: Path, limit: int = SPOOL_LIMIT) -> None:
        self.dir = state_dir / "spool"
        self.rejected_dir = self.dir / "rejected"
        self.limit = limit

    def ensure(self) -> None:
        """Create the spool directory owner-only and tighten it if someone loosened it."""
        self.dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def pending(self) -> list[Path]:
        """Spooled alerts, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if p.suffix == ".json" and p.is_file())

    def dropped(self) -> int:
        """How many alerts were dropped because the spool was full and not yet reported."""
        try:
            return int((self.dir / "dropped").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _set_dropped(self, count: int) -> None:
        path = self.dir / "dropped"
        if count:
            write_owner_only(path, f"{count}\n".encode())
        else:
            path.unlink(missing_ok=True)

    def enqueue(self, alert: Alert) -> int:
        """Add an alert (noting earlier drops); drop the oldest over the limit; return drops."""
        self.ensure()
        earlier = self.dropped()
        if earlier:
            note = {
                "id": "alert-spool",
                "status": "fail",
                "detail": f"{earlier} undelivered alerts were dropped: the spool was full",
            }
            alert = fit_alert(replace(alert, rows=(note, *alert.rows)[:MAX_ROWS]))
        name = f"{time.time_ns():020d}-{alert.idempotency_key}.json"
        write_owner_only(self.dir / name, json.dumps(alert.to_json(), sort_keys=True).encode())
        queue = self.pending()
        over = queue[: max(0, len(queue) - self.limit)]
        for path in over:
            path.unlink(missing_ok=True)
        self._set_dropped(len(over))
        return len(over)

    def load(self, path: Path) -> Alert:
        """Read one spooled alert back."""
        document = json.loads(path.read_text(encoding="utf-8"))
        rows = document.get("rows") or []
        return Alert(
            check=str(document["check"]),
            message=str(document["message"]),
            host=str(document["host"]),
            version=str(document["version"]),
            ts=str(document["ts"]),
            idempotency_key=str(document["idempotency_key"]),
            rows=tuple(r for r in rows if isinstance(r, dict)),
        )

    def reject(self, path: Path) -> None:
        """Move an alert the Worker can never accept out of the queue, keeping it for a human."""
        self.rejected_dir.mkdir(mode=0o700, exist_ok=True)
        path.replace(self.rejected_dir / path.name)

    @contextmanager
    def locked(self, wait_s: float = 1.0) -> Iterator[bool]:
        """Hold the spool lock (yield False when another process keeps it longer than `wait_s`)."""
        import fcntl

        self.ensure()
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            ends = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= ends:
                        got = False
                        break
                    time.sleep(0.05)
            yield got
        finally:
            os.close(fd)
