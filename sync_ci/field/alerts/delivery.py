"""Alert delivery: POST /_alert as the tenant, bounded retries in a time budget, the spool flush."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.errors import SyncCIError, UnreachableError, UsageError
from sync_ci.field.alerts.model import Alert, Delivery, Verdict, classify, failing_rows, new_alert
from sync_ci.field.alerts.spool import Spool
from sync_ci.field.last_doctor import LAST_DOCTOR as LAST_DOCTOR
from sync_ci.target import tenant_headers as tenant_headers

if TYPE_CHECKING:
    from sync_ci.config import Settings
    from sync_ci.worker import Answer

TOTAL_BUDGET_S = 10.0
ATTEMPT_TIMEOUT_S = 3.0
BACKOFF_S = (0.5, 1.0, 2.0)
MAX_ATTEMPTS = 1 + len(BACKOFF_S)
TENANT_POSTS = ("/_alert", "/_heartbeat")


class Deadline:
    """A total time budget measured on the monotonic clock."""

    def __init__(self, budget_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.ends_at = clock() + budget_s

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.ends_at - self.clock())


def tenant_poster(settings: Settings, path: str = "/_alert") -> Callable[[Any, float], Answer]:
    """Return a function POSTing a body as the tenant with a per-call timeout."""
    from sync_ci.worker import WorkerClient, WorkerTarget

    if not settings.worker_url:
        raise UsageError("no Worker URL: set [worker] url in sync-ci.toml or SYNC_CI_WORKER_URL")
    headers = tenant_headers(settings)

    def post(body: Any, timeout_s: float) -> Answer:
        target = WorkerTarget(
            base_url=settings.worker_url,
            read_only=False,
            timeout_s=max(0.1, timeout_s),
            allowed_posts=TENANT_POSTS,
            retries=0,
        )
        with WorkerClient(target) as client:
            return client.post(path, json_body=body, headers=headers, retry=False)

    return post


def deliver(
    alert: Alert,
    post: Callable[[Any, float], Answer],
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Verdict, str]:
    """POST one alert with bounded retries and backoff inside the deadline."""
    detail = "no time left"
    for attempt in range(MAX_ATTEMPTS):
        remaining = deadline.remaining()
        if remaining < 0.2:
            break
        try:
            answer = post(alert.to_json(), min(ATTEMPT_TIMEOUT_S, remaining))
        except UnreachableError as exc:
            verdict: Verdict = "retry"
            detail = str(exc)
            retry_after = 0.0
        else:
            verdict = classify(answer.status)
            detail = f"Worker answered {answer.status}"
            try:
                retry_after = float(answer.header("retry-after") or 0)
            except ValueError:
                retry_after = 0.0
        if verdict != "retry":
            return verdict, detail
        if attempt < len(BACKOFF_S):
            pause = max(BACKOFF_S[attempt], retry_after)
            if pause >= deadline.remaining() - 0.2:
                break
            sleep(pause)
    return "retry", detail


def flush(
    spool: Spool,
    post: Callable[[Any, float], Answer],
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Deliver spooled alerts oldest first; stop at the first one that cannot go now."""
    delivered = rejected = 0
    keys: list[str] = []
    error = ""
    with spool.locked() as got:
        if not got:
            return Delivery(
                pending=len(spool.pending()), error="another sync-ci run holds the spool"
            )
        for path in spool.pending():
            try:
                alert = spool.load(path)
            except (OSError, ValueError, KeyError, TypeError):
                spool.reject(path)
                rejected += 1
                continue
            verdict, detail = deliver(alert, post, deadline, sleep)
            if verdict == "delivered":
                path.unlink(missing_ok=True)
                delivered += 1
                keys.append(alert.idempotency_key)
            elif verdict == "rejected":
                spool.reject(path)
                rejected += 1
                error = f"{alert.check}: {detail} (kept in {spool.rejected_dir})"
            else:
                error = detail
                break
    return Delivery(
        delivered=delivered,
        pending=len(spool.pending()),
        rejected=rejected,
        error=error,
        keys=tuple(keys),
        dropped=spool.dropped(),
    )


def read_last_doctor(state_dir: Path) -> Any:
    """Return the saved doctor report, or None."""
    from sync_ci.field import last_doctor

    return last_doctor.read(state_dir)


def send_alert(
    settings: Settings,
    check: str,
    message: str = "",
    *,
    now: datetime | None = None,
    budget_s: float = TOTAL_BUDGET_S,
    post: Callable[[Any, float], Answer] | None = None,
) -> Delivery:
    """Spool an alert, then deliver the spool oldest first; never raises."""
    from sync_ci import __version__

    now = now or datetime.now(UTC)
    deadline = Deadline(budget_s)
    try:
        alert = new_alert(
            check,
            message,
            tenant=settings.tenant_id,
            host=socket.gethostname(),
            version=__version__,
            now=now,
            nonce=secrets.token_hex(6),
            rows=failing_rows(read_last_doctor(settings.state_dir), now=now),
        )
    except SyncCIError as exc:
        return Delivery(error=str(exc))
    spool = Spool(settings.state_dir)
    try:
        dropped = spool.enqueue(alert)
    except OSError as exc:
        return _deliver_unspooled(
            settings, alert, post, deadline, f"spool unusable ({exc.strerror})"
        )
    try:
        sender = post or tenant_poster(settings)
        result = flush(spool, sender, deadline)
    except SyncCIError as exc:
        result = Delivery(pending=len(spool.pending()), error=str(exc))
    except OSError as exc:
        result = Delivery(pending=len(spool.pending()), error=f"spool: {exc}")
    return replace(
        result,
        dropped=max(result.dropped, dropped),
        new_delivered=alert.idempotency_key in result.keys,
    )


def _deliver_unspooled(
    settings: Settings,
    alert: Alert,
    post: Callable[[Any, float], Answer] | None,
    deadline: Deadline,
    why: str,
) -> Delivery:
    try:
        verdict, detail = deliver(alert, post or tenant_poster(settings), deadline)
    except SyncCIError as exc:
        return Delivery(error=f"{why}; {exc}; alert lost")
    if verdict == "delivered":
        return Delivery(delivered=1, new_delivered=True, keys=(alert.idempotency_key,), error=why)
    return Delivery(error=f"{why}; {detail}; alert lost")


def flush_spool(settings: Settings, *, budget_s: float = 5.0) -> Delivery:
    """Deliver whatever the spool holds (doctor calls this); never raises."""
    spool = Spool(settings.state_dir)
    if not spool.pending():
        return Delivery(dropped=spool.dropped())
    try:
        return flush(spool, tenant_poster(settings), Deadline(budget_s))
    except (SyncCIError, OSError) as exc:
        return Delivery(pending=len(spool.pending()), dropped=spool.dropped(), error=str(exc))
