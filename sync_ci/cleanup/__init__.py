"""CI-prefix cleanup: one listing pass, an age per `snappy-os-ci/<sha>/`, batched deletion.

The only job allowed to delete on a real bucket: its client carries the cleanup write policy, and
the plan is checked against the CI root again before the first DeleteObjects is sent. The data
lives in `model`, the pure plan in `plan`, the lifecycle backstop in `lifecycle`, the report rows
in `rows`, the I/O in `apply` and `sync-ci cleanup` in `command`; this package re-exports them.
"""

from __future__ import annotations

from sync_ci.cleanup.apply import (
    BATCHES_IN_FLIGHT,
    DELETE_ATTEMPTS,
    PERMANENT_DELETE_CODES,
    RETRY_BASE_DELAY_S,
    Progress,
    apply_plan,
    delete_batch,
    fetch_listing,
    run_cleanup,
)
from sync_ci.cleanup.command import add_parser, command
from sync_ci.cleanup.lifecycle import (
    ABORT_UPLOADS_AFTER_DAYS,
    LIFECYCLE_RULE_ID,
    install_lifecycle,
    lifecycle_rule,
    merge_lifecycle,
    retention_days,
    summarize_lifecycle,
)
from sync_ci.cleanup.model import (
    DEFAULT_OLDER_THAN,
    SUITE,
    CleanupRun,
    Doomed,
    Listing,
    Outcome,
    Plan,
    PlanRefused,
    PrefixPlan,
)
from sync_ci.cleanup.plan import (
    MAX_OLDER_THAN,
    assert_plan_safe,
    check_max_delete,
    check_roots,
    failed_entries,
    make_batches,
    parse_max_delete,
    parse_now,
    parse_older_than,
    plan_cleanup,
)
from sync_ci.cleanup.rows import (
    FAILED_KEYS_IN_JSON,
    FAILED_ROWS,
    format_age,
    format_bytes,
    summarize_run,
    totals,
)

__all__ = [
    "ABORT_UPLOADS_AFTER_DAYS",
    "BATCHES_IN_FLIGHT",
    "DEFAULT_OLDER_THAN",
    "DELETE_ATTEMPTS",
    "FAILED_KEYS_IN_JSON",
    "FAILED_ROWS",
    "LIFECYCLE_RULE_ID",
    "MAX_OLDER_THAN",
    "PERMANENT_DELETE_CODES",
    "RETRY_BASE_DELAY_S",
    "SUITE",
    "CleanupRun",
    "Doomed",
    "Listing",
    "Outcome",
    "Plan",
    "PlanRefused",
    "PrefixPlan",
    "Progress",
    "add_parser",
    "apply_plan",
    "assert_plan_safe",
    "check_max_delete",
    "check_roots",
    "command",
    "delete_batch",
    "failed_entries",
    "fetch_listing",
    "format_age",
    "format_bytes",
    "install_lifecycle",
    "lifecycle_rule",
    "make_batches",
    "merge_lifecycle",
    "parse_max_delete",
    "parse_now",
    "parse_older_than",
    "plan_cleanup",
    "retention_days",
    "run_cleanup",
    "summarize_lifecycle",
    "summarize_run",
    "totals",
]
