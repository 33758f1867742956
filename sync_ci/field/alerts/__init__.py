"""Field alerts: POST /_alert with an idempotency key, bounded retries, and an owner-only spool.

The alert and its body live in `model`, the spool in `spool`, the POST and its retries in
`delivery`, and `sync-ci alert` in `command`; this package re-exports them.
"""

from __future__ import annotations

from sync_ci.field.alerts.command import add_parser, command
from sync_ci.field.alerts.delivery import (
    ATTEMPT_TIMEOUT_S,
    BACKOFF_S,
    LAST_DOCTOR,
    MAX_ATTEMPTS,
    TENANT_POSTS,
    TOTAL_BUDGET_S,
    Deadline,
    deliver,
    flush,
    flush_spool,
    read_last_doctor,
    send_alert,
    tenant_headers,
    tenant_poster,
)
from sync_ci.field.alerts.model import (
    MAX_ROW_CHARS,
    MAX_ROWS,
    RECENT_REPORT_S,
    Alert,
    Delivery,
    Verdict,
    body_size,
    classify,
    failing_rows,
    fit_alert,
    make_key,
    new_alert,
)
from sync_ci.field.alerts.spool import SPOOL_LIMIT, Spool

__all__ = [
    "ATTEMPT_TIMEOUT_S",
    "BACKOFF_S",
    "LAST_DOCTOR",
    "MAX_ATTEMPTS",
    "MAX_ROWS",
    "MAX_ROW_CHARS",
    "RECENT_REPORT_S",
    "SPOOL_LIMIT",
    "TENANT_POSTS",
    "TOTAL_BUDGET_S",
    "Alert",
    "Deadline",
    "Delivery",
    "Spool",
    "Verdict",
    "add_parser",
    "body_size",
    "classify",
    "command",
    "deliver",
    "failing_rows",
    "fit_alert",
    "flush",
    "flush_spool",
    "make_key",
    "new_alert",
    "read_last_doctor",
    "send_alert",
    "tenant_headers",
    "tenant_poster",
]
