"""The bucket lifecycle backstop: the rule that expires the CI root, merged with other rules."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sync_ci.cleanup.model import PlanRefused
from sync_ci.report import Result
from sync_ci.store import Store

LIFECYCLE_RULE_ID = "sync-ci-ci-prefix-expiry"
ABORT_UPLOADS_AFTER_DAYS = 1


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
