"""The status view's rows: an alert file, a field check from `/_status`, or a source that
could not be read; their order, the verdict line and the exit code (pure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sync_ci import alert_files
from sync_ci.alert_files import AlertFile
from sync_ci.clock import parse_utc_stamp, utc_stamp
from sync_ci.errors import ExitCode
from sync_ci.pass_history import History
from sync_ci.redaction import clean

if TYPE_CHECKING:
    pass


RECENT = timedelta(hours=24)

MAX_FILES = 20

CI_LOOP = "ci-loop"

FIELD = "field"

NOTHING = "no alerts recorded"

DAYS = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class Picture:
    """What the page draws above the table: pass history, alert files, the `/_status` document.

    No history (None) leaves the ci-loop timeline out: the reference Worker draws only its own
    `/_status` document.
    """

    history: History | None = None
    files: tuple[AlertFile, ...] = ()
    worker: Mapping[str, Any] | None = None
    worker_problem: str = ""
    days: int = DAYS


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRow:
    """One line of the view: an alert file, a field-time check, or a source that could not be read."""

    source: str
    name: str
    failing: bool
    count: int
    tenants: int
    last_seen: str
    detail: str
    unread: bool = False

    @property
    def state(self) -> str:
        """FAIL, UNREAD (the source could not be read) or ok."""
        return "FAIL" if self.failing else "UNREAD" if self.unread else "ok"

    def cells(self) -> list[str]:
        """Render as table cells, each cleaned to one safe line."""
        raw = [
            self.state,
            self.source,
            self.name,
            str(self.count),
            str(self.tenants),
            self.last_seen,
            self.detail,
        ]
        return [clean(cell, keep_newlines=False) for cell in raw]


HEADERS = ("state", "source", "check", "count", "tenants", "last seen", "detail")


def unread_row(source: str, what: str, why: str) -> StatusRow:
    """A row saying which source could not be read and why."""
    return StatusRow(
        source=source,
        name=what,
        failing=False,
        count=0,
        tenants=0,
        last_seen="",
        detail=why,
        unread=True,
    )


def file_rows(files: Sequence[tuple[AlertFile, str]]) -> list[StatusRow]:
    """Turn (alert file, title) pairs into rows; only the current degradation is failing."""
    current = alert_files.current_failure(item for item, _ in files)
    ordered = alert_files.newest_first(item for item, _ in files)[:MAX_FILES]
    title = {item: text for item, text in files}
    return [
        StatusRow(
            source=CI_LOOP,
            name=item.path.name,
            failing=item == current,
            count=1,
            tenants=0,
            last_seen=utc_stamp(item.at),
            detail=title[item],
        )
        for item in ordered
    ]


def worker_rows(summary: Mapping[str, Any], now: datetime) -> list[StatusRow]:
    """Turn the Worker's `/_status` document into rows; a check seen in the last 24 h is failing.

    A document of the wrong shape raises ValueError (the caller makes it an UNREAD row).
    """
    try:
        return _worker_rows(summary, now)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"its document does not have the /_status shape ({exc})") from None


def _worker_rows(summary: Mapping[str, Any], now: datetime) -> list[StatusRow]:
    rows = []
    checks = summary.get("checks") or {}
    if not isinstance(checks, Mapping):
        raise TypeError("'checks' is not an object")
    for name, stats in checks.items():
        if not isinstance(stats, Mapping):
            raise TypeError(f"check {name!r} is not an object")
        last = str(stats.get("last_seen", ""))
        try:
            seen = parse_utc_stamp(last)
            recent = now - seen <= RECENT
        except ValueError:
            recent = True
        tenants = stats.get("tenant_count", len(stats.get("tenants") or []))
        rows.append(
            StatusRow(
                source=FIELD,
                name=str(name),
                failing=recent,
                count=int(stats.get("count", 0)),
                tenants=int(tenants),
                last_seen=last,
                detail=str(stats.get("last_message", "")),
            )
        )
    silent_tenants = summary.get("silent_tenants") or []
    if not isinstance(silent_tenants, list):
        raise TypeError("'silent_tenants' is not a list")
    for silent in silent_tenants:
        if isinstance(silent, Mapping):
            rows.append(
                StatusRow(
                    source=FIELD,
                    name=f"silent tenant {silent.get('tenant', '?')}",
                    failing=True,
                    count=0,
                    tenants=1,
                    last_seen=str(silent.get("last_seen", "")),
                    detail=f"no heartbeat for {int(silent.get('silent_for_s', 0)) // 3600} h",
                )
            )
    return rows


def _rank(row: StatusRow) -> int:
    if row.failing:
        return 0 if row.source == CI_LOOP else 2
    return 1 if row.unread else 3


def order_rows(rows: Sequence[StatusRow]) -> list[StatusRow]:
    """ci-loop failures first, then unreadable sources, field failures, the rest; newest first."""
    by_time = sorted(rows, key=lambda r: r.last_seen, reverse=True)
    return sorted(by_time, key=_rank)


def exit_code(rows: Sequence[StatusRow]) -> ExitCode:
    """3 when a source could not be read, else 1 while anything is failing, else 0."""
    if any(r.unread for r in rows):
        return ExitCode.UNMEASURED
    return ExitCode.FAILED if any(r.failing for r in rows) else ExitCode.OK


def verdict(rows: Sequence[StatusRow]) -> str:
    """One line: how many are failing and how many sources could not be read."""
    failing, unread = sum(r.failing for r in rows), sum(r.unread for r in rows)
    parts = [f"{failing} failing"] if failing else []
    if unread:
        parts.append(f"{unread} source{'s' if unread > 1 else ''} unreadable")
    return ", ".join(parts) or "all clear"
