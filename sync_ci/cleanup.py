"""CI-prefix cleanup: one listing pass, an age per `snappy-os-ci/<sha>/`, batched deletion.

The only job allowed to delete on a real bucket: its client carries the cleanup write policy, and
the plan is checked against the CI root again before the first DeleteObjects is sent.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TextIO

from sync_ci import guards
from sync_ci.errors import (
    ExitCode,
    GuardViolation,
    StoreError,
    SyncCIError,
    UnreachableError,
    UsageError,
)
from sync_ci.report import Report, Result, emit, make_report
from sync_ci.store import DELETE_BATCH, DeleteFailure, Store, UploadInfo, VersionInfo

SUITE = "cleanup"
DEFAULT_OLDER_THAN = "7d"
LIFECYCLE_RULE_ID = "sync-ci-ci-prefix-expiry"
ABORT_UPLOADS_AFTER_DAYS = 1
BATCHES_IN_FLIGHT = 4
DELETE_ATTEMPTS = 4
RETRY_BASE_DELAY_S = 0.2
# Per-key DeleteObjects errors no retry can fix (a legal hold or retention answers AccessDenied).
PERMANENT_DELETE_CODES = frozenset(
    {"AccessDenied", "InvalidArgument", "MalformedXML", "MethodNotAllowed", "NoSuchBucket"}
)
# Failed keys named one per row; the rest are counted in one more row (JSON keeps them all).
FAILED_ROWS = 20
FAILED_KEYS_IN_JSON = 1000

# Days and weeks only: `1m` reads as a month to many and would delete the prefixes of jobs in
# flight as minutes. Hours need --allow-short; nothing under an hour, nothing over ten years.
_DURATION = re.compile(r"^\s*([0-9]+)\s*([A-Za-z]*)\s*$")
_UNIT_S = {"h": 3600, "d": 86400, "w": 7 * 86400}
MAX_OLDER_THAN = timedelta(days=3650)

PrefixKind = Literal["ci", "other", "loose"]
Action = Literal["delete", "keep", "leave"]


class PlanRefused(SyncCIError):
    """The plan breaks a limit (--max-delete, the CI root): nothing was deleted."""

    exit_code = ExitCode.FAILED


# --- Data --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing:
    """Everything under the CI root, from one listing pass."""

    versions: tuple[VersionInfo, ...]
    uploads: tuple[UploadInfo, ...] = ()
    versioned: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Doomed:
    """One object version or delete marker the plan deletes."""

    key: str
    version_id: str
    size: int
    current: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefixPlan:
    """One top-level entry under the CI root and what happens to it."""

    prefix: str
    name: str
    kind: PrefixKind
    action: Action
    age_s: float
    objects: int
    versions: int
    bytes: int
    doomed: tuple[Doomed, ...] = ()
    uploads: tuple[UploadInfo, ...] = ()
    upload_count: int = 0
    unsafe_keys: tuple[str, ...] = ()

    @property
    def sha(self) -> str:
        """The sha segment for CI prefixes, else the name as listed."""
        return self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one run deletes, keeps and leaves alone; built without I/O."""

    ci_root: str
    now: datetime
    older_than: timedelta
    prefixes: tuple[PrefixPlan, ...]

    @property
    def to_delete(self) -> tuple[PrefixPlan, ...]:
        """The CI prefixes old enough to go."""
        return tuple(p for p in self.prefixes if p.action == "delete")

    @property
    def delete_count(self) -> int:
        """How many (key, version) entries the plan sends to DeleteObjects."""
        return sum(len(p.doomed) for p in self.to_delete)

    @property
    def abort_count(self) -> int:
        """How many incomplete multipart uploads the plan aborts."""
        return sum(len(p.uploads) for p in self.to_delete)

    @property
    def bytes_before(self) -> int:
        """Bytes stored under the CI root (every version) when listed."""
        return sum(p.bytes for p in self.prefixes)

    @property
    def objects_before(self) -> int:
        """Current objects under the CI root when listed."""
        return sum(p.objects for p in self.prefixes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What the deletion did: failures are per key, everything else was removed."""

    deleted: int
    deleted_bytes: int
    failures: tuple[DeleteFailure, ...] = ()
    failed_entries: frozenset[tuple[str, str]] = frozenset()
    aborted: int = 0
    abort_failures: tuple[tuple[str, str], ...] = ()
    batches: int = 0
    unreachable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupRun:
    """A plan, and its outcome when it was applied (None on a dry run)."""

    plan: Plan
    outcome: Outcome | None
    dry_run: bool
    duration_s: float = 0.0
    requests: Mapping[str, int] = field(default_factory=dict)


# --- Pure functions ----------------------------------------------------------------------------


def parse_older_than(text: str, *, allow_short: bool = False) -> timedelta:
    """Parse a retention like '7d' or '2w' ('36h' only with `allow_short`): 1 h to 3650 d."""
    shown = text if len(text or "") <= 40 else f"{text[:20]}...({len(text)} characters)"
    flag = f"--older-than {shown!r}"
    match = _DURATION.fullmatch(text or "")
    if not match:
        raise UsageError(f"{flag} is not a positive whole number of days or weeks, e.g. 7d or 2w")
    digits, unit = match.group(1), match.group(2).lower()
    if unit not in _UNIT_S:
        why = {
            "": "has no unit",
            "s": "is in seconds, under the 1 h minimum",
            "m": "could mean minutes or months",
            "min": "is in minutes, under the 1 h minimum",
        }.get(unit, f"has the unknown unit {unit!r}")
        raise UsageError(
            f"{flag} {why}; use days or weeks, e.g. 7d or 2w (hours, e.g. 36h, with --allow-short)"
        )
    # Compare digits before int(): a huge number must be one line, not an overflow.
    count = int(digits) if len(digits.lstrip("0")) <= 7 else MAX_OLDER_THAN.days * 10
    if unit == "h" and not allow_short:
        raise UsageError(
            f"{flag}: hours need --allow-short, as a short retention can delete the prefixes "
            "of jobs still running; use days or weeks, e.g. 7d or 2w"
        )
    if count <= 0:
        raise UsageError(f"{flag} is not a positive duration; use e.g. 7d or 2w")
    seconds = count * _UNIT_S[unit]
    if seconds > MAX_OLDER_THAN.total_seconds():
        raise UsageError(f"{flag} is longer than {MAX_OLDER_THAN.days} days; use e.g. 7d or 2w")
    return timedelta(seconds=seconds)


def parse_now(text: str) -> datetime:
    """Parse an ISO-8601 reference time; a time without an offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--now {text!r} is not an ISO-8601 time like 2026-01-31T12:00:00Z"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_max_delete(text: str | None) -> int | None:
    """Parse --max-delete: a non-negative whole number, or None when not given."""
    if text is None:
        return None
    if not text.strip().isdigit():
        raise UsageError(f"--max-delete {text!r} is not a whole number of keys (0 or more)")
    return int(text)


def check_roots(ci_root: str, live_root: str) -> None:
    """Refuse a CI root that is empty, malformed, or overlaps the production root."""
    try:
        guards.validate_key(ci_root)
    except GuardViolation:
        raise PlanRefused(f"refusing cleanup: CI root {ci_root!r} is not a valid prefix") from None
    if not ci_root.endswith("/"):
        raise PlanRefused(f"refusing cleanup: CI root {ci_root!r} must end with '/'")
    if live_root and (live_root.startswith(ci_root) or ci_root.startswith(live_root)):
        raise PlanRefused(
            f"refusing cleanup: CI root {ci_root!r} overlaps the production root {live_root!r}"
        )


def _deletable(key: str, policy: guards.WritePolicy) -> bool:
    try:
        guards.check_write_key(policy, key, "DeleteObjects")
    except GuardViolation:
        return False
    return True


def _classify(name: str | None) -> tuple[PrefixKind, str]:
    """Kind of one top-level entry under the CI root; None stands for the loose objects."""
    if name is None:
        return "loose", ""
    if guards.SHA_SEGMENT.fullmatch(name):
        return "ci", name
    return "other", name


def plan_cleanup(listing: Listing, now: datetime, older_than: timedelta, ci_root: str) -> Plan:
    """Group the listing by top-level prefix, age each, and mark old CI prefixes for deletion."""
    if older_than <= timedelta(0):
        raise UsageError("--older-than must be positive")
    if now.tzinfo is None:
        raise UsageError("the reference time must carry a time zone")
    policy = guards.cleanup_policy("", ci_root)
    # Grouped by the first segment under the CI root (None: a loose object), classified per group.
    named: dict[str | None, tuple[list[VersionInfo], list[UploadInfo]]] = {}
    start = len(ci_root)
    for item in listing.versions:
        if not item.key.startswith(ci_root):
            raise PlanRefused(
                f"refusing the whole run: listed key {item.key!r} lies outside the CI root "
                f"{ci_root!r}"
            )
        name, sep, _ = item.key[start:].partition("/")
        named.setdefault(name if sep else None, ([], []))[0].append(item)
    for upload in listing.uploads:
        if not upload.key.startswith(ci_root):
            raise PlanRefused(
                f"refusing the whole run: upload {upload.key!r} lies outside the CI root "
                f"{ci_root!r}"
            )
        name, sep, _ = upload.key[start:].partition("/")
        named.setdefault(name if sep else None, ([], []))[1].append(upload)
    groups = {_classify(name): lists for name, lists in named.items()}

    order = {"ci": 0, "other": 1, "loose": 2}
    prefixes: list[PrefixPlan] = []
    for (kind, name), (versions, uploads) in sorted(
        groups.items(), key=lambda item: (order[item[0][0]], item[0][1])
    ):
        stamps = [v.last_modified for v in versions] + [u.initiated for u in uploads]
        newest = max(stamps)
        age_s = (now - newest).total_seconds()
        objects = sum(1 for v in versions if v.is_latest and not v.is_delete_marker)
        size = sum(v.size for v in versions)
        prefix = f"{ci_root}{name}/" if kind != "loose" else ci_root
        if kind != "ci":
            prefixes.append(
                PrefixPlan(
                    prefix=prefix,
                    name=name if kind == "other" else "(loose objects)",
                    kind=kind,
                    action="leave",
                    age_s=age_s,
                    objects=objects,
                    versions=len(versions),
                    bytes=size,
                    upload_count=len(uploads),
                    unsafe_keys=tuple(sorted({v.key for v in versions})) if kind == "loose" else (),
                )
            )
            continue
        old = age_s > older_than.total_seconds()
        # Every version of an old prefix is judged once: doomed when the policy lets it go.
        keys = dict.fromkeys(v.key for v in versions) if old else {}
        deletable = {key: _deletable(key, policy) for key in keys}
        doomed = tuple(
            Doomed(
                key=v.key,
                version_id=v.version_id,
                size=v.size,
                current=v.is_latest and not v.is_delete_marker,
            )
            for v in versions
            if deletable.get(v.key, False)
        )
        unsafe = tuple(sorted(key for key, ok in deletable.items() if not ok))
        prefixes.append(
            PrefixPlan(
                prefix=prefix,
                name=name,
                kind="ci",
                action="delete" if old else "keep",
                age_s=age_s,
                objects=objects,
                versions=len(versions),
                bytes=size,
                doomed=doomed,
                uploads=tuple(u for u in uploads if old and _deletable(u.key, policy)),
                upload_count=len(uploads),
                unsafe_keys=unsafe,
            )
        )
    return Plan(ci_root=ci_root, now=now, older_than=older_than, prefixes=tuple(prefixes))


def assert_plan_safe(plan: Plan) -> None:
    """Refuse the whole run unless every planned key lies under a full `ci_root<sha>/`."""
    for item in plan.to_delete:
        if item.kind != "ci" or not guards.is_full_ci_prefix(item.prefix, plan.ci_root):
            raise PlanRefused(
                f"refusing the whole run: {item.prefix!r} is not a full {plan.ci_root}<sha>/ prefix"
            )
        keys = [d.key for d in item.doomed] + [u.key for u in item.uploads]
        for key in keys:
            if not key.startswith(item.prefix) or key == item.prefix:
                raise PlanRefused(
                    f"refusing the whole run: planned key {key!r} is not inside {item.prefix!r}"
                )


def check_max_delete(plan: Plan, max_delete: int | None) -> None:
    """Refuse, before anything is deleted, a plan larger than --max-delete."""
    if max_delete is not None and plan.delete_count > max_delete:
        raise PlanRefused(
            f"refusing to delete: the plan removes {plan.delete_count} keys in "
            f"{len(plan.to_delete)} prefixes, more than --max-delete {max_delete}; "
            "nothing was deleted"
        )


def make_batches(plan: Plan, size: int = DELETE_BATCH) -> list[list[Doomed]]:
    """Cut every doomed entry into DeleteObjects batches of at most `size` keys."""
    if not 0 < size <= DELETE_BATCH:
        raise ValueError(f"batch size must be 1 to {DELETE_BATCH}")
    doomed = [d for item in plan.to_delete for d in item.doomed]
    return [doomed[start : start + size] for start in range(0, len(doomed), size)]


def failed_entries(
    batches: Sequence[Sequence[Doomed]], failures: Sequence[DeleteFailure]
) -> set[tuple[str, str]]:
    """Match reported failures to planned entries; a failure without a version id names its key."""
    exact = {(f.key, f.version_id) for f in failures if f.version_id}
    whole_keys = {f.key for f in failures if not f.version_id}
    return {
        (d.key, d.version_id)
        for batch in batches
        for d in batch
        if (d.key, d.version_id) in exact or d.key in whole_keys
    }


def retention_days(older_than: timedelta) -> int:
    """Whole days for the lifecycle rule: the retention period rounded up, at least one."""
    return max(1, math.ceil(older_than.total_seconds() / 86400))


def lifecycle_rule(ci_root: str, days: int, *, versioned: bool) -> dict[str, Any]:
    """The backstop rule: expire CI-root objects after `days`, abort uploads after a day."""
    if not ci_root or not ci_root.endswith("/"):
        raise PlanRefused(f"refusing a lifecycle rule for CI root {ci_root!r}: not a prefix")
    rule: dict[str, Any] = {
        "ID": LIFECYCLE_RULE_ID,
        "Filter": {"Prefix": ci_root},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_UPLOADS_AFTER_DAYS},
    }
    if versioned:
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
    return rule


def merge_lifecycle(
    existing: Sequence[Mapping[str, Any]], rule: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Put `rule` among the bucket's rules: replace the one with its ID, keep every other rule."""
    merged: list[dict[str, Any]] = []
    replaced = False
    for current in existing:
        if current.get("ID") == rule["ID"]:
            if not replaced:
                merged.append(dict(rule))
            replaced = True
        else:
            merged.append(dict(current))
    if not replaced:
        merged.append(dict(rule))
    return merged


def format_age(seconds: float) -> str:
    """Format an age for a table: '8d 02h', '5h 03m', '42s'; negative means in the future."""
    if seconds < 0:
        return "in the future"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_bytes(count: int) -> str:
    """Format a byte count with binary units."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _describe_rule(rule: Mapping[str, Any]) -> str:
    parts = [str(rule.get("Status", "?"))]
    raw_filter = rule.get("Filter")
    prefix = rule.get("Prefix")
    if isinstance(raw_filter, Mapping):
        prefix = raw_filter.get("Prefix", prefix)
        if "And" in raw_filter or "Tag" in raw_filter:
            parts.append("filter " + ", ".join(sorted(raw_filter)))
    parts.append(f"prefix {prefix!r}" if prefix is not None else "whole bucket")
    expiration = rule.get("Expiration") or {}
    if "Days" in expiration:
        parts.append(f"expire after {expiration['Days']} d")
    elif "Date" in expiration:
        parts.append(f"expire on {expiration['Date']}")
    noncurrent = rule.get("NoncurrentVersionExpiration") or {}
    if "NoncurrentDays" in noncurrent:
        parts.append(f"old versions after {noncurrent['NoncurrentDays']} d")
    abort = rule.get("AbortIncompleteMultipartUpload") or {}
    if "DaysAfterInitiation" in abort:
        parts.append(f"abort uploads after {abort['DaysAfterInitiation']} d")
    return " · ".join(parts)


def summarize_lifecycle(rules: Sequence[Mapping[str, Any]], ci_root: str) -> list[Result]:
    """One row per lifecycle rule, plus a note when the sync-ci backstop is missing."""
    rows = [
        Result(
            id=str(rule.get("ID") or f"rule-{index}"),
            title="sync-ci backstop" if rule.get("ID") == LIFECYCLE_RULE_ID else "other rule",
            status="pass",
            detail=_describe_rule(rule),
            observed={"rule": dict(rule)},
        )
        for index, rule in enumerate(rules, 1)
    ]
    if not any(rule.get("ID") == LIFECYCLE_RULE_ID for rule in rules):
        rows.append(
            Result(
                id=LIFECYCLE_RULE_ID,
                title="sync-ci backstop missing",
                status="skip",
                detail=f"no rule expires {ci_root}; run: sync-ci cleanup --install-lifecycle",
            )
        )
    return rows


def _prefix_detail(item: PrefixPlan) -> str:
    objects = f"{item.objects} object" + ("" if item.objects == 1 else "s")
    if item.versions != item.objects:
        objects += f" ({item.versions} versions)"
    parts = [f"age {format_age(item.age_s)}", objects, format_bytes(item.bytes)]
    if item.upload_count:
        parts.append(f"{item.upload_count} incomplete upload(s)")
    return " · ".join(parts)


def summarize_run(run: CleanupRun) -> list[Result]:
    """Turn a run into report rows: one per prefix, failed keys by name, then the totals."""
    plan, outcome = run.plan, run.outcome
    failed_by_key: dict[str, list[DeleteFailure]] = {}
    for failure in outcome.failures if outcome else ():
        failed_by_key.setdefault(failure.key, []).append(failure)
    rows: list[Result] = []
    for item in plan.prefixes:
        observed: dict[str, Any] = {
            "prefix": item.prefix,
            "kind": item.kind,
            "age_s": round(item.age_s, 3),
            "objects": item.objects,
            "versions": item.versions,
            "bytes": item.bytes,
            "uploads": item.upload_count,
        }
        detail = _prefix_detail(item)
        status: Literal["pass", "fail", "skip"] = "pass"
        if item.kind != "ci":
            title = (
                "left alone: not a <sha>/ prefix"
                if item.kind == "other"
                else "left alone: loose objects"
            )
            action = "leave"
            status = "skip"
            if item.kind == "loose":
                detail += " · " + ", ".join(item.unsafe_keys[:3])
        elif item.action == "keep":
            title, action = "kept: younger than --older-than", "keep"
        elif run.dry_run:
            title, action = "would delete", "would-delete"
        else:
            failed = [k for k in {d.key for d in item.doomed} if k in failed_by_key]
            if failed:
                title, action, status = (
                    f"partly deleted: {len(failed)} key(s) failed",
                    "partial",
                    "fail",
                )
            else:
                title, action = "deleted", "delete"
        if item.unsafe_keys and item.kind == "ci":
            detail += (
                f" · {len(item.unsafe_keys)} key(s) with unsafe names left to the lifecycle rule"
            )
            observed["unsafe_keys"] = list(item.unsafe_keys[:FAILED_KEYS_IN_JSON])
        observed["action"] = action
        rows.append(
            Result(id=item.name, title=title, status=status, detail=detail, observed=observed)
        )

    if outcome:
        failures = sorted(outcome.failures, key=lambda f: (f.key, f.version_id))
        for failure in failures[:FAILED_ROWS]:
            rows.append(
                Result(
                    id="failed-key",
                    title=failure.key,
                    status="fail",
                    detail=f"{failure.code} {failure.message}".strip()
                    + (
                        f" (version {failure.version_id})"
                        if failure.version_id not in ("", "null")
                        else ""
                    ),
                    observed={
                        "key": failure.key,
                        "version_id": failure.version_id,
                        "code": failure.code,
                    },
                )
            )
        if len(failures) > FAILED_ROWS:
            rows.append(
                Result(
                    id="failed-key",
                    title=f"and {len(failures) - FAILED_ROWS} more failed keys",
                    status="fail",
                    detail="see the JSON report (--json) for the full list",
                    observed={"keys": [f.key for f in failures[FAILED_ROWS:FAILED_KEYS_IN_JSON]]},
                )
            )
        for key, message in outcome.abort_failures[:FAILED_ROWS]:
            rows.append(Result(id="failed-upload", title=key, status="fail", detail=message))

    rows.append(_totals_row(run))
    return rows


def totals(run: CleanupRun) -> dict[str, Any]:
    """Totals for the report: bytes and objects under the CI root before and after."""
    plan, outcome = run.plan, run.outcome
    deleted_bytes = outcome.deleted_bytes if outcome else 0
    failed = outcome.failed_entries if outcome else frozenset()
    deleted_current = (
        sum(
            1
            for item in plan.to_delete
            for d in item.doomed
            if d.current and (d.key, d.version_id) not in failed
        )
        if outcome
        else 0
    )
    return {
        "prefixes": sum(1 for p in plan.prefixes if p.kind == "ci"),
        "prefixes_old": len(plan.to_delete),
        "keys_planned": plan.delete_count,
        "keys_deleted": outcome.deleted if outcome else 0,
        "keys_failed": len(outcome.failures) if outcome else 0,
        "uploads_aborted": outcome.aborted if outcome else 0,
        "bytes_before": plan.bytes_before,
        "bytes_after": plan.bytes_before - deleted_bytes,
        "bytes_planned": sum(d.size for item in plan.to_delete for d in item.doomed),
        "objects_before": plan.objects_before,
        "objects_after": plan.objects_before - deleted_current,
        "older_than_s": int(plan.older_than.total_seconds()),
        "now": plan.now.isoformat(),
        "dry_run": run.dry_run,
        "requests": dict(run.requests),
    }


def _totals_row(run: CleanupRun) -> Result:
    numbers = totals(run)
    before, after = numbers["bytes_before"], numbers["bytes_after"]
    if run.dry_run:
        detail = (
            f"{numbers['prefixes_old']} of {numbers['prefixes']} prefixes old; would delete "
            f"{numbers['keys_planned']} keys ({format_bytes(numbers['bytes_planned'])}); "
            f"{run.plan.ci_root} holds {format_bytes(before)}"
        )
    else:
        detail = (
            f"{run.plan.ci_root}: {format_bytes(before)} -> {format_bytes(after)}, "
            f"{numbers['objects_before']} -> {numbers['objects_after']} objects; "
            f"deleted {numbers['keys_deleted']} keys in {numbers['prefixes_old']} prefixes"
        )
        if numbers["keys_failed"]:
            detail += f", {numbers['keys_failed']} failed"
    failed = bool(run.outcome and (run.outcome.failures or run.outcome.abort_failures))
    return Result(
        id="totals",
        title="dry run: nothing deleted"
        if run.dry_run
        else "bytes under the CI root before -> after",
        status="fail" if failed else "pass",
        duration_s=run.duration_s,
        detail=detail,
        observed=numbers,
    )


# --- Edge functions ----------------------------------------------------------------------------


class Progress:
    """A one-line progress indicator on stderr, drawn only on a TTY, at most 10 times a second."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self._last = 0.0
        self._lock = threading.Lock()
        self._drawn = False

    def update(self, text: str, *, force: bool = False) -> None:
        """Redraw the line (throttled)."""
        if not self.enabled:
            return
        with self._lock:
            moment = time.monotonic()
            if not force and moment - self._last < 0.1:
                return
            self._last = moment
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        """End the line so the report starts on a fresh one."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def fetch_listing(store: Store, ci_root: str, progress: Progress | None = None) -> Listing:
    """List everything under the CI root in one paginated pass, then its incomplete uploads.

    A bucket that never had versioning holds only current objects, so ListObjectsV2 lists it all;
    otherwise every version and delete marker is listed (ListObjectVersions).
    """
    versioned = store.versioning_status() in ("Enabled", "Suspended")
    entries: Iterator[VersionInfo] = (
        store.list_versions(ci_root)
        if versioned
        else (
            VersionInfo(key=o.key, version_id="", size=o.size, last_modified=o.last_modified)
            for o in store.list(ci_root)
        )
    )
    versions: list[VersionInfo] = []
    for item in entries:
        versions.append(item)
        if progress and len(versions) % 1000 == 0:
            progress.update(f"listing {ci_root}: {len(versions)} entries")
    uploads = tuple(store.list_multipart_uploads(ci_root))
    return Listing(versions=tuple(versions), uploads=uploads, versioned=versioned)


def delete_batch(
    send: Callable[[Sequence[tuple[str, str]]], list[DeleteFailure]],
    batch: Sequence[Doomed],
    *,
    attempts: int = DELETE_ATTEMPTS,
    base_delay_s: float = RETRY_BASE_DELAY_S,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[DeleteFailure], bool]:
    """Send one batch, retrying per-key errors with backoff; return final failures, unreachable."""
    pending = list(batch)
    final: list[DeleteFailure] = []
    for attempt in range(attempts):
        try:
            failures = send([(d.key, d.version_id) for d in pending])
        except (StoreError, UnreachableError) as exc:
            # botocore already retried the request itself (standard mode); give up on the batch.
            code = "Unreachable" if isinstance(exc, UnreachableError) else "RequestFailed"
            final.extend(
                DeleteFailure(key=d.key, version_id=d.version_id, code=code, message=str(exc))
                for d in pending
            )
            return final, isinstance(exc, UnreachableError)
        retry_ids: set[tuple[str, str]] = set()
        for failure in failures:
            if failure.code in PERMANENT_DELETE_CODES or attempt == attempts - 1:
                final.append(failure)
            else:
                retry_ids.add((failure.key, failure.version_id))
        pending = [d for d in pending if {(d.key, d.version_id), (d.key, "")} & retry_ids]
        if not pending:
            break
        delay = base_delay_s * (2**attempt)
        sleep(delay + random.uniform(0, delay / 2))
    return final, False


def apply_plan(
    store: Store,
    plan: Plan,
    *,
    workers: int = BATCHES_IN_FLIGHT,
    batch_size: int = DELETE_BATCH,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Delete the plan: checked against the CI root first, then batches in flight, then aborts."""
    assert_plan_safe(plan)
    batches = make_batches(plan, batch_size)
    total = sum(len(b) for b in batches)
    done = 0
    done_lock = threading.Lock()
    failures: list[DeleteFailure] = []
    unreachable = False

    def run(batch: list[Doomed]) -> tuple[list[DeleteFailure], bool]:
        nonlocal done
        result = delete_batch(store.delete_versions, batch, sleep=sleep)
        with done_lock:
            done += len(batch)
            if progress:
                progress.update(f"deleting: {done}/{total} keys in {len(batches)} batches")
        return result

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="cleanup") as pool:
        for batch_failures, batch_unreachable in pool.map(run, batches):
            failures.extend(batch_failures)
            unreachable = unreachable or batch_unreachable

    aborted = 0
    abort_failures: list[tuple[str, str]] = []
    for item in plan.to_delete:
        for upload in item.uploads:
            try:
                store.abort_upload(upload.key, upload.upload_id)
            except (StoreError, UnreachableError) as exc:
                abort_failures.append((upload.key, str(exc)))
            else:
                aborted += 1

    failed_ids = failed_entries(batches, failures)
    deleted_bytes = sum(
        d.size for batch in batches for d in batch if (d.key, d.version_id) not in failed_ids
    )
    if progress:
        progress.close()
    return Outcome(
        deleted=total - len(failed_ids),
        deleted_bytes=deleted_bytes,
        failures=tuple(failures),
        failed_entries=frozenset(failed_ids),
        aborted=aborted,
        abort_failures=tuple(abort_failures),
        batches=len(batches),
        unreachable=unreachable,
    )


def run_cleanup(
    store: Store,
    *,
    ci_root: str,
    now: datetime,
    older_than: timedelta,
    live_root: str = "",
    dry_run: bool = False,
    max_delete: int | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CleanupRun:
    """List, plan, check and (unless a dry run) delete; refusals happen before any deletion."""
    started = time.monotonic()
    check_roots(ci_root, live_root)
    listing = fetch_listing(store, ci_root, progress)
    plan = plan_cleanup(listing, now, older_than, ci_root)
    assert_plan_safe(plan)
    check_max_delete(plan, max_delete)
    outcome = None if dry_run else apply_plan(store, plan, progress=progress, sleep=sleep)
    if progress:
        progress.close()
    return CleanupRun(
        plan=plan, outcome=outcome, dry_run=dry_run, duration_s=time.monotonic() - started
    )


def install_lifecycle(
    store: Store, ci_root: str, older_than: timedelta, *, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Merge the backstop rule into the bucket's lifecycle rules and put them (unless dry run)."""
    versioned = store.versioning_status() in ("Enabled", "Suspended")
    rule = lifecycle_rule(ci_root, retention_days(older_than), versioned=versioned)
    merged = merge_lifecycle(store.lifecycle_rules(), rule)
    if not dry_run:
        store.put_lifecycle_rules(merged)
    return merged


# --- Entry points ------------------------------------------------------------------------------


@contextlib.contextmanager
def _resolved_settings(args: argparse.Namespace) -> Iterator[Any]:
    from sync_ci.config import load_settings

    settings = load_settings(
        config=getattr(args, "config", None), target=getattr(args, "target", None)
    )
    if settings.target == "sandbox" and settings.endpoint_url and settings.bucket:
        if not guards.is_loopback_url(settings.endpoint_url):
            raise UsageError(
                f"target sandbox must use a loopback store, not {settings.endpoint_url!r}; "
                "use --target ci for a remote bucket"
            )
        yield settings
    elif settings.target == "sandbox":
        from sync_ci.sandbox.attach import attach

        with attach(settings) as filled:
            yield filled
    else:
        yield settings


def command(args: argparse.Namespace) -> int:
    """Run `sync-ci cleanup`: settings, guarded client, plan, delete, report, exit code."""
    from sync_ci.store import count_requests, endpoint_from_settings, open_store

    started_wall = datetime.now(UTC)
    started = time.monotonic()
    older_than = parse_older_than(args.older_than, allow_short=bool(args.allow_short))
    max_delete = parse_max_delete(args.max_delete)
    now = parse_now(args.now) if args.now else started_wall
    quiet = bool(getattr(args, "quiet", False))

    with _resolved_settings(args) as settings:
        writes = not args.dry_run and not args.show_lifecycle
        if writes and settings.read_only:
            raise UsageError(
                "target live is read-only: cleanup deletes only on target ci or sandbox "
                "(use --dry-run to preview against live)"
            )
        check_roots(settings.ci_root, settings.live_root)
        policy = (
            guards.cleanup_policy(
                settings.bucket, settings.ci_root, lifecycle=bool(args.install_lifecycle)
            )
            if writes
            else guards.read_only_policy()
        )
        store = open_store(endpoint_from_settings(settings), policy, fast_timestamps=True)
        requests = count_requests(store)
        mode = "dry-run" if args.dry_run else "delete"
        if args.show_lifecycle:
            mode = "show-lifecycle"
        elif args.install_lifecycle:
            mode = "install-lifecycle" + (" (dry-run)" if args.dry_run else "")

        def report_of(rows: Sequence[Result], extra: Mapping[str, Any]) -> Report:
            return make_report(
                suite=SUITE,
                target=settings.target,
                mode=mode,
                sha=settings.sha,
                started_at=started_wall.isoformat(),
                duration_s=time.monotonic() - started,
                results=rows,
                extra=extra,
            )

        if args.show_lifecycle:
            rules = store.lifecycle_rules()
            rows = summarize_lifecycle(rules, settings.ci_root)
            return emit(report_of(rows, {"lifecycle": rules}), args)
        if args.install_lifecycle:
            merged = install_lifecycle(store, settings.ci_root, older_than, dry_run=args.dry_run)
            rows = summarize_lifecycle(merged, settings.ci_root)
            return emit(report_of(rows, {"lifecycle": merged, "installed": not args.dry_run}), args)

        progress = Progress(enabled=None if not quiet else False)
        run = run_cleanup(
            store,
            ci_root=settings.ci_root,
            now=now,
            older_than=older_than,
            live_root=settings.live_root,
            dry_run=bool(args.dry_run),
            max_delete=max_delete,
            progress=progress,
        )
        run = CleanupRun(
            plan=run.plan,
            outcome=run.outcome,
            dry_run=run.dry_run,
            duration_s=run.duration_s,
            requests=dict(requests),
        )
        return emit(report_of(summarize_run(run), totals(run)), args)


def add_parser(sub: Any) -> None:
    """Register `sync-ci cleanup`."""
    from sync_ci.cli import add_common

    parser = sub.add_parser(
        "cleanup",
        help="delete CI prefixes (snappy-os-ci/<sha>/) older than a retention period",
        description=(
            "Delete every snappy-os-ci/<sha>/ prefix whose newest object is older than "
            "--older-than, in one listing pass and batched DeleteObjects. Anything else under the "
            "CI root is reported and left alone; nothing outside it is ever touched."
        ),
        epilog="Exit codes: 0 done, 1 some keys failed or the plan was refused, 2 bad input, "
        "3 store unreachable (nothing deleted).",
    )
    add_common(parser)
    parser.add_argument(
        "--older-than",
        default=DEFAULT_OLDER_THAN,
        metavar="AGE",
        help="delete prefixes whose newest object is older than this: days or weeks, 1 h to "
        "3650 d (e.g. 7d, 2w; default 7d)",
    )
    parser.add_argument(
        "--allow-short",
        action="store_true",
        help="also accept hours in --older-than (e.g. 36h), never under 1 h",
    )
    parser.add_argument("--dry-run", action="store_true", help="plan and report; delete nothing")
    parser.add_argument(
        "--max-delete",
        metavar="N",
        help="refuse, before deleting anything, a plan of more than N keys (versions included)",
    )
    parser.add_argument(
        "--now",
        metavar="ISO-8601",
        help="reference time for ages (default: the current time, read once)",
    )
    lifecycle = parser.add_mutually_exclusive_group()
    lifecycle.add_argument(
        "--install-lifecycle",
        action="store_true",
        help="add or update the bucket lifecycle rule that expires the CI root (other rules kept)",
    )
    lifecycle.add_argument(
        "--show-lifecycle", action="store_true", help="print the bucket's lifecycle rules"
    )
    parser.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `cleanup` arguments only and run them (for tasks.py and `python -m`)."""
    from sync_ci.cli import run_handler

    parser = argparse.ArgumentParser(prog="sync-ci")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["cleanup", *(argv if argv is not None else sys.argv[1:])])
    return run_handler(args.func, args)
