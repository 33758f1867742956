"""Field alerts: POST /_alert with an idempotency key, bounded retries, and an owner-only spool."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sync_ci.alert_files import write_owner_only
from sync_ci.contract import ALERT_LIMIT_BYTES
from sync_ci.errors import ExitCode, SyncCIError, UnreachableError, UsageError
from sync_ci.redaction import escape_controls, first_control

if TYPE_CHECKING:
    from sync_ci.config import Settings
    from sync_ci.worker import Answer

SPOOL_LIMIT = 100
TOTAL_BUDGET_S = 10.0
ATTEMPT_TIMEOUT_S = 3.0
BACKOFF_S = (0.5, 1.0, 2.0)
MAX_ATTEMPTS = 1 + len(BACKOFF_S)
RECENT_REPORT_S = 3600.0
MAX_ROWS = 20
MAX_ROW_CHARS = 200
TENANT_POSTS = ("/_alert", "/_heartbeat")
LAST_DOCTOR = "last-doctor.json"
KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")
Verdict = Literal["delivered", "retry", "held", "rejected"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alert as POSTed to `/_alert`; the key travels with it through the spool."""

    check: str
    message: str
    host: str
    version: str
    ts: str
    idempotency_key: str
    rows: tuple[Mapping[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Render the contract body."""
        body: dict[str, Any] = {
            "check": self.check,
            "message": self.message,
            "host": self.host,
            "version": self.version,
            "ts": self.ts,
            "idempotency_key": self.idempotency_key,
        }
        if self.rows:
            body["rows"] = [dict(r) for r in self.rows]
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """What one `alert` or spool flush achieved."""

    delivered: int = 0
    pending: int = 0
    dropped: int = 0
    rejected: int = 0
    error: str = ""
    new_delivered: bool = False
    keys: tuple[str, ...] = field(default=())


# --- pure ------------------------------------------------------------------------------------


def iso(now: datetime) -> str:
    """Render a UTC time as 2024-01-01T00:00:00Z."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_key(tenant: str, check: str, now: datetime, nonce: str) -> str:
    """Return an idempotency key: readable, unique, and inside the Worker's allowed alphabet."""
    slug = KEY_UNSAFE.sub("-", check).strip("-")[:40] or "check"
    return f"{tenant or 'tenant'}.{slug}.{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.{nonce}"[:128]


def new_alert(
    check: str,
    message: str,
    *,
    tenant: str,
    host: str,
    version: str,
    now: datetime,
    nonce: str,
    rows: Sequence[Mapping[str, Any]] = (),
) -> Alert:
    """Build an alert; the key is fixed here, once, so every retry and re-delivery reuses it."""
    if not check.strip() or len(check) > 100 or first_control(check) is not None:
        raise UsageError(
            f"alert check name {escape_controls(check)!r} must be 1-100 characters with no "
            "control characters (e.g. doctor-failed)"
        )
    return fit_alert(
        Alert(
            check=check.strip(),
            message=_one_line(message) or f"{check} failed",
            host=_one_line(host)[:100] or "unknown-host",
            version=version,
            ts=iso(now),
            idempotency_key=make_key(tenant, check, now, nonce),
            rows=tuple(rows[:MAX_ROWS]),
        )
    )


def _one_line(text: str) -> str:
    # The contract refuses control characters in an alert: newlines and tabs become spaces, and
    # anything else is made visible, so a multi-line --message is sent rather than rejected.
    return escape_controls(" ".join(text.split()), keep_newlines=False)


def body_size(alert: Alert) -> int:
    """Return the encoded size of the alert body."""
    return len(json.dumps(alert.to_json()).encode())


def fit_alert(alert: Alert, limit: int = ALERT_LIMIT_BYTES) -> Alert:
    """Trim rows, then the message, until the body fits the Worker's limit (413 never retried)."""
    while body_size(alert) > limit and alert.rows:
        alert = replace(alert, rows=alert.rows[:-1])
    if body_size(alert) > limit:
        alert = replace(
            alert,
            message=alert.message[: max(0, len(alert.message) - (body_size(alert) - limit)) - 3]
            + "...",
        )
    return alert


def failing_rows(
    document: Any, *, now: datetime, max_age_s: float = RECENT_REPORT_S
) -> list[dict[str, Any]]:
    """Return the failing rows of a saved doctor report if it is recent, else []."""
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        return []
    try:
        started = datetime.fromisoformat(str(document.get("started_at", "")).replace("Z", "+00:00"))
    except ValueError:
        return []
    if started.tzinfo is None or not 0 <= (now - started).total_seconds() <= max_age_s:
        return []
    rows = []
    for row in document["results"]:
        if isinstance(row, dict) and row.get("status") in ("fail", "error"):
            rows.append(
                {
                    "id": str(row.get("id", ""))[:MAX_ROW_CHARS],
                    "status": str(row.get("status")),
                    "detail": str(row.get("detail", ""))[:MAX_ROW_CHARS],
                }
            )
    return rows[:MAX_ROWS]


def classify(status: int) -> Verdict:
    """Decide what an answer to POST /_alert means for the spooled alert."""
    if status in (200, 201, 202):
        return "delivered"
    if status == 429 or status >= 500:
        return "retry"
    if status in (401, 403):
        return "held"  # the credentials are wrong; keep it until they are fixed
    return "rejected"  # 400/413/404...: resending the same bytes cannot succeed


class Deadline:
    """A total time budget measured on the monotonic clock."""

    def __init__(self, budget_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.ends_at = clock() + budget_s

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.ends_at - self.clock())


# --- the spool -------------------------------------------------------------------------------


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


def field_settings(settings: Settings) -> Settings:
    """On the sandbox target, fill in the Worker and secrets from SYNC_CI_SANDBOX's ready file.

    Field commands never start a sandbox of their own: they report on the one that is running.
    """
    if settings.target != "sandbox" or not settings.sandbox_file:
        return settings
    from sync_ci.sandbox.attach import settings_for
    from sync_ci.sandbox.launcher import read_ready_file

    info = read_ready_file(Path(settings.sandbox_file))
    filled = settings_for(settings, info, f"sandbox {settings.sandbox_file}")
    # An explicit Worker URL (settings file or SYNC_CI_WORKER_URL) still wins over the sandbox's.
    return filled.with_values(worker_url=settings.worker_url) if settings.worker_url else filled


# --- edge: delivery ----------------------------------------------------------------------------

Poster = Callable[[Alert, float], "Answer"]


def tenant_headers(settings: Settings) -> dict[str, str]:
    """Return the tenant auth headers, or raise when the credentials are missing."""
    from sync_ci.contract import tenant_token

    if not settings.tenant_id:
        raise UsageError("no tenant id: set [tenant] id in sync-ci.toml or SYNC_CI_TENANT_ID")
    token = settings.secrets.tenant_token or (
        tenant_token(settings.secrets.tenant_secret, settings.tenant_id)
        if settings.secrets.tenant_secret
        else ""
    )
    if not token:
        raise UsageError(
            "no tenant token: set SYNC_CI_TENANT_TOKEN in the environment or SYNC_CI_SECRETS_FILE"
        )
    return {"x-sync-tenant": settings.tenant_id, "authorization": f"Bearer {token}"}


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
    try:
        return json.loads((state_dir / LAST_DOCTOR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


# --- entry point -----------------------------------------------------------------------------


def command(
    check: str, *, message: str = "", config: str | None = None, quiet: bool = False
) -> int:
    """Send one alert; 0 when it reached the Worker, 1 when it waits in the spool."""
    from sync_ci.config import load_settings

    settings = field_settings(load_settings(config=config, check_remote=False))
    result = send_alert(settings, check, message)
    spool_dir = Spool(settings.state_dir).dir
    if result.dropped:
        print(
            f"sync-ci: alert spool was full: dropped {result.dropped} oldest alerts",
            file=sys.stderr,
        )
    if result.rejected:
        print(
            f"sync-ci: {result.rejected} alerts rejected by the Worker; see {spool_dir}/rejected",
            file=sys.stderr,
        )
    if result.new_delivered:
        if not quiet:
            print(
                f"alert {check} delivered ({result.delivered} sent, {result.pending} still spooled)"
            )
        return int(ExitCode.OK)
    print(
        f"sync-ci: alert {check} not delivered ({result.error or 'unknown reason'}); "
        f"{result.pending} waiting in {spool_dir}, sent by the next alert or doctor run",
        file=sys.stderr,
    )
    return int(ExitCode.FAILED)


def add_parser(sub: Any) -> None:
    """Register `alert`."""
    parser = sub.add_parser(
        "alert", help="POST an alert to the Worker (spooled if it cannot go now)"
    )
    parser.add_argument("check", help="name of the failing check, e.g. doctor-failed")
    parser.add_argument("--message", default="", help="one line saying what failed")
    parser.add_argument("--config", metavar="PATH", help="settings file")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when delivered")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return command(args.check, message=args.message, config=args.config, quiet=args.quiet)
    except (SyncCIError, BrokenPipeError):
        raise
    except Exception as exc:  # a monitoring side effect must never end in a traceback
        if args.debug:
            raise
        print(f"sync-ci: error: alert failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return int(ExitCode.FAILED)
