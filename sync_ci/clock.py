"""UTC timestamps as the project writes them: `2026-11-27T06:00:00Z`, one formatter, one parser.

Result documents, alert bodies, heartbeats, the status page and the Worker's answers all carry
this form (RFC 3339 in UTC, whole seconds). A naive datetime is taken to be UTC already.
"""

from __future__ import annotations

from datetime import UTC, datetime

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_stamp(at: datetime) -> str:
    """Return `at` as `YYYY-MM-DDTHH:MM:SSZ` in UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime(UTC_FORMAT)


def parse_utc_stamp(text: str) -> datetime:
    """Parse `YYYY-MM-DDTHH:MM:SSZ` into an aware UTC datetime (ValueError otherwise)."""
    return datetime.strptime(text, UTC_FORMAT).replace(tzinfo=UTC)


def epoch_stamp(epoch_s: float) -> str:
    """Return a Unix time as `YYYY-MM-DDTHH:MM:SSZ`."""
    return utc_stamp(datetime.fromtimestamp(epoch_s, UTC))
