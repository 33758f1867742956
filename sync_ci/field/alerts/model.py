"""An alert as POSTed to `/_alert`: its body, its idempotency key, its fit to the size limit."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from sync_ci.clock import utc_stamp
from sync_ci.contract import ALERT_LIMIT_BYTES
from sync_ci.errors import UsageError
from sync_ci.redaction import escape_controls, first_control

RECENT_REPORT_S = 3600.0
MAX_ROWS = 20
MAX_ROW_CHARS = 200
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


def make_key(tenant: str, check: str, now: datetime, nonce: str) -> str:
    """Return an idempotency key: readable, unique, and inside the Worker's allowed alphabet."""
    slug = KEY_UNSAFE.sub("-", check).strip("-")[:40] or "check"
    return f"{tenant or 'tenant'}.{slug}.{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.{nonce}"[:128]


def check_name(check: str) -> str:
    """Return an alert's check name as sent, or raise UsageError naming what is wrong with it."""
    if not check.strip() or len(check) > 100 or first_control(check) is not None:
        raise UsageError(
            f'alert check name "{escape_controls(check)}" must be 1-100 characters with no '
            "control characters (e.g. doctor-failed)"
        )
    return check.strip()


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
    return fit_alert(
        Alert(
            check=check_name(check),
            message=_one_line(message) or f"{check} failed",
            host=_one_line(host)[:100] or "unknown-host",
            version=version,
            ts=utc_stamp(now),
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
