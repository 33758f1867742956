"""The Worker's status book: alerts by check, heartbeats, duplicate keys and per-tenant rate limits.

Pure (no aiohttp, no clock: "now" is a parameter); `GET /_status` answers `summarize_status`,
as JSON or drawn by the one "Sync status" page renderer (`sync_ci.field.status_page`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync_ci.clock import epoch_stamp
from sync_ci.errors import ContractError

SILENT_AFTER_S = 12 * 3600.0
ALERT_RATE_PER_MIN = 30.0
ALERT_BURST = 30.0
MAX_ALERT_ROWS = 20
MAX_ROW_FIELDS = 20
MAX_ROW_VALUE_CHARS = 200
MAX_SEEN_KEYS = 100_000


@dataclass(slots=True)
class CheckStats:
    """Aggregated alerts of one check under one root."""

    count: int = 0
    tenants: set[str] = field(default_factory=set)
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_message: str = ""
    last_tenant: str = ""
    last_rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class RootBook:
    """Alerts and heartbeats seen under one root."""

    checks: dict[str, CheckStats] = field(default_factory=dict)
    heartbeats: dict[str, float] = field(default_factory=dict)
    seen: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)
    persist_failures: int = 0

    def record_alert(
        self,
        *,
        tenant: str,
        key: str,
        alert: Mapping[str, Any],
        rows: list[dict[str, Any]],
        now: float,
    ) -> None:
        """Count one alert of `tenant` under its check and remember its idempotency key."""
        self.seen[(tenant, key)] = None
        if len(self.seen) > MAX_SEEN_KEYS:
            self.seen.popitem(last=False)
        stats = self.checks.setdefault(alert["check"], CheckStats(first_seen=now))
        stats.count += 1
        stats.tenants.add(tenant)
        stats.last_seen = now
        stats.last_message = alert["message"]
        stats.last_tenant = tenant
        stats.last_rows = rows


@dataclass(slots=True)
class TokenBucket:
    """A per-tenant alert allowance: `burst` tokens, refilled at `rate_per_s`."""

    tokens: float
    updated_at: float

    def take(self, now: float, *, rate_per_s: float, burst: float) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        self.tokens = min(burst, self.tokens + max(0.0, now - self.updated_at) * rate_per_s)
        self.updated_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate_per_s


def parse_alert_rows(raw: object) -> list[dict[str, Any]]:
    """Validate an alert's failing rows (`[]` when the body has none) and cap their number and size.

    The contract types `rows` as an array: an explicit `null` is refused like any other non-list.
    """
    if not isinstance(raw, list) or not all(isinstance(row, dict) for row in raw):
        raise ContractError("alert rows must be a list of objects")
    rows: list[dict[str, Any]] = []
    for row in raw[:MAX_ALERT_ROWS]:
        clean: dict[str, Any] = {}
        for key, value in list(row.items())[:MAX_ROW_FIELDS]:
            if isinstance(value, dict | list):
                value = json.dumps(value, sort_keys=True)
            if isinstance(value, str):
                value = value[:MAX_ROW_VALUE_CHARS]
            clean[str(key)[:64]] = value
        rows.append(clean)
    return rows


def iso_time(epoch_s: float) -> str:
    """Render seconds since the epoch as ISO 8601 UTC with a Z."""
    return epoch_stamp(epoch_s)


def summarize_status(
    checks: Mapping[str, CheckStats], heartbeats: Mapping[str, float], now: float
) -> dict[str, Any]:
    """Aggregate a root's alerts by check (most recent first) and find tenants gone silent."""
    ordered = sorted(checks.items(), key=lambda item: (-item[1].last_seen, item[0]))
    silent = sorted(
        ((tenant, seen) for tenant, seen in heartbeats.items() if now - seen > SILENT_AFTER_S),
        key=lambda item: (item[1], item[0]),
    )
    return {
        "generated_at": iso_time(now),
        "checks": {
            name: {
                "count": stats.count,
                "tenants": sorted(stats.tenants),
                "tenant_count": len(stats.tenants),
                "first_seen": iso_time(stats.first_seen),
                "last_seen": iso_time(stats.last_seen),
                "last_message": stats.last_message,
                "last_tenant": stats.last_tenant,
                "last_rows": stats.last_rows,
            }
            for name, stats in ordered
        },
        "alert_count": sum(stats.count for stats in checks.values()),
        "silent_after_s": int(SILENT_AFTER_S),
        "silent_tenants": [
            {"tenant": tenant, "last_seen": iso_time(seen), "silent_for_s": int(now - seen)}
            for tenant, seen in silent
        ],
        "reporting_tenants": sorted(
            tenant for tenant, seen in heartbeats.items() if now - seen <= SILENT_AFTER_S
        ),
    }


def render_status_page(summary: Mapping[str, Any], now: float) -> str:
    """Draw a status summary as the one "Sync status" page (`sync-ci status --html` draws it too)."""
    from sync_ci.field.status_page import render_html
    from sync_ci.field.status_rows import Picture, worker_rows

    at = datetime.fromtimestamp(now, UTC)
    return render_html(worker_rows(summary, at), generated_at=at, picture=Picture(worker=summary))
