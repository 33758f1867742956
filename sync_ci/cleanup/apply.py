"""Cleanup's edge: one listing pass, batched DeleteObjects with retries, and the whole run."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TextIO

from sync_ci.cleanup.model import CleanupRun, Doomed, Listing, Outcome, Plan
from sync_ci.cleanup.plan import (
    assert_plan_safe,
    check_max_delete,
    check_roots,
    failed_entries,
    make_batches,
    plan_cleanup,
)
from sync_ci.errors import StoreError, UnreachableError
from sync_ci.store import DELETE_BATCH, DeleteFailure, Store, VersionInfo

BATCHES_IN_FLIGHT = 4
DELETE_ATTEMPTS = 4
RETRY_BASE_DELAY_S = 0.2
# Per-key DeleteObjects errors no retry can fix (a legal hold or retention answers AccessDenied).
PERMANENT_DELETE_CODES = frozenset(
    {"AccessDenied", "InvalidArgument", "MalformedXML", "MethodNotAllowed", "NoSuchBucket"}
)


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
    live_root: str,
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
