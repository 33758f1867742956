"""The phase-mirror smoke: write mode under `snappy-os-ci/<sha>/`, read-only mode against live."""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sync_ci import __version__
from sync_ci.config import Settings, load_settings
from sync_ci.contract import (
    Catalog,
    build_catalog,
    catalog_key,
    object_key,
    parse_catalog,
    parse_json,
    run_key,
    sha256_hex,
    tenant_state_key,
    tenant_token,
)
from sync_ci.errors import (
    ContractError,
    GuardViolation,
    SettingsError,
    SyncCIError,
    UnreachableError,
    UsageError,
)
from sync_ci.parity import Observation, evaluate_cells, mirror_observations, mirror_path
from sync_ci.report import Report, Result, Status, make_report
from sync_ci.store import Store
from sync_ci.worker import WorkerClient, WorkerTarget, expect

Mode = Literal["write", "read-only"]
WRITE_PHASES = ("preflight", "seed", "install", "push", "pull", "parity", "alert", "status")
READ_ONLY_PHASES = ("preflight", "install", "pull-dry", "parity", "status")
SMOKE_TENANT = "ci-smoke"
DEFAULT_SAMPLE = 5


class PhaseFailed(SyncCIError):
    """A phase's own assertion did not hold."""


class Skipped(SyncCIError):
    """A phase could not run for a reason that is not a failure (e.g. no admin token)."""


@dataclass(slots=True, kw_only=True)
class SmokeRun:
    """Shared state of one smoke pass, filled in phase by phase."""

    settings: Settings
    mode: Mode
    store: Store
    worker: WorkerClient
    root: str
    mirror_dir: Path
    tenant_id: str
    tenant_token: str
    admin_token: str
    sample: int
    deadline: float
    catalog: Catalog | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    pushed: bytes = b""
    alert_key: str = ""
    worker_observations: list[Observation] = field(default_factory=list)
    bucket_observations: list[Observation] = field(default_factory=list)
    unmeasured: bool = False


def smoke_files(sha: str, nonce: str) -> dict[str, bytes]:
    """Return the small file set a write-mode smoke seeds (one file unique to this run)."""
    files = {
        "bin/snappy": b"#!/bin/sh\necho snappy\n" * 40,
        "etc/snappy.toml": b"[sync]\nchannel = 'ci'\n",
        "share/empty": b"",
        "share/blob.bin": bytes(range(256)) * 64,
        "share/unicod\u00e9 name.txt": "r\u00e9sum\u00e9 \u2713\n".encode(),
        "run/nonce.txt": f"{sha} {nonce}\n".encode(),
    }
    return files


# ---- phases (each returns a detail line or raises PhaseFailed / Skipped / a SyncCIError) ----


def phase_preflight(run: SmokeRun) -> str:
    """Check the Worker answers /_health with contract 1 and the store lists the root."""
    try:
        health = expect(run.worker.get("/_health"), 200).json()
    except UnreachableError:
        run.unmeasured = True
        raise
    if (
        not isinstance(health, dict)
        or health.get("contract", 1) != 1
        or health.get("ok") is not True
    ):
        raise PhaseFailed(
            f"Worker /_health answered {str(health)[:120]!r}, expected ok and contract 1"
        )
    try:
        next(iter(run.store.list(run.root, page_size=1)), None)
    except UnreachableError:
        run.unmeasured = True
        raise
    ray = run.worker.get("/_health").header("cf-ray")
    return f"Worker {health.get('version', '?')} at {run.worker.target.base_url} (cf-ray {ray or 'none'}); root {run.root}"


def phase_seed(run: SmokeRun) -> str:
    """Write `_ci/run.json` first, then content-addressed objects, then the catalog."""
    settings = run.settings
    stamp = {
        "sha": settings.sha,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": secrets.token_hex(8),
    }
    run.store.put(run_key(run.root), json.dumps(stamp).encode(), "application/json")
    catalog, blobs = build_catalog(smoke_files(settings.sha, stamp["run"]), generation=1)
    for digest, data in blobs.items():
        run.store.put(object_key(run.root, digest), data)
    run.store.put(catalog_key(run.root), json.dumps(catalog.to_json()).encode(), "application/json")
    run.catalog, run.blobs = catalog, blobs
    return f"{len(catalog.entries)} entries, {len(blobs)} objects under {run.root}"


def phase_install(run: SmokeRun) -> str:
    """GET /install and check its manifest (against the seed in write mode, the bucket when read-only)."""
    manifest = expect(run.worker.get("/install"), 200).json()
    if not isinstance(manifest, dict) or manifest.get("schema", 1) != 1:
        raise ContractError(f"/install manifest is not a contract v1 object: {str(manifest)[:120]}")
    served = parse_catalog(
        {"schema": 1, "generation": manifest.get("generation"), "entries": manifest.get("entries")},
        "/install manifest",
    )
    if run.mode == "write":
        assert run.catalog is not None
        if served != run.catalog:
            raise PhaseFailed(
                f"/install serves generation {served.generation} with {len(served.entries)} entries; "
                f"seeded generation {run.catalog.generation} with {len(run.catalog.entries)}"
            )
    else:
        raw = run.store.get(catalog_key(run.root))
        if raw is None:
            raise PhaseFailed(f"{catalog_key(run.root)} is missing from the bucket")
        run.catalog = parse_catalog(parse_json(raw, catalog_key(run.root)), catalog_key(run.root))
    return f"generation {served.generation}, {len(served.entries)} entries"


def phase_push(run: SmokeRun) -> str:
    """POST a 10 KB tenant state and read it back from the bucket byte for byte."""
    body = json.dumps(
        {"tenant": run.tenant_id, "sha": run.settings.sha, "pad": secrets.token_hex(5 * 1024)},
        separators=(",", ":"),
    ).encode()
    answer = run.worker.post("/_push", data=body, headers=tenant_headers(run), retry=False)
    expect(answer, 201)
    stored = run.store.get(tenant_state_key(run.root, run.tenant_id))
    if stored != body:
        raise PhaseFailed(
            f"bucket holds {len(stored or b'')} bytes at {tenant_state_key(run.root, run.tenant_id)}, "
            f"pushed {len(body)}"
        )
    run.pushed = body
    return f"{len(body)} bytes as tenant {run.tenant_id}"


def phase_pull(run: SmokeRun) -> str:
    """Download every object through the Worker into the local mirror, checking each sha256."""
    assert run.catalog is not None
    fetched = 0
    for entry in run.catalog.entries:
        data = fetch_object(run, entry.sha256)
        target = mirror_path(run.mirror_dir, entry.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        fetched += len(data)
    return f"{len(run.catalog.entries)} files, {fetched} bytes into {run.mirror_dir}"


def phase_pull_dry(run: SmokeRun) -> str:
    """Say what a pull would change against the local mirror, writing nothing; verify a sample."""
    assert run.catalog is not None
    mirror = {o.artifact: o.digest for o in mirror_observations(run.catalog, run.mirror_dir)}
    plan = plan_pull(run.catalog, mirror)
    sampled = sample_entries(run.catalog, run.sample)
    for entry in sampled:
        fetch_object(run, entry.sha256)
    return (
        f"would add {plan['add']}, update {plan['update']}, keep {plan['keep']} "
        f"(mirror {run.mirror_dir}); {len(sampled)} sampled objects verified"
    )


def phase_parity(run: SmokeRun) -> tuple[str, list[Result]]:
    """Compare the catalog and objects across bucket, Worker and mirror."""
    assert run.catalog is not None
    catalog_raw = run.store.get(catalog_key(run.root))
    bucket_catalog = sha256_hex(canonical_catalog(catalog_raw)) if catalog_raw else "missing"
    worker_catalog = sha256_hex(
        json.dumps(expect(run.worker.get("/catalog"), 200).json(), sort_keys=True).encode()
    )
    observations = [
        Observation(artifact="catalog.json", surface="bucket", digest=bucket_catalog),
        Observation(artifact="catalog.json", surface="worker", digest=worker_catalog),
    ]
    entries = (
        run.catalog.entries if run.mode == "write" else sample_entries(run.catalog, run.sample)
    )
    expected = {}
    for entry in entries:
        expected[entry.name] = entry.sha256
        raw = run.store.get(object_key(run.root, entry.sha256))
        observations.append(
            Observation(
                artifact=entry.name,
                surface="bucket",
                digest=sha256_hex(raw) if raw is not None else "missing",
            )
        )
        answer = run.worker.get(f"/o/{entry.sha256}")
        observations.append(
            Observation(
                artifact=entry.name,
                surface="worker",
                digest=sha256_hex(answer.body) if answer.status == 200 else "missing",
            )
        )
    mirror = [o for o in mirror_observations(run.catalog, run.mirror_dir) if o.artifact in expected]
    if run.mode == "write" or any(o.digest != "missing" for o in mirror):
        observations += mirror
    if run.pushed:
        state = run.store.get(tenant_state_key(run.root, run.tenant_id))
        observations += [
            Observation(
                artifact=f"tenants/{run.tenant_id}/state.json",
                surface="bucket",
                digest=sha256_hex(state) if state is not None else "missing",
            ),
            Observation(
                artifact=f"tenants/{run.tenant_id}/state.json",
                surface="mirror",
                digest=sha256_hex(run.pushed),
            ),
        ]
    cells = evaluate_cells(observations, expected=expected)
    failing = [c for c in cells if c.status == "fail"]
    passed = sum(c.status == "pass" for c in cells)
    detail = f"{passed} cells equal" + (
        f", {len(failing)} differ: {failing[0].title}" if failing else ""
    )
    if failing:
        raise PhaseFailedWithCells(detail, cells)
    return detail, cells


class PhaseFailedWithCells(PhaseFailed):
    """Parity failed; the cells travel with the error so the matrix still renders."""

    def __init__(self, message: str, cells: list[Result]) -> None:
        super().__init__(message)
        self.cells = cells


def phase_alert(run: SmokeRun) -> str:
    """POST an alert, then the same key again: stored once."""
    run.alert_key = f"smoke-{run.settings.sha[:12]}-{secrets.token_hex(6)}"
    body = {
        "check": "smoke-roundtrip",
        "message": f"sync-ci smoke alert round trip for {run.settings.sha[:12]}",
        "host": socket.gethostname(),
        "version": __version__,
        "ts": datetime.now(UTC).isoformat(timespec="seconds"),
        "idempotency_key": run.alert_key,
    }
    first = expect(
        run.worker.post("/_alert", json_body=body, headers=tenant_headers(run), retry=False), 202
    )
    second = expect(
        run.worker.post("/_alert", json_body=body, headers=tenant_headers(run), retry=False), 200
    )
    return f"202 then {second.status} for key {run.alert_key} ({first.elapsed_s * 1000:.0f} ms)"


def phase_status(run: SmokeRun) -> str:
    """GET /_status as admin; in write mode the round-trip alert must be there."""
    if not run.admin_token:
        raise Skipped("no admin token (SYNC_CI_ADMIN_TOKEN): /_status not checked")
    status = expect(
        run.worker.get("/_status", headers={"authorization": f"Bearer {run.admin_token}"}), 200
    ).json()
    checks = status.get("checks", {}) if isinstance(status, dict) else {}
    if run.mode == "write":
        entry = checks.get("smoke-roundtrip") if isinstance(checks, dict) else None
        if not entry or run.tenant_id not in entry.get("tenants", []):
            raise PhaseFailed("/_status does not show the smoke-roundtrip alert from this run")
        return f"smoke-roundtrip seen {entry.get('count')} time(s) across {len(entry.get('tenants', []))} tenant(s)"
    return (
        f"{len(checks)} check(s) alerting, {len(status.get('silent_tenants', []))} silent tenant(s)"
    )


# ---- helpers of the phases ----


def tenant_headers(run: SmokeRun) -> dict[str, str]:
    """Tenant auth headers of contract v1."""
    if not run.tenant_token:
        raise Skipped(
            "no tenant secret or token (SYNC_CI_TENANT_SECRET): push and alert not checked"
        )
    return {"x-sync-tenant": run.tenant_id, "authorization": f"Bearer {run.tenant_token}"}


def fetch_object(run: SmokeRun, digest: str) -> bytes:
    """GET /o/<sha256> and verify the bytes hash to their name."""
    answer = expect(run.worker.get(f"/o/{digest}"), 200)
    actual = sha256_hex(answer.body)
    if actual != digest:
        raise PhaseFailed(
            f"/o/{digest[:12]}… served {len(answer.body)} bytes hashing to {actual[:12]}…"
        )
    return answer.body


def canonical_catalog(raw: bytes) -> bytes:
    """Re-serialise a catalog so bucket and Worker copies compare by content, not formatting."""
    return json.dumps(parse_json(raw, "catalog"), sort_keys=True).encode()


def plan_pull(catalog: Catalog, mirror: dict[str, str | None]) -> dict[str, int]:
    """Count what a pull would add, update or keep."""
    plan = {"add": 0, "update": 0, "keep": 0}
    for entry in catalog.entries:
        have = mirror.get(entry.name)
        key = "add" if have in (None, "missing") else "keep" if have == entry.sha256 else "update"
        plan[key] += 1
    return plan


def sample_entries(catalog: Catalog, sample: int) -> tuple[Any, ...]:
    """Pick up to `sample` entries spread evenly over the catalog (0 means all)."""
    entries = catalog.entries
    if sample <= 0 or sample >= len(entries):
        return entries
    step = len(entries) / sample
    return tuple(entries[int(i * step)] for i in range(sample))


# ---- running ----

PhaseFn = Callable[[SmokeRun], Any]
PHASES: dict[str, PhaseFn] = {
    "preflight": phase_preflight,
    "seed": phase_seed,
    "install": phase_install,
    "push": phase_push,
    "pull": phase_pull,
    "pull-dry": phase_pull_dry,
    "parity": phase_parity,
    "alert": phase_alert,
    "status": phase_status,
}
TITLES = {
    "preflight": "Worker and bucket answer",
    "seed": "seed the CI prefix (run.json first)",
    "install": "install manifest served",
    "push": "tenant push lands in the bucket",
    "pull": "pull into the local mirror",
    "pull-dry": "dry pull against the local mirror",
    "parity": "parity matrix",
    "alert": "alert round trip (idempotent)",
    "status": "status aggregates alerts",
}


def run_phases(run: SmokeRun, *, retry_failed: bool = False) -> tuple[list[Result], list[Result]]:
    """Run every phase of the mode in order; return the phase rows and the parity cells."""
    names = WRITE_PHASES if run.mode == "write" else READ_ONLY_PHASES
    rows: list[Result] = []
    cells: list[Result] = []
    blocked = ""
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
        row, phase_cells = run_one(run, name)
        if row.status == "fail" and retry_failed and not run.unmeasured:
            retry, retry_cells = run_one(run, name)
            if retry.status == "pass":
                row = Result(
                    id=retry.id,
                    title=retry.title,
                    status="pass",
                    duration_s=row.duration_s + retry.duration_s,
                    detail=f"passed on retry (first try: {row.detail})",
                )
                phase_cells = retry_cells
            else:
                row, phase_cells = retry, retry_cells
        rows.append(row)
        cells.extend(phase_cells)
        if row.status in ("fail", "error") and name in ("preflight", "seed", "install"):
            blocked = f"{name} failed"
    return rows, cells


def run_one(run: SmokeRun, name: str) -> tuple[Result, list[Result]]:
    """Run one phase and turn its outcome into a row."""
    started = time.perf_counter()
    cells: list[Result] = []
    status: Status = "pass"
    try:
        outcome = PHASES[name](run)
        if isinstance(outcome, tuple):
            detail, cells = outcome
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
        ),
        cells,
    )


@contextmanager
def open_run(
    settings: Settings,
    *,
    mode: Mode,
    sample: int = DEFAULT_SAMPLE,
    budget_s: float = 600.0,
    mirror_dir: Path | None = None,
) -> Iterator[SmokeRun]:
    """Build the guarded store and Worker clients for a smoke run."""
    from sync_ci import guards
    from sync_ci.store import endpoint_from_settings, open_store

    if mode == "write" and settings.target == "live":
        raise UsageError(
            "the live target is read-only: run the smoke with --read-only (or use --target ci)"
        )
    read_only = mode == "read-only" or settings.read_only
    root = settings.live_root if mode == "read-only" else settings.ci_prefix
    if read_only:
        policy = guards.read_only_policy()
    else:
        if not guards.is_full_ci_prefix(root, settings.ci_root):
            raise SettingsError(
                f"refusing to write: {root!r} is not a full {settings.ci_root}<sha>/ prefix"
            )
        policy = guards.prefix_policy(settings.bucket, root)
    worker_url = (
        settings.preview_url
        if settings.target == "ci" and settings.preview_url
        else settings.worker_url
    )
    if not worker_url:
        raise SettingsError(
            f"target {settings.target} needs a Worker URL: set SYNC_CI_WORKER_URL (or SYNC_CI_PREVIEW_URL for ci)"
        )
    token = settings.secrets.tenant_token
    tenant = settings.tenant_id or SMOKE_TENANT
    if not token and settings.secrets.tenant_secret:
        token = tenant_token(settings.secrets.tenant_secret, tenant)
    store = open_store(endpoint_from_settings(settings), policy)
    worker = WorkerClient(
        WorkerTarget(
            base_url=worker_url,
            read_only=read_only,
            timeout_s=settings.worker_timeout_s,
            root=root,
            allowed_posts=() if read_only else ("/_push", "/_alert"),
        )
    )
    with ExitStack() as stack:
        stack.callback(worker.close)
        if mirror_dir is None and mode == "read-only":
            mirror_dir = settings.mirror_dir
        elif mirror_dir is None:
            import tempfile

            # A write-mode pull fills a throwaway mirror: the run leaves nothing on the machine.
            mirror_dir = (
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sync-ci-smoke-")))
                / "mirror"
            )
        yield SmokeRun(
            settings=settings,
            mode=mode,
            store=store,
            worker=worker,
            root=root,
            mirror_dir=mirror_dir,
            tenant_id=tenant,
            tenant_token=token,
            admin_token=settings.secrets.admin_token,
            sample=sample,
            deadline=time.monotonic() + budget_s,
        )


def run_smoke(
    settings: Settings,
    *,
    mode: Mode,
    sample: int = DEFAULT_SAMPLE,
    budget_s: float = 600.0,
    retry_failed: bool = False,
    mirror_dir: Path | None = None,
) -> Report:
    """Run the smoke against already-attached settings and return its report."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
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
        extra={
            "root": run.root,
            "parity": [c.to_json() for c in cells],
            "unmeasured": run.unmeasured,
        },
    )


def command(
    *,
    target: str | None,
    config: str | None,
    read_only: bool,
    sample: int,
    faults: list[str],
    budget_s: float,
    args: argparse.Namespace,
) -> int:
    """Resolve settings, attach the target, run the smoke, print the table and matrix."""
    from sync_ci.cli import parse_assignments
    from sync_ci.report import emit
    from sync_ci.sandbox.attach import attach

    settings = load_settings(config=config, target=target)
    if faults and settings.target != "sandbox":
        raise UsageError("--fault only applies to the sandbox target")
    if sample < 0:
        raise UsageError(f"--sample {sample} must be 0 (all) or a positive count")
    mode: Mode = "read-only" if read_only or settings.read_only else "write"
    with attach(settings, faults=parse_assignments(faults, "--fault"), ci_worker=True) as attached:
        report = run_smoke(attached, mode=mode, sample=sample, budget_s=budget_s)
    code = emit(report, args)
    parity = [Result(**_result_args(c)) for c in report.extra.get("parity", [])]
    if parity and not getattr(args, "quiet", False):
        from sync_ci.parity import render_parity

        print(render_parity(parity))
    return code


def _result_args(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        k: doc[k]
        for k in ("id", "title", "status", "duration_s", "detail", "observed", "threshold")
    }


def add_parser(sub: Any) -> None:
    """Register `sync-ci smoke`."""
    from sync_ci.cli import add_common

    parser = sub.add_parser(
        "smoke",
        help="run the phase-mirror smoke (write mode under snappy-os-ci/<sha>/, or --read-only)",
        description="Phase-mirror smoke. Write mode (sandbox, ci): preflight, seed, install, push, pull, "
        "parity, alert, status, all under snappy-os-ci/<sha>/. Read-only mode (live, ci-loop): preflight, "
        "install, pull-dry, parity, status; GET and HEAD only.",
    )
    add_common(parser)
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="GET/HEAD only against the production root (always on for live)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help="objects to verify in read-only mode (0: all; default %(default)s)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sandbox only: start it with this fault (5xx_rate, latency_ms, bucket_latency_ms)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="bound on the whole run (default %(default)s)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return command(
        target=args.target,
        config=args.config,
        read_only=args.read_only,
        sample=args.sample,
        faults=args.fault,
        budget_s=args.budget,
        args=args,
    )
