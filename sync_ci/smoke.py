"""The phase-mirror smoke: write mode under `snappy-os-ci/<sha>/`, read-only mode against live."""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sync_ci import __version__
from sync_ci.clock import utc_stamp
from sync_ci.config import Settings, load_settings
from sync_ci.conformance import SMOKE_BUDGET_S
from sync_ci.contract import (
    PUSH_LIMIT_BYTES,
    TENANT_HEADER,
    Catalog,
    build_catalog,
    catalog_key,
    colo_from_ray,
    object_key,
    parse_catalog,
    parse_json,
    run_key,
    sha256_hex,
    tenant_state_key,
)
from sync_ci.contract import tenant_headers as contract_tenant_headers
from sync_ci.errors import (
    ContractError,
    GuardViolation,
    SettingsError,
    SyncCIError,
    UnreachableError,
    UsageError,
)
from sync_ci.parity import (
    Observation,
    behind_count,
    evaluate_cells,
    mirror_observations,
    mirror_path,
)
from sync_ci.report import Outputs, Report, Result, Status, make_report
from sync_ci.store import Store
from sync_ci.target import colo_of, regions_to_ask
from sync_ci.target import tenant_token as tenant_credential
from sync_ci.target import worker_url as main_worker_url
from sync_ci.worker import Answer, WorkerClient, WorkerTarget, error_text, expect

Mode = Literal["write", "read-only"]
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
SMOKE_TENANT = "ci-smoke"
DEFAULT_SAMPLE = 5
# Contract v1: a Worker serves a newly published catalog generation within this many seconds
# (real Workers KV is eventually consistent for up to about 60 s). A Worker may declare a
# tighter bound as `catalog_ttl_s` in /_health and is then held to it.
FRESHNESS_BOUND_S = 60.0
FIRST_POLL_S = 0.05
MAX_POLL_S = 1.0


class PhaseFailed(SyncCIError):
    """A phase's own assertion did not hold."""


class Skipped(SyncCIError):
    """A phase could not run for a reason that is not a failure (e.g. no admin token)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseOutcome:
    """A passed phase: its detail line and the values it measured."""

    detail: str
    observed: dict[str, Any] = field(default_factory=dict)
    threshold: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegionClient:
    """One region the smoke asks: its expected colo ('' when unknown) and its client."""

    colo: str
    client: WorkerClient

    @property
    def label(self) -> str:
        """The colo, or the base URL when the colo is not known."""
        return self.colo or self.client.target.base_url


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
    regions: tuple[RegionClient, ...] = ()
    freshness_bound_s: float = FRESHNESS_BOUND_S
    seeded_at: float = 0.0
    catalog: Catalog | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    pushed: bytes = b""
    alert_key: str = ""
    worker_observations: list[Observation] = field(default_factory=list)
    bucket_observations: list[Observation] = field(default_factory=list)
    unmeasured: bool = False
    conformance_budget_s: float = SMOKE_BUDGET_S


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


def phase_preflight(run: SmokeRun) -> PhaseOutcome:
    """Check /_health (contract 1, cf-ray, Date), read the declared freshness bound, list the root."""
    try:
        answer = expect(run.worker.get("/_health"), 200)
    except UnreachableError:
        run.unmeasured = True
        raise
    health = answer.json()
    if (
        not isinstance(health, dict)
        or health.get("contract", 1) != 1
        or health.get("ok") is not True
    ):
        raise PhaseFailed(
            f"Worker /_health answered {str(health)[:120]!r}, expected ok and contract 1"
        )
    main_colo = run.regions[0].colo if run.regions else ""
    ray = check_ray(answer, main_colo, "/_health")
    if not answer.header("date"):
        raise PhaseFailed(
            "Worker /_health sent no Date header; contract v1 requires one on every answer "
            "(RFC 9110 section 6.6.1), and doctor's clock check reads it"
        )
    run.freshness_bound_s = declared_bound(health.get("catalog_ttl_s"))
    try:
        next(iter(run.store.list(run.root, page_size=1)), None)
    except UnreachableError:
        run.unmeasured = True
        raise
    return PhaseOutcome(
        detail=f"Worker {health.get('version', '?')} at {run.worker.target.base_url} "
        f"(cf-ray {ray}); freshness bound {run.freshness_bound_s:g} s; root {run.root}",
        observed={"freshness_bound_s": run.freshness_bound_s},
    )


def declared_bound(value: object) -> float:
    """Return the freshness bound a Worker declares, never looser than the contract's."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return FRESHNESS_BOUND_S
    return max(0.0, min(float(value), FRESHNESS_BOUND_S))


def check_ray(answer: Answer, colo: str, what: str) -> str:
    """Return the answer's cf-ray, or fail unless it is `<16 hex>-<COLO>` naming `colo`."""
    ray = answer.header("cf-ray")
    served = colo_from_ray(ray)
    if not served:
        raise PhaseFailed(
            f"{what} answered with cf-ray {ray!r}; contract v1 wants '<16 lowercase hex>-<COLO>'"
        )
    if colo and served != colo:
        raise PhaseFailed(
            f"{what} via the {colo} region answered with cf-ray {ray} (colo {served})"
        )
    return ray


def phase_seed(run: SmokeRun) -> str:
    """Write `_ci/run.json` first, then objects, then a catalog one generation above any there."""
    settings = run.settings
    stamp = {
        "sha": settings.sha,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": secrets.token_hex(8),
    }
    run.store.put(run_key(run.root), json.dumps(stamp).encode(), "application/json")
    # A re-run of the same commit finds its earlier catalog: seed above it, so a Worker that
    # still caches the earlier one is seen to serve an older generation, not a wrong one.
    previous = stored_generation(run)
    catalog = publish(run, smoke_files(settings.sha, stamp["run"]), previous + 1)
    again = f"; generation {previous} was there (a re-run)" if previous else ""
    return f"{len(catalog.entries)} entries, {len(run.blobs)} objects under {run.root}{again}"


def stored_generation(run: SmokeRun) -> int:
    """The generation of the catalog already in the bucket (0 when none or unreadable)."""
    raw = run.store.get(catalog_key(run.root))
    if raw is None:
        return 0
    try:
        return parse_catalog(parse_json(raw, "catalog"), "catalog").generation
    except ContractError:
        return 0


def publish(run: SmokeRun, files: dict[str, bytes], generation: int) -> Catalog:
    """Write the files' objects, then the catalog naming them; remember when it landed."""
    catalog, blobs = build_catalog(files, generation=generation)
    for digest, data in blobs.items():
        run.store.put(object_key(run.root, digest), data)
    run.store.put(catalog_key(run.root), json.dumps(catalog.to_json()).encode(), "application/json")
    run.catalog, run.blobs, run.seeded_at = catalog, blobs, time.monotonic()
    return catalog


def served_catalog(answer: Answer, path: str) -> Catalog | None:
    """Parse a /catalog or /install answer (None for a 404: not published there yet)."""
    if answer.status == 404:
        return None
    document = expect(answer, 200).json()
    if not isinstance(document, dict) or document.get("schema", 1) != 1:
        raise ContractError(f"{path} answer is not a contract v1 object: {str(document)[:120]}")
    return parse_catalog(
        {"schema": 1, "generation": document.get("generation"), "entries": document.get("entries")},
        path,
    )


def await_catalog(
    run: SmokeRun, region: RegionClient, path: str, want: Catalog, *, allow_newer: bool = False
) -> float:
    """Poll `path` with backoff until it serves `want`; return seconds from the publish.

    An older generation (or a 404) is allowed only for requests sent within the freshness bound
    of the publish; the same generation with other entries fails at once.
    """
    where = f"{region.label}: {path}"
    delay = FIRST_POLL_S
    while True:
        sent = time.monotonic()
        try:
            answer = region.client.get(path)
        except SyncCIError as exc:
            raise PhaseFailed(f"{where}: {exc}") from None
        try:
            served = served_catalog(answer, path)
        except SyncCIError as exc:
            raise PhaseFailed(f"{where}: {exc}") from None
        check_ray(answer, region.colo, where)
        if served is not None and answer.header("x-cache") not in ("hit", "miss"):
            raise PhaseFailed(f"{where} answered without x-cache: hit|miss")
        age = sent - run.seeded_at
        if served == want or (
            allow_newer and served is not None and served.generation > want.generation
        ):
            return max(0.0, age)
        if served is not None and served.generation >= want.generation:
            raise PhaseFailed(
                f"{where} serves generation {served.generation} with {len(served.entries)} "
                f"entries; published generation {want.generation} with {len(want.entries)}"
            )
        if age > run.freshness_bound_s:
            have = "404" if served is None else f"generation {served.generation}"
            raise PhaseFailed(
                f"{where} still serves {have} {age:.1f} s after generation {want.generation} "
                f"was published (freshness bound {run.freshness_bound_s:g} s)"
            )
        if time.monotonic() > run.deadline:
            raise PhaseFailed(f"{where}: time budget exceeded while waiting for a fresh catalog")
        # Land one poll just past the bound, so a stale answer there is judged, not guessed.
        until_bound = run.seeded_at + run.freshness_bound_s - time.monotonic()
        time.sleep(max(0.0, min(delay, until_bound + FIRST_POLL_S)))
        delay = min(delay * 2, MAX_POLL_S)


def await_everywhere(
    run: SmokeRun, paths: tuple[str, ...], *, allow_newer: bool = False
) -> dict[str, float]:
    """Wait until every region serves run.catalog on every path; return the slowest per colo."""
    assert run.catalog is not None
    fresh: dict[str, float] = {}
    for region in run.regions:
        for path in paths:
            took = await_catalog(run, region, path, run.catalog, allow_newer=allow_newer)
            fresh[region.label] = round(max(took, fresh.get(region.label, 0.0)), 3)
    return fresh


def phase_install(run: SmokeRun) -> PhaseOutcome:
    """GET /install in every region: the seeded catalog (write mode) or the bucket's (read-only)."""
    if run.mode == "read-only":
        raw = run.store.get(catalog_key(run.root))
        if raw is None:
            raise PhaseFailed(f"{catalog_key(run.root)} is missing from the bucket")
        run.catalog = parse_catalog(parse_json(raw, catalog_key(run.root)), catalog_key(run.root))
        # Not knowing when live was published, allow the Worker the whole bound from now.
        run.seeded_at = time.monotonic()
    assert run.catalog is not None
    fresh = await_everywhere(run, ("/install",), allow_newer=run.mode == "read-only")
    return PhaseOutcome(
        detail=f"generation {run.catalog.generation}, {len(run.catalog.entries)} entries, "
        f"in {len(fresh)} region(s): {', '.join(fresh)}",
        observed={"regions": len(fresh), "time_to_fresh_s": fresh},
    )


def phase_catalog(run: SmokeRun) -> PhaseOutcome:
    """GET /catalog in every region, and a never-seen KV key there must miss."""
    fresh = await_everywhere(run, ("/catalog",), allow_newer=run.mode == "read-only")
    for region in run.regions:
        nonce = f"smoke-{secrets.token_hex(8)}"
        where = f"{region.label}: /_probe/kv/{nonce}"
        answer = expect(region.client.get(f"/_probe/kv/{nonce}"), 200)
        check_ray(answer, region.colo, where)
        document = answer.json()
        said = document.get("cache") if isinstance(document, dict) else None
        if answer.header("x-cache") != "miss" or said != "miss":
            raise PhaseFailed(
                f"{where} is a key this region never read, yet it answered x-cache "
                f"{answer.header('x-cache') or 'none'!r} and cache {said!r} (want miss)"
            )
    return PhaseOutcome(
        detail=f"catalog and a cold KV miss in {len(fresh)} region(s): {', '.join(fresh)}",
        observed={"regions": len(fresh)},
    )


def phase_freshness(run: SmokeRun) -> PhaseOutcome:
    """Publish the next generation and poll every region until it serves it, within the bound."""
    assert run.catalog is not None
    files = smoke_files(run.settings.sha, secrets.token_hex(8))
    catalog = publish(run, files, run.catalog.generation + 1)
    fresh = await_everywhere(run, ("/install", "/catalog"))
    slowest = max(fresh.values(), default=0.0)
    return PhaseOutcome(
        detail=f"generation {catalog.generation} served everywhere {slowest:.2f} s after the "
        f"publish (bound {run.freshness_bound_s:g} s)",
        observed={"time_to_fresh_s": slowest, "per_region_s": fresh},
        threshold={"max_s": run.freshness_bound_s},
    )


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


# ---- negative probes (write mode: sandbox and ci targets, inside the CI prefix) ----


def refused(answer: Answer, want: int, sent: str) -> str:
    """Fail unless the Worker refused with `want`; return the row's detail line."""
    reason = error_text(answer)
    got = f"{answer.status}" + (f" ({reason})" if reason else "")
    if answer.status != want:
        raise PhaseFailed(f"sent {sent}; got {got}, contract v1 wants {want}")
    return f"sent {sent}; got {got}"


def state_of(run: SmokeRun, tenant: str) -> bytes | None:
    """A tenant's state as the bucket holds it."""
    return run.store.get(tenant_state_key(run.root, tenant))


def unchanged(run: SmokeRun, tenant: str, before: bytes | None) -> None:
    """Fail when a refused request still changed a tenant's state in the bucket."""
    after = state_of(run, tenant)
    if after != before:
        raise PhaseFailed(
            f"the Worker changed {tenant_state_key(run.root, tenant)} "
            f"({len(before or b'')} -> {len(after or b'')} bytes) on a request it must refuse"
        )


def phase_reject_bad_token(run: SmokeRun) -> str:
    """A push with a wrong token gets 401 and writes nothing."""
    headers = {**tenant_headers(run), "authorization": f"Bearer {secrets.token_hex(32)}"}
    before = state_of(run, run.tenant_id)
    body = json.dumps({"tenant": run.tenant_id, "probe": "wrong-token"}).encode()
    answer = run.worker.post("/_push", data=body, headers=headers, retry=False)
    detail = refused(answer, 401, f"POST /_push as {run.tenant_id} with a wrong token")
    unchanged(run, run.tenant_id, before)
    return detail


def peer_tenant(run: SmokeRun) -> str:
    """Another tenant id, for the cross-tenant probe."""
    return f"{run.tenant_id[:55]}-peer"


def phase_reject_cross_tenant(run: SmokeRun) -> str:
    """Tenant A's token cannot write tenant B's state (401 as B, 403 naming B); B's state holds."""
    peer = peer_tenant(run)
    fixture = json.dumps({"tenant": peer, "sha": run.settings.sha, "owner": "peer"}).encode()
    run.store.put(tenant_state_key(run.root, peer), fixture, "application/json")
    body = json.dumps({"tenant": peer, "probe": "cross-tenant"}).encode()
    as_peer = {**tenant_headers(run), TENANT_HEADER: peer}
    first = refused(
        run.worker.post("/_push", data=body, headers=as_peer, retry=False),
        401,
        f"POST /_push as {peer} with {run.tenant_id}'s token",
    )
    mine = state_of(run, run.tenant_id)
    second = refused(
        run.worker.post("/_push", data=body, headers=tenant_headers(run), retry=False),
        403,
        f"POST /_push as {run.tenant_id} with a body naming {peer}",
    )
    unchanged(run, peer, fixture)
    unchanged(run, run.tenant_id, mine)
    return f"{first}; {second}; {peer}'s state unchanged"


def phase_reject_oversize(run: SmokeRun) -> str:
    """A push one byte over the contract's limit gets 413 and writes nothing."""
    head = json.dumps({"tenant": run.tenant_id, "pad": ""}).encode()
    pad = PUSH_LIMIT_BYTES + 1 - len(head)
    body = json.dumps({"tenant": run.tenant_id, "pad": "x" * pad}).encode()
    before = state_of(run, run.tenant_id)
    answer = run.worker.post("/_push", data=body, headers=tenant_headers(run), retry=False)
    detail = refused(answer, 413, f"POST /_push of {len(body)} bytes (limit {PUSH_LIMIT_BYTES})")
    unchanged(run, run.tenant_id, before)
    return detail


def phase_reject_status_anon(run: SmokeRun) -> str:
    """GET /_status without the admin token gets 401."""
    answer = run.worker.get("/_status", retry=False)
    return refused(answer, 401, "GET /_status without the admin token")


def phase_reject_alert_controls(run: SmokeRun) -> str:
    """An alert holding control characters gets 400."""
    body = {
        **alert_body(run, f"smoke-controls-{secrets.token_hex(6)}"),
        "check": "smoke-controls",
        "message": "terminal escape \x1b[2J and a bell \x07",
    }
    answer = run.worker.post("/_alert", json_body=body, headers=tenant_headers(run), retry=False)
    return refused(answer, 400, "POST /_alert with ESC and BEL in its message")


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


def phase_pull_dry(run: SmokeRun) -> PhaseOutcome:
    """Say what a pull would change against the local mirror, writing nothing; verify a sample."""
    assert run.catalog is not None
    mirror = {o.artifact: o.digest for o in mirror_observations(run.catalog, run.mirror_dir)}
    plan = plan_pull(run.catalog, mirror)
    sampled = sample_entries(run.catalog, run.sample)
    for entry in sampled:
        fetch_object(run, entry.sha256)
    behind = plan["add"] + plan["update"] if plan["keep"] or plan["update"] else 0
    lag = f"; the mirror is behind by {behind} file(s)" if behind else ""
    return PhaseOutcome(
        detail=f"would add {plan['add']}, update {plan['update']}, keep {plan['keep']} "
        f"(mirror {run.mirror_dir}){lag}; {len(sampled)} sampled objects verified",
        observed={**plan, "mirror_behind": behind},
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
    lagging = ("mirror",) if run.mode == "read-only" else ()
    cells = evaluate_cells(observations, expected=expected, behind_ok=lagging)
    failing = [c for c in cells if c.status == "fail"]
    passed = sum(c.status == "pass" for c in cells)
    behind = behind_count(cells)
    detail = (
        f"{passed} cells equal"
        + (f", {len(failing)} differ: {failing[0].title}" if failing else "")
        + (f"; the local mirror is behind on {behind} file(s) (pull to catch up)" if behind else "")
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
    body = alert_body(run, run.alert_key)
    first = expect(
        run.worker.post("/_alert", json_body=body, headers=tenant_headers(run), retry=False), 202
    )
    second = expect(
        run.worker.post("/_alert", json_body=body, headers=tenant_headers(run), retry=False), 200
    )
    return f"202 then {second.status} for key {run.alert_key} ({first.elapsed_s * 1000:.0f} ms)"


def alert_body(run: SmokeRun, key: str) -> dict[str, str]:
    """The smoke's round-trip alert with idempotency key `key`."""
    return {
        "check": "smoke-roundtrip",
        "message": f"sync-ci smoke alert round trip for {run.settings.sha[:12]}",
        "host": socket.gethostname(),
        "version": __version__,
        "ts": utc_stamp(datetime.now(UTC)),
        "idempotency_key": key,
    }


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


def phase_conformance(run: SmokeRun) -> PhaseOutcome:
    """A few generated requests per operation of docs/contract.openapi.yaml, seeded by the commit."""
    from sync_ci.conformance import run_smoke_phase

    budget_s = max(min(run.conformance_budget_s, run.deadline - time.monotonic()), 1e-3)
    verdict = run_smoke_phase(run.settings, budget_s=budget_s)
    if verdict.status == "skip":
        raise Skipped(verdict.detail)
    if verdict.status != "pass":
        raise PhaseFailed(verdict.detail)
    return PhaseOutcome(detail=verdict.detail, observed=verdict.observed)


# ---- helpers of the phases ----


def tenant_headers(run: SmokeRun) -> dict[str, str]:
    """Tenant auth headers of contract v1."""
    if not run.tenant_token:
        raise Skipped(
            "no tenant secret or token (SYNC_CI_TENANT_SECRET): push and alert not checked"
        )
    return contract_tenant_headers(run.tenant_id, run.tenant_token)


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
    worker_url = main_worker_url(settings)
    tenant = settings.tenant_id or SMOKE_TENANT
    token = tenant_credential(settings, tenant)
    store = open_store(endpoint_from_settings(settings), policy)

    def client(url: str) -> WorkerClient:
        return WorkerClient(
            WorkerTarget(
                base_url=url,
                read_only=read_only,
                timeout_s=settings.worker_timeout_s,
                root=root,
                allowed_posts=() if read_only else ("/_push", "/_alert"),
            )
        )

    worker = client(worker_url)
    with ExitStack() as stack:
        stack.callback(worker.close)
        regions = [RegionClient(colo=colo_of(settings, worker_url), client=worker)]
        for region in regions_to_ask(settings, worker_url):
            regional = client(region.url)
            stack.callback(regional.close)
            regions.append(RegionClient(colo=region.colo, client=regional))
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
            regions=tuple(regions),
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
    """Resolve settings, attach the target, run the smoke, print the table and matrix."""
    from sync_ci import progress
    from sync_ci.attachment import SUITE, open_target
    from sync_ci.options import parse_assignments
    from sync_ci.report import emit

    settings = load_settings(config=config, target=target)
    if faults and settings.target != "sandbox":
        raise UsageError("--fault only applies to the sandbox target")
    if sample < 0:
        raise UsageError(f"--sample {sample} must be 0 (all) or a positive count")
    mode: Mode = "read-only" if read_only or settings.read_only else "write"
    if mode == "read-only" and settings.target == "ci" and not settings.preview_url:
        raise UsageError(
            "--read-only on ci reads the production root through a deployed Worker, and without "
            "a preview URL ci starts a local one that serves only snappy-os-ci/<sha>/: set "
            "SYNC_CI_PREVIEW_URL, or use --target live"
        )
    with progress.showing(progress.for_outputs(outputs)) as shown:
        shown.note(f"preparing the {settings.target} target ...")
        with open_target(settings, SUITE, faults=parse_assignments(faults, "--fault")) as attached:
            report = run_smoke(attached, mode=mode, sample=sample, budget_s=budget_s)
    code = emit(report, outputs)
    if report.parity and not outputs.quiet:
        from sync_ci.parity import render_parity

        print(render_parity(report.parity))
    return code


def add_parser(sub: Any) -> None:
    """Register `sync-ci smoke`."""
    from sync_ci.options import add_common, number

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
        type=number(int, minimum=0, maximum=1_000_000),
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
    parser.add_argument(
        "--budget",
        type=number(float, minimum=0, above=True, maximum=86_400, unit="seconds"),
        default=600.0,
        metavar="SECONDS",
        help="bound on the whole run, 0 < SECONDS <= 86400 (default %(default)s)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sync_ci.options import outputs

    return command(
        target=args.target,
        config=args.config,
        read_only=args.read_only,
        sample=args.sample,
        faults=args.fault,
        budget_s=args.budget,
        outputs=outputs(args),
    )
