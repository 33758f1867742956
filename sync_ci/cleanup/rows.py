"""Cleanup's report rows: one per prefix, the failed keys by name, and the totals."""

from __future__ import annotations

from typing import Any, Literal

from sync_ci.cleanup.model import CleanupRun, PrefixPlan
from sync_ci.report import Result
from sync_ci.store import DeleteFailure

# Failed keys named one per row; the rest are counted in one more row (JSON keeps them all).
FAILED_ROWS = 20
FAILED_KEYS_IN_JSON = 1000


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
        # The store stopped answering mid-run: what is left was not judged, so exit 3, not 1.
        "unmeasured": bool(outcome and outcome.unreachable),
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
        if numbers["unmeasured"]:
            detail += "; the store stopped answering, the rest is left for the next run"
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
