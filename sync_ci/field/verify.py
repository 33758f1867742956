"""`verify`: the seed's "How to verify it's working", automated for one role.

One module of about 400 lines on purpose: its steps are one walk-through (the cron entry, the
installed line run as cron runs it, an alert seen in status, the lints, the cleanup plan)
that reads top to bottom in the order the seed lists them.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.errors import SyncCIError, UsageError
from sync_ci.report import Report, Result, make_report

if TYPE_CHECKING:
    from sync_ci.config import Settings
    from sync_ci.field.cron_lines import Role
    from sync_ci.report import Status
    from sync_ci.report_emit import Outputs

VERIFY_CHECK = "verify-simulated-doctor-failure"
RETENTION = timedelta(days=7)
LINT_TIMEOUT_S = 300.0


def verify_crontab(role: str, cron_user: str = "") -> Result:
    """`crontab -l` shows the role's entry, and it is sane for the user cron runs it as."""
    from sync_ci.field.cron_access import account_for
    from sync_ci.field.cron_lines import ROLES, evaluate_entry, find_block
    from sync_ci.field.cron_table import read_crontab

    title = f"crontab -l shows the {role} entry"
    if role not in ROLES:
        raise UsageError(f"role {role!r} is unknown; use maintainer or tenant")
    try:
        text = read_crontab(cron_user)
        block = find_block(text, "maintainer" if role == "maintainer" else "tenant")
    except SyncCIError as exc:
        return Result(id="crontab", title=title, status="fail", detail=str(exc))
    if block is None:
        return Result(
            id="crontab",
            title=title,
            status="fail",
            detail=f"no {role} entry; run: sync-ci cron install --role {role}",
        )
    sane = evaluate_entry(text, account=account_for(cron_user))
    return Result(
        id="crontab",
        title=title,
        status=sane.status,
        detail=block.jobs[0] if block.jobs and sane.status == "pass" else sane.detail,
    )


def _stamp(path: Path) -> tuple[int, bytes] | None:
    """Return what tells one write of `path` from the next (mtime and content), None if absent."""
    try:
        return path.stat().st_mtime_ns, path.read_bytes()
    except OSError:
        return None


def verify_job(role: str, cron_user: str = "", *, live: bool = False) -> Result:
    """Run the installed line as cron runs it, and check the job really ran (took its lock).

    On `live` the tenant line's `|| sync-ci alert doctor-failed` half is not run: verify never
    writes to production. The maintainer's ci-loop is read-only whatever the target.
    """
    from sync_ci.field.cron_access import account_for
    from sync_ci.field.cron_lines import find_block, parse_job
    from sync_ci.field.cron_table import read_crontab, run_job
    from sync_ci.field.last_doctor import LAST_DOCTOR
    from sync_ci.locks import lock_is_held, lock_path

    chosen: Role = "maintainer" if role == "maintainer" else "tenant"
    title = f"the installed {role} line runs as cron runs it"

    def row(status: Status, detail: str, **observed: Any) -> Result:
        return Result(id="cron-job", title=title, status=status, detail=detail, observed=observed)

    try:
        text = read_crontab(cron_user)
        block = find_block(text, chosen)
    except SyncCIError as exc:
        return row("fail", str(exc))
    if block is None or len(block.jobs) != 1:
        return row("skip", f"no single {role} line to run (see the crontab row)")
    try:
        job = parse_job(chosen, block.jobs[0])
    except ValueError as exc:
        return row("fail", f"the {role} line does not parse ({exc})")
    state = job.exports.get("SYNC_CI_STATE_DIR", "")
    if not state.startswith("/"):
        return row(
            "fail",
            f"the {role} line names no absolute SYNC_CI_STATE_DIR, so its lock cannot be found; "
            f"reinstall: sync-ci cron install --role {role}",
        )
    lock = lock_path(Path(state), "ci-loop" if chosen == "maintainer" else "doctor")
    if lock_is_held(lock):
        return row("skip", f"a run holds {lock} right now; run verify again once it is done")
    note = ""
    if live and chosen == "tenant":
        job = replace(job, command=job.command.partition(" || ")[0])
        note = (
            "; the `|| sync-ci alert doctor-failed` half was not run (verify never writes on live)"
        )
    account = account_for(cron_user)
    report_file = Path(state) / LAST_DOCTOR
    before, report_before = _stamp(lock), _stamp(report_file)
    try:
        done = run_job(job, text, account)
    except (OSError, SyncCIError) as exc:
        return row("fail", f"could not run the {role} line as {account.name}: {exc}")
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()
    tail = said[-1] if said else "no output"
    if _stamp(lock) == before:
        return row(
            "fail",
            f"exit {done.returncode}, but the job never took its lock {lock}, so it did not run: "
            f"{tail}",
            exit=done.returncode,
        )
    if chosen == "maintainer":
        lines = done.stdout.strip().splitlines()
        summary = lines[-1] if lines else tail
        return row(
            "pass" if done.returncode == 0 else "fail",
            f"ci-loop ran as {account.name}, exit {done.returncode}: {summary}",
            exit=done.returncode,
        )
    if _stamp(report_file) == report_before:
        return row("fail", f"doctor ran as {account.name} but left no {report_file}: {tail}")
    try:
        document = json.loads(report_file.read_text(encoding="utf-8"))
        results = document["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return row("fail", f"doctor's report {report_file} is unreadable ({exc})")
    failing = [str(r.get("id")) for r in results if r.get("status") in ("fail", "error")]
    if failing:
        return row(
            "fail",
            f"doctor ran as {account.name} and {len(failing)} checks fail: "
            f"{', '.join(failing)}{note}",
            exit=done.returncode,
        )
    return row(
        "pass" if done.returncode == 0 else "fail",
        f"doctor ran as {account.name}: {len(results)} checks, none failing, exit "
        f"{done.returncode}{note}",
        exit=done.returncode,
    )


def verify_alert(settings: Settings, *, now: datetime) -> Result:
    """A simulated doctor failure POSTs an alert that then shows in /_status (never on live)."""
    from sync_ci.field.alerts import send_alert
    from sync_ci.field.status import fetch_status

    title = "simulated doctor failure appears in /_status"
    if settings.read_only:
        return Result(
            id="alert-in-status",
            title=title,
            status="skip",
            detail=f"skipped on {settings.target}: verify never writes to production (the "
            "simulated alert would POST /_alert); `sync-ci status` shows what tenants sent",
        )
    if not settings.secrets.admin_token:
        return Result(
            id="alert-in-status",
            title=title,
            status="skip",
            detail="no admin token (SYNC_CI_ADMIN_TOKEN) to read /_status",
        )
    if not settings.tenant_id or not (
        settings.secrets.tenant_token or settings.secrets.tenant_secret
    ):
        return Result(
            id="alert-in-status",
            title=title,
            status="skip",
            detail="no tenant id and token to alert with",
        )
    marker = secrets.token_hex(6)
    sent = send_alert(settings, VERIFY_CHECK, f"simulated by sync-ci verify ({marker})", now=now)
    if not sent.new_delivered:
        return Result(
            id="alert-in-status",
            title=title,
            status="fail",
            detail=f"alert not delivered: {sent.error} ({sent.pending} spooled)",
        )
    try:
        stats = (fetch_status(settings).get("checks") or {}).get(VERIFY_CHECK) or {}
    except SyncCIError as exc:
        return Result(id="alert-in-status", title=title, status="fail", detail=str(exc))
    seen = marker in str(stats.get("last_message", ""))
    return Result(
        id="alert-in-status",
        title=title,
        status="pass" if seen else "fail",
        detail=f"{VERIFY_CHECK}: count {stats.get('count', 0)}, tenants {stats.get('tenants')}"
        if seen
        else f"/_status does not show alert {marker} under {VERIFY_CHECK}",
        observed={"count": stats.get("count", 0)},
    )


def verify_lints(repo: Path) -> Result:
    """The workflow and repository pass the PR-time lints (`python -m checks --scope repo`)."""
    title = "workflow and repository pass the lints"
    if not (repo / "checks" / "__main__.py").is_file():
        return Result(
            id="lints",
            title=title,
            status="skip",
            detail=f"no lint runner at {repo / 'checks' / '__main__.py'}",
        )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "checks", "--scope", "repo"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=LINT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return Result(
            id="lints",
            title=title,
            status="error",
            detail=f"lints did not finish in {LINT_TIMEOUT_S:g} s",
        )
    tail = (done.stdout.strip().splitlines() or [""])[-1]
    return Result(
        id="lints",
        title=title,
        status="pass" if done.returncode == 0 else "fail",
        detail=f"exit {done.returncode}: {tail}",
    )


def verify_cleanup(settings: Settings, *, now: datetime) -> Result:
    """A cleanup dry run with an injected clock would remove a 7-day-old CI prefix, and only it."""
    title = "cleanup dry run: a 7-day-old CI prefix would go"
    try:
        from sync_ci.cleanup import Listing, plan_cleanup
        from sync_ci.store import VersionInfo
    except ImportError as exc:
        return Result(
            id="cleanup", title=title, status="skip", detail=f"no cleanup planner ({exc})"
        )
    ci_root = settings.ci_root
    listing: Listing | None = None
    source = "synthetic listing"
    if settings.bucket and settings.secrets.access_key_id:
        from sync_ci.cleanup import fetch_listing
        from sync_ci.guards import read_only_policy
        from sync_ci.store import endpoint_from_settings, open_store

        try:
            store = open_store(endpoint_from_settings(settings), read_only_policy())
            listing = fetch_listing(store, ci_root)
            source = f"listing of {settings.bucket}/{ci_root}"
        except SyncCIError as exc:
            return Result(id="cleanup", title=title, status="fail", detail=f"cannot list: {exc}")
    if listing is None or not listing.versions:
        old, fresh = secrets.token_hex(20), secrets.token_hex(20)
        listing = Listing(
            versions=(
                VersionInfo(
                    key=f"{ci_root}{old}/run.json",
                    version_id="null",
                    size=10,
                    last_modified=now - RETENTION - timedelta(hours=1),
                ),
                VersionInfo(
                    key=f"{ci_root}{fresh}/run.json",
                    version_id="null",
                    size=10,
                    last_modified=now - timedelta(days=1),
                ),
            )
        )
        if source != "synthetic listing":
            source += " (empty, so a synthetic one)"
        injected = now
    else:
        newest = max(v.last_modified for v in listing.versions)
        injected = newest + RETENTION + timedelta(hours=1)
    plan = plan_cleanup(listing, injected, RETENTION, ci_root)
    ci = [p for p in plan.prefixes if p.kind == "ci"]
    wrong = [
        p.prefix for p in ci if (p.age_s > RETENTION.total_seconds()) != (p.action == "delete")
    ]
    going = [p.prefix for p in plan.to_delete]
    ok = bool(going) and not wrong
    return Result(
        id="cleanup",
        title=title,
        status="pass" if ok else "fail",
        detail=(
            f"{source}, clock {injected:%Y-%m-%dT%H:%MZ}: {len(going)} of {len(ci)} CI "
            f"prefixes would go" + (f"; misjudged {wrong}" if wrong else "")
        ),
        observed={"to_delete": going[:5], "ci_prefixes": len(ci)},
    )


def verify(
    role: str,
    settings: Settings,
    *,
    cron_user: str = "",
    repo: Path | None = None,
    now: Callable[[], datetime] | None = None,
) -> Report:
    """Run every verification step for `role` and return the report."""
    clock = now or (lambda: datetime.now(UTC))
    started_at, started = clock(), time.perf_counter()
    steps: list[Callable[[], Result]] = [
        lambda: verify_crontab(role, cron_user),
        lambda: verify_job(role, cron_user, live=settings.read_only),
        lambda: verify_alert(settings, now=clock()),
        lambda: verify_lints(repo or Path.cwd()),
        lambda: verify_cleanup(settings, now=clock()),
    ]
    results = []
    for step in steps:
        began = time.perf_counter()
        result = step()
        results.append(replace(result, duration_s=time.perf_counter() - began))
    return make_report(
        suite="verify",
        target=settings.target,
        mode=role,
        sha=settings.sha,
        started_at=started_at,
        duration_s=time.perf_counter() - started,
        results=results,
    )


def command(
    role: str,
    *,
    config: str | None = None,
    target: str | None = None,
    cron_user: str = "",
    repo: str = "",
    outputs: Outputs | None = None,
) -> int:
    """Verify a role, print the table, return 0 when every step passed or was skipped."""
    from sync_ci.attachment import FIELD_OR_EPHEMERAL, open_target
    from sync_ci.config import load_settings
    from sync_ci.field.cron_lines import ROLES
    from sync_ci.report_emit import Outputs, emit

    if role not in ROLES:
        given = f"{role!r} is not" if role else "is required:"
        raise UsageError(f"--role {given} one of {', '.join(ROLES)}")
    settings = load_settings(config=config, target=target, check_remote=False)
    # A fresh checkout (sandbox, no SYNC_CI_SANDBOX) runs the whole list on an ephemeral sandbox.
    with open_target(settings, FIELD_OR_EPHEMERAL) as attached:
        report = verify(role, attached, cron_user=cron_user, repo=Path(repo) if repo else None)
    return emit(report, outputs or Outputs())


def add_parser(sub: Any) -> None:
    """Register `verify`."""
    from sync_ci.options import add_common

    parser = sub.add_parser(
        "verify",
        help="automate the seed's 'how to verify it's working'",
        description="The seed's checklist for a role: the crontab shows its entry, the "
        "installed line runs as cron runs it, an alert round-trips, the lint passes, cleanup "
        "would keep the CI prefix bounded. Exit 0 when every step passed or was skipped.",
    )
    parser.add_argument(
        "--role",
        choices=("maintainer", "tenant"),
        required=True,
        help="whose checklist: maintainer (ci-loop) or tenant (doctor)",
    )
    parser.add_argument(
        "--cron-user",
        default="",
        metavar="NAME",
        help="whose crontab to look at (default: yours)",
    )
    parser.add_argument(
        "--repo", default="", metavar="DIR", help="repository to lint (default: cwd)"
    )
    add_common(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sync_ci.options import outputs

    return command(
        args.role,
        config=args.config,
        target=args.target,
        cron_user=args.cron_user,
        repo=args.repo,
        outputs=outputs(args),
    )
