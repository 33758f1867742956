"""`sync-ci smoke`, the phase-mirror smoke: which phases each mode runs and in what order, the
runner (retry, a blocked run's skipped rows) and the command. The phases live in `smoke_catalog`,
`smoke_tenant` and `smoke_mirror` (the conformance phase here hands over to `sync_ci.conformance`);
the run's state in `smoke_run`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sync_ci.config import Settings, load_settings
from sync_ci.conformance import run_smoke_phase
from sync_ci.errors import GuardViolation, SyncCIError, UsageError
from sync_ci.options import BUDGET_S, number, within
from sync_ci.report import Report, Result, Status, make_report
from sync_ci.report_emit import Outputs
from sync_ci.smoke_catalog import (
    phase_catalog,
    phase_freshness,
    phase_install,
    phase_preflight,
    phase_seed,
)
from sync_ci.smoke_mirror import phase_parity, phase_pull, phase_pull_dry
from sync_ci.smoke_run import (
    DEFAULT_BUDGET_S,
    DEFAULT_SAMPLE,
    Mode,
    PhaseFailed,
    PhaseFailedWithCells,
    PhaseOutcome,
    Skipped,
    SmokeRun,
    open_run,
)
from sync_ci.smoke_tenant import (
    phase_alert,
    phase_push,
    phase_reject_alert_controls,
    phase_reject_bad_token,
    phase_reject_cross_tenant,
    phase_reject_oversize,
    phase_reject_status_anon,
    phase_status,
)

WRITE_PHASES = (
    "preflight",
    "seed",
    "install",
    "catalog",
    "freshness",
    "push",
    "reject-bad-token",
    "reject-cross-tenant",
    "reject-oversize",
    "pull",
    "parity",
    "alert",
    "reject-alert-controls",
    "status",
    "reject-status-anon",
    # Last, so a mutant's first failing row is the targeted phase's, never a generated case.
    "conformance",
)
READ_ONLY_PHASES = ("preflight", "install", "catalog", "pull-dry", "parity", "status")
# The range of --sample: argparse's `type=`, and the check of a typed caller's value.
SAMPLE = number(int, minimum=0, maximum=1_000_000)


def phase_conformance(run: SmokeRun) -> PhaseOutcome:
    """A few generated requests per operation of docs/contract.openapi.yaml, seeded by the commit."""
    budget_s = max(min(run.conformance_budget_s, run.deadline - time.monotonic()), 1e-3)
    verdict = run_smoke_phase(run.settings, budget_s=budget_s)
    if verdict.status == "skip":
        raise Skipped(verdict.detail)
    if verdict.status != "pass":
        raise PhaseFailed(verdict.detail)
    return PhaseOutcome(detail=verdict.detail, observed=verdict.observed)


PhaseFn = Callable[[SmokeRun], Any]
PHASES: dict[str, PhaseFn] = {
    "preflight": phase_preflight,
    "seed": phase_seed,
    "install": phase_install,
    "catalog": phase_catalog,
    "freshness": phase_freshness,
    "push": phase_push,
    "reject-bad-token": phase_reject_bad_token,
    "reject-cross-tenant": phase_reject_cross_tenant,
    "reject-oversize": phase_reject_oversize,
    "reject-alert-controls": phase_reject_alert_controls,
    "reject-status-anon": phase_reject_status_anon,
    "pull": phase_pull,
    "pull-dry": phase_pull_dry,
    "parity": phase_parity,
    "alert": phase_alert,
    "status": phase_status,
    "conformance": phase_conformance,
}


TITLES = {
    "preflight": "Worker and bucket answer",
    "seed": "seed the CI prefix (run.json first)",
    "install": "install manifest served in every region",
    "catalog": "catalog served and KV misses honestly in every region",
    "freshness": "a new generation is served within the freshness bound",
    "push": "tenant push lands in the bucket",
    "reject-bad-token": "a push with a wrong token is refused (401)",
    "reject-cross-tenant": "one tenant cannot write another's state (401/403)",
    "reject-oversize": "a push over the size limit is refused (413)",
    "reject-alert-controls": "an alert with control characters is refused (400)",
    "reject-status-anon": "/_status without the admin token is refused (401)",
    "pull": "pull into the local mirror",
    "pull-dry": "dry pull against the local mirror",
    "parity": "parity matrix",
    "alert": "alert round trip (idempotent)",
    "status": "status aggregates alerts",
    "conformance": "generated requests conform to the OpenAPI contract",
}


def run_phases(run: SmokeRun, *, retry_failed: bool = False) -> tuple[list[Result], list[Result]]:
    """Run every phase of the mode in order; return the phase rows and the parity cells."""
    from sync_ci import progress

    names = WRITE_PHASES if run.mode == "write" else READ_ONLY_PHASES
    rows: list[Result] = []
    cells: list[Result] = []
    blocked = ""
    shown = progress.current()
    for name in names:
        if blocked:
            rows.append(
                Result(
                    id=f"phase:{name}",
                    title=TITLES[name],
                    status="skip",
                    detail=f"not run: {blocked}",
                )
            )
            continue
        if time.monotonic() > run.deadline:
            blocked = "time budget exceeded"
            rows.append(
                Result(id=f"phase:{name}", title=TITLES[name], status="fail", detail=blocked)
            )
            continue
        shown.start(name)
        row, phase_cells = run_one(run, name)
        if row.status == "fail" and retry_failed and not run.unmeasured:
            retry, retry_cells = run_one(run, name)
            if retry.status == "pass":
                row = replace(
                    retry,
                    duration_s=row.duration_s + retry.duration_s,
                    detail=f"passed on retry (first try: {row.detail})",
                )
                phase_cells = retry_cells
            else:
                row, phase_cells = retry, retry_cells
        shown.end(name, row.status, row.duration_s)
        rows.append(row)
        cells.extend(phase_cells)
        if row.status in ("fail", "error") and (
            name in ("preflight", "seed") or run.catalog is None
        ):
            blocked = f"{name} failed"
    return rows, cells


def run_one(run: SmokeRun, name: str) -> tuple[Result, list[Result]]:
    """Run one phase and turn its outcome into a row."""
    started = time.perf_counter()
    cells: list[Result] = []
    status: Status = "pass"
    observed: dict[str, Any] = {}
    threshold: dict[str, Any] = {}
    try:
        outcome = PHASES[name](run)
        if isinstance(outcome, tuple):
            detail, cells = outcome
        elif isinstance(outcome, PhaseOutcome):
            detail, observed, threshold = outcome.detail, outcome.observed, outcome.threshold
        else:
            detail = str(outcome)
    except Skipped as exc:
        status, detail = "skip", str(exc)
    except PhaseFailedWithCells as exc:
        status, detail, cells = "fail", str(exc), exc.cells
    except GuardViolation as exc:
        status, detail = "error", f"guard refused: {exc}"
    except SyncCIError as exc:
        status, detail = "fail", str(exc)
    return (
        Result(
            id=f"phase:{name}",
            title=TITLES[name],
            status=status,
            duration_s=time.perf_counter() - started,
            detail=detail,
            observed=observed,
            threshold=threshold,
        ),
        cells,
    )


def run_smoke(
    settings: Settings,
    *,
    mode: Mode,
    sample: int = DEFAULT_SAMPLE,
    budget_s: float = DEFAULT_BUDGET_S,
    retry_failed: bool = False,
    mirror_dir: Path | None = None,
) -> Report:
    """Run the smoke against already-attached settings and return its report."""
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    with open_run(
        settings, mode=mode, sample=sample, budget_s=budget_s, mirror_dir=mirror_dir
    ) as run:
        rows, cells = run_phases(run, retry_failed=retry_failed)
    return make_report(
        suite="smoke",
        target=settings.target,
        mode=mode,
        sha=settings.sha,
        started_at=started_at,
        duration_s=time.perf_counter() - clock,
        results=rows,
        unmeasured=run.unmeasured,
        parity=cells,
        extra={"root": run.root},
    )


def command(
    *,
    target: str | None,
    config: str | None,
    read_only: bool,
    sample: int,
    faults: list[str],
    budget_s: float,
    outputs: Outputs,
) -> int:
    """Resolve settings, attach the target, run the smoke, print the table and matrix.

    `faults` are the `--fault` words as given (KEY=VALUE, parsed here). The ranges are checked
    first, as argparse checks them, so a caller other than argparse (an invoke task) is held to
    the same ones.
    """
    from sync_ci import progress
    from sync_ci.assignments import parse_assignments
    from sync_ci.attachment import SUITE, open_target
    from sync_ci.report_emit import emit

    sample = int(within(SAMPLE, sample, "--sample", "smoke"))
    budget_s = within(BUDGET_S, budget_s, "--budget", "smoke")
    settings = load_settings(config=config, target=target)
    if faults and settings.target != "sandbox":
        raise UsageError("--fault only applies to the sandbox target")
    mode: Mode = "read-only" if read_only or settings.read_only else "write"
    if mode == "read-only" and settings.target == "ci" and not settings.preview_url:
        raise UsageError(
            "--read-only on ci reads the production root through a deployed Worker, and without "
            "a preview URL ci starts a local one that serves only snappy-os-ci/<sha>/: set "
            "SYNC_CI_PREVIEW_URL, or use --target live"
        )
    with progress.showing(progress.for_outputs(outputs)) as shown:
        shown.note(f"preparing the {settings.target} target ...")
        fault_values = parse_assignments(faults, "--fault", example="5xx_rate=0.1")
        with open_target(settings, SUITE, faults=fault_values) as attached:
            report = run_smoke(attached, mode=mode, sample=sample, budget_s=budget_s)
    code = emit(report, outputs)
    if report.parity and not outputs.quiet:
        from sync_ci.parity import render_parity

        print(render_parity(report.parity))
    return code


def add_parser(sub: Any) -> None:
    """Register `sync-ci smoke`."""
    from sync_ci.options import add_budget, add_common

    parser = sub.add_parser(
        "smoke",
        help="run the phase-mirror smoke (write mode under snappy-os-ci/<sha>/, or --read-only)",
        description=f"Phase-mirror smoke. Write mode (sandbox, ci): {', '.join(WRITE_PHASES)}; "
        "every write under snappy-os-ci/<sha>/. Read-only mode (live, ci-loop): "
        f"{', '.join(READ_ONLY_PHASES)}; GET and HEAD only.",
    )
    add_common(parser)
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="GET/HEAD only against the production root (always on for live)",
    )
    parser.add_argument(
        "--sample",
        type=SAMPLE,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help="objects to verify in read-only mode, 0 to 1000000 (0: all; default %(default)s)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sandbox only: start it with this fault (5xx_rate, latency_ms, bucket_latency_ms)",
    )
    add_budget(parser, default=DEFAULT_BUDGET_S)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sync_ci.options import common

    return command(
        **common(args),
        read_only=args.read_only,
        sample=args.sample,
        faults=args.fault,
        budget_s=args.budget,
    )
