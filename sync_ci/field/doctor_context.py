"""What the doctor checks share: the run context (settings, clock, one Worker client), Skip, a row."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.errors import SyncCIError
from sync_ci.report import Result, Status

if TYPE_CHECKING:
    from sync_ci.config import Settings
    from sync_ci.worker import Answer, WorkerClient


HEALTH_TIMEOUT_S = 5.0


def new_row(id: str, title: str, status: Status, detail: str = "", **observed: Any) -> Result:
    """A result row; `observed` holds what was measured."""
    return Result(id=id, title=title, status=status, detail=detail, observed=observed)


@dataclass
class Context:
    """What the checks share: settings, clock, and a lazily opened Worker client."""

    settings: Settings | None
    settings_error: str = ""
    cron_user: str = ""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _client: WorkerClient | None = None
    _answers: dict[str, tuple[Answer | None, str]] = field(default_factory=dict)
    _state_problem: str | None = None
    crontab_text: str | None = None

    def need_settings(self) -> Settings:
        """Return the settings or raise Skip."""
        if self.settings is None:
            raise Skip("settings invalid (see the settings row)")
        return self.settings

    def client(self) -> WorkerClient:
        """A read-only Worker client with a short timeout (doctor only GETs)."""
        settings = self.need_settings()
        if not settings.worker_url:
            raise Skip("no Worker URL configured")
        if self._client is None:
            from sync_ci.worker import WorkerClient, WorkerTarget

            self._client = WorkerClient(
                WorkerTarget(
                    base_url=settings.worker_url,
                    read_only=True,
                    timeout_s=min(settings.worker_timeout_s, HEALTH_TIMEOUT_S),
                    retries=0,
                )
            )
        return self._client

    def get(self, path: str) -> tuple[Answer | None, str]:
        """GET a path once per run; return (answer, '') or (None, why)."""
        if path not in self._answers:
            try:
                self._answers[path] = (self.client().get(path, retry=False), "")
            except Skip:
                raise
            except SyncCIError as exc:
                self._answers[path] = (None, str(exc))
        return self._answers[path]

    def health(self) -> tuple[Answer | None, str]:
        """GET /_health once; return (answer, '') or (None, why)."""
        return self.get("/_health")

    def state_problem(self) -> str:
        """Create the state directory if needed, then a temp file in it; return '' or why not."""
        if self._state_problem is None:
            self._state_problem = probe_writable(self.need_settings().state_dir)
        return self._state_problem

    def need_state_dir(self) -> Path:
        """Return the state directory or raise Skip when it cannot be written."""
        if self.state_problem():
            raise Skip("state directory unusable (see the state-dir row)")
        return self.need_settings().state_dir

    def reachable(self) -> Answer:
        """Return the health answer or raise Skip when the Worker is down."""
        answer, _ = self.health()
        if answer is None or answer.status != 200:
            raise Skip("Worker unreachable (see the worker row)")
        return answer

    def crontab(self) -> str:
        """Read the crontab once."""
        if self.crontab_text is None:
            from sync_ci.field.cron_table import read_crontab

            self.crontab_text = read_crontab(self.cron_user)
        return self.crontab_text

    def close(self) -> None:
        """Release the Worker connection."""
        if self._client is not None:
            self._client.close()


class Skip(Exception):
    """A check that cannot run here; its message becomes the skip detail."""


def probe_writable(path: Path) -> str:
    """Create `path` if missing, then create and remove a file in it; return '' or why not."""
    probe = path / f".doctor-probe-{os.getpid()}-{time.monotonic_ns()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        return f"{exc.strerror or type(exc).__name__}{where}"
    return ""
