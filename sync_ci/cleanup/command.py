"""`sync-ci cleanup`: settings, the guarded client, plan or lifecycle, report, exit code."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from sync_ci import guards
from sync_ci.cleanup.apply import Progress, run_cleanup
from sync_ci.cleanup.lifecycle import install_lifecycle, summarize_lifecycle
from sync_ci.cleanup.model import DEFAULT_OLDER_THAN, SUITE
from sync_ci.cleanup.plan import check_roots, parse_max_delete, parse_now, parse_older_than
from sync_ci.cleanup.rows import summarize_run, totals
from sync_ci.errors import UsageError
from sync_ci.report import Report, Result, make_report
from sync_ci.report_emit import Outputs, emit

Lifecycle = Literal["show", "install"]


def command(
    *,
    target: str | None = None,
    config: str | None = None,
    older_than: str = DEFAULT_OLDER_THAN,
    allow_short: bool = False,
    dry_run: bool = False,
    max_delete: int | None = None,
    now: str | None = None,
    lifecycle: Lifecycle | None = None,
    outputs: Outputs | None = None,
) -> int:
    """Run `sync-ci cleanup`: settings, guarded client, plan, delete, report, exit code.

    `max_delete` None means no cap and 0 refuses any deletion, from every front end; `lifecycle`
    shows or installs the bucket's lifecycle backstop instead of deleting.
    """
    from sync_ci.store import count_requests, endpoint_from_settings, open_store

    outputs = outputs or Outputs()
    started_wall = datetime.now(UTC)
    started = time.monotonic()
    age = parse_older_than(older_than, allow_short=allow_short)
    if max_delete is not None and max_delete < 0:
        raise UsageError(f"--max-delete {max_delete} is not a whole number of keys (0 or more)")
    reference = parse_now(now) if now else started_wall

    from sync_ci.attachment import STORE, open_target
    from sync_ci.config import load_settings

    loaded = load_settings(config=config, target=target)
    with open_target(loaded, STORE) as settings:
        writes = not dry_run and lifecycle != "show"
        if writes and settings.read_only:
            raise UsageError(
                "target live is read-only: cleanup deletes only on target ci or sandbox "
                "(use --dry-run to preview against live)"
            )
        check_roots(settings.ci_root, settings.live_root)
        policy = (
            guards.cleanup_policy(
                settings.bucket, settings.ci_root, lifecycle=lifecycle == "install"
            )
            if writes
            else guards.read_only_policy()
        )
        store = open_store(endpoint_from_settings(settings), policy, fast_timestamps=True)
        requests = count_requests(store)
        mode = "dry-run" if dry_run else "delete"
        if lifecycle == "show":
            mode = "show-lifecycle"
        elif lifecycle == "install":
            mode = "install-lifecycle" + (" (dry-run)" if dry_run else "")

        def report_of(
            rows: Sequence[Result], extra: Mapping[str, Any], *, unmeasured: bool = False
        ) -> Report:
            return make_report(
                suite=SUITE,
                target=settings.target,
                mode=mode,
                sha=settings.sha,
                started_at=started_wall,
                duration_s=time.monotonic() - started,
                results=rows,
                unmeasured=unmeasured,
                extra=extra,
            )

        if lifecycle == "show":
            rules = store.lifecycle_rules()
            rows = summarize_lifecycle(rules, settings.ci_root)
            return emit(report_of(rows, {"lifecycle": rules}), outputs)
        if lifecycle == "install":
            merged = install_lifecycle(store, settings.ci_root, age, dry_run=dry_run)
            rows = summarize_lifecycle(merged, settings.ci_root)
            return emit(report_of(rows, {"lifecycle": merged, "installed": not dry_run}), outputs)

        progress = Progress(enabled=None if not outputs.quiet else False)
        run = run_cleanup(
            store,
            ci_root=settings.ci_root,
            now=reference,
            older_than=age,
            live_root=settings.live_root,
            dry_run=dry_run,
            max_delete=max_delete,
            progress=progress,
        )
        run = dataclasses.replace(run, requests=dict(requests))
        # The store stopped answering mid-run: what is left was not judged, so exit 3, not 1.
        numbers = totals(run)
        unmeasured = bool(numbers.pop("unmeasured"))
        return emit(report_of(summarize_run(run), numbers, unmeasured=unmeasured), outputs)


def add_parser(sub: Any) -> None:
    """Register `sync-ci cleanup`."""
    from sync_ci.options import add_common

    parser = sub.add_parser(
        "cleanup",
        help="delete CI prefixes (snappy-os-ci/<sha>/) older than a retention period",
        description=(
            "Delete every snappy-os-ci/<sha>/ prefix whose newest object is older than "
            "--older-than, in one listing pass and batched DeleteObjects. Anything else under the "
            "CI root is reported and left alone; nothing outside it is ever touched."
        ),
        epilog="Exit codes: 0 done, 1 some keys failed or the plan was refused, 2 bad input, "
        "3 store unreachable (what was not deleted is left for the next run).",
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
        help="refuse, before deleting anything, a plan of more than N keys (versions "
        "included); 0 refuses any deletion (default: no cap)",
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
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sync_ci.options import outputs

    lifecycle: Lifecycle | None = (
        "show" if args.show_lifecycle else "install" if args.install_lifecycle else None
    )
    return command(
        target=args.target,
        config=args.config,
        older_than=args.older_than,
        allow_short=args.allow_short,
        dry_run=args.dry_run,
        max_delete=parse_max_delete(args.max_delete),
        now=args.now,
        lifecycle=lifecycle,
        outputs=outputs(args),
    )
