"""Cleanup's pure planning: parse the options, group a listing by prefix, refuse unsafe plans."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sync_ci import guards
from sync_ci.cleanup.model import Doomed, Listing, Plan, PlanRefused, PrefixKind, PrefixPlan
from sync_ci.config import root_problems
from sync_ci.errors import GuardViolation, UsageError
from sync_ci.store import DELETE_BATCH, DeleteFailure, UploadInfo, VersionInfo

# Days and weeks only: `1m` reads as a month to many and would delete the prefixes of jobs in
# flight as minutes. Hours need --allow-short; nothing under an hour, nothing over ten years.
_DURATION = re.compile(r"^\s*([0-9]+)\s*([A-Za-z]*)\s*$")
_UNIT_S = {"h": 3600, "d": 86400, "w": 7 * 86400}
MAX_OLDER_THAN = timedelta(days=3650)


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
    """Refuse a CI root that is malformed or overlaps the production root (config's rule)."""
    problems = root_problems(ci_root, live_root)
    if problems:
        raise PlanRefused("refusing cleanup: " + "; ".join(problems))


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
