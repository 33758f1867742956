"""Doctor checks of what runs beside the mirror: the cron entry, mirror parity, the alert spool
and the field-scope lint rules.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sync_ci.errors import SyncCIError
from sync_ci.field.doctor_context import Context, Skip, new_row
from sync_ci.report import Result, Status


def summarize_parity(cells: Sequence[Result]) -> list[Result]:
    """Collapse parity cells: one summary row plus every failing cell (those count as failures)."""
    failing = [c for c in cells if c.status in ("fail", "error")]
    passed = sum(c.status == "pass" for c in cells)
    skipped = sum(c.status == "skip" for c in cells)
    status: Status = "fail" if failing else ("pass" if passed else "skip")
    summary = Result(
        id="mirror-parity",
        title="local mirror matches the Worker catalog",
        status="skip" if failing else status,
        detail=f"{passed} cells agree, {len(failing)} differ, {skipped} skipped (bucket cells need "
        "bucket credentials)"
        if cells
        else "the Worker catalog is empty",
        observed={"pass": passed, "fail": len(failing), "skip": skipped},
    )
    return [summary, *failing] if failing else [summary]


def check_cron(ctx: Context) -> list[Result]:
    """The crontab holds one sane sync-ci entry."""
    from sync_ci.field.cron_lines import evaluate_entry

    try:
        text = ctx.crontab()
    except SyncCIError as exc:
        return [new_row("cron-entry", "cron entry installed and sane", "fail", str(exc))]
    return [evaluate_entry(text)]


def check_parity(ctx: Context) -> list[Result]:
    """Worker catalog against the local mirror (parity-matrix cells a tenant can reach)."""
    settings = ctx.need_settings()
    if not settings.mirror_dir.is_dir():
        raise Skip(f"no local mirror at {settings.mirror_dir}")
    ctx.reachable()
    from sync_ci.contract import parse_catalog
    from sync_ci.parity import Observation, evaluate_cells, mirror_observations
    from sync_ci.worker import expect

    try:
        answer, why = ctx.get("/catalog")  # the read path's answer, not a second request
        if answer is None:
            raise SyncCIError(why)
        catalog = parse_catalog(expect(answer, 200).json(), "Worker /catalog")
        advertised = [
            Observation(artifact=e.name, surface="worker", digest=e.sha256) for e in catalog.entries
        ]
        cells = evaluate_cells(advertised + mirror_observations(catalog, settings.mirror_dir))
    except SyncCIError as exc:
        return [
            new_row("mirror-parity", "local mirror matches the Worker catalog", "fail", str(exc))
        ]
    return summarize_parity(cells)


def check_spool(ctx: Context) -> list[Result]:
    """Deliver spooled alerts; fail if any remain undelivered."""
    from sync_ci.field.alerts import Spool, flush_spool

    settings = ctx.need_settings()
    title = "no undelivered alerts in the spool"
    spool = Spool(ctx.need_state_dir())
    if not spool.pending():
        dropped = spool.dropped()
        if dropped:
            return [
                new_row("alert-spool", title, "fail", f"{dropped} alerts were dropped (spool full)")
            ]
        return [new_row("alert-spool", title, "pass", "spool empty")]
    result = flush_spool(settings)
    status: Status = "fail" if result.pending or result.dropped else "pass"
    detail = f"delivered {result.delivered}, {result.pending} still waiting in {spool.dir}"
    if result.dropped:
        detail += f", {result.dropped} dropped (spool full)"
    if result.error:
        detail += f": {result.error}"
    return [
        Result(
            id="alert-spool",
            title=title,
            status=status,
            detail=detail,
            observed={
                "delivered": result.delivered,
                "pending": result.pending,
                "dropped": result.dropped,
            },
        )
    ]


def check_lints(ctx: Context) -> list[Result]:
    """Every field-scope rule of the lint catalogue."""
    from checks.catalogue import field_subject, run_rules, to_results

    settings = ctx.settings
    files = [Path(settings.config_path)] if settings and settings.config_path else []
    if settings is not None:
        secrets_path = str(settings.secrets_file or "")
    else:
        # Settings that did not load still name the file to lint (it may be why they did not).
        secrets_path = os.environ.get("SYNC_CI_SECRETS_FILE", "")
    try:
        crontab = ctx.crontab()
    except SyncCIError:
        crontab = ""
    subject = field_subject(
        crontab=crontab, files=files, secret_files=[Path(secrets_path)] if secrets_path else []
    )
    return to_results(run_rules(scope="field", subject=subject))
