"""The reference Worker (contract v1): its routes, one aiohttp app per region over shared state.

The HTTP layer (state, middleware, auth) is `worker_http`, the alert book `status_book`, faults
`faults`, the mutant catalogue `mutants`; this module is what each route answers.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

from aiohttp import web

from sync_ci import __version__, contract
from sync_ci.errors import ContractError, SyncCIError, UsageError
from sync_ci.sandbox.faults import apply_fault_update
from sync_ci.sandbox.kv import RegionKV
from sync_ci.sandbox.mutants import MUTANT_BODY_CAP_BYTES, MUTANT_CONTROL_RE, SLOW_ROUTE_S
from sync_ci.sandbox.status_book import (
    ALERT_RATE_PER_MIN,
    iso_time,
    parse_alert_rows,
    render_status_page,
    summarize_status,
)
from sync_ci.sandbox.worker_config import RegionSpec
from sync_ci.sandbox.worker_http import (
    CACHE,
    REGION_KEY,
    STATE_KEY,
    ApiError,
    Region,
    WorkerState,
    authenticate_admin,
    authenticate_tenant,
    check_body_tenant,
    contract_middleware,
    in_mutant_region,
    json_body,
    log,
    mutant_of,
    read_limited,
    region_of,
    root_of,
    state_of,
    timing_of,
)

OBJECT_TTL_S = 3600.0
PROBE_TTL_S = 24 * 3600.0
HEARTBEAT_LIMIT_BYTES = 1024
CONTROL_LIMIT_BYTES = 4096
MAX_CLOCK_OFFSET_S = 10 * 366 * 86400.0
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
# One key segment: no '/', so R/_alerts/<tenant>/<key>.json cannot climb out of its folder.
IDEMPOTENCY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


async def handle_health(request: web.Request) -> web.Response:
    """GET /_health."""
    return web.json_response(
        {
            "ok": True,
            "version": __version__,
            "root": root_of(request),
            "contract": contract.CONTRACT_VERSION,
            "colo": region_of(request).spec.colo,
            "catalog_ttl_s": state_of(request).config.catalog_ttl_s,
        }
    )


async def read_catalog(request: web.Request) -> tuple[contract.Catalog, bytes]:
    """Read the root's catalog and its stored bytes through this region's KV (404, 502)."""
    state, region, root, timing = (
        state_of(request),
        region_of(request),
        root_of(request),
        timing_of(request),
    )
    key = contract.catalog_key(root)

    async def load() -> tuple[Any, int] | None:
        data = await state.bucket(timing, state.store.get, key)
        if data is None:
            return None
        return (contract.parse_catalog(contract.parse_json(data, key), key), data), len(data)

    if mutant_of(request) == "region-500" and in_mutant_region(request):
        raise ApiError(500, "internal error")
    # The stale-catalog mutant keeps what it cached for ever.
    ttl_s = math.inf if mutant_of(request) == "stale-catalog" else state.config.catalog_ttl_s
    request[CACHE] = "miss"
    try:
        read = await region.kv.read(
            root, "catalog", load, ttl_s=ttl_s, miss_ms=state.miss_ms(region.spec)
        )
    except ContractError as exc:
        raise ApiError(502, f"malformed catalog: {exc}") from None
    _record_kv(request, read.hit, read.kv_ms)
    if read.value is None:
        raise ApiError(404, f"no catalog at {key}")
    found: tuple[contract.Catalog, bytes] = read.value
    return found


def _record_kv(request: web.Request, hit: bool, kv_ms: float) -> None:
    timing = timing_of(request)
    request[CACHE] = "hit" if hit else "miss"
    timing.kv_ms = max(0.0, kv_ms - timing.bucket_ms)


async def handle_catalog(request: web.Request) -> web.Response:
    """GET /catalog: the stored bytes of R/catalog.json, once they parse as a catalog."""
    _, data = await read_catalog(request)
    return web.Response(body=data, content_type="application/json")


async def handle_install(request: web.Request) -> web.Response:
    """GET /install: the install manifest built from the cached catalog."""
    mutant = mutant_of(request)
    if mutant == "slow-install":
        await asyncio.sleep(SLOW_ROUTE_S)
    document = (await read_catalog(request))[0].to_json()
    document["object_base"] = "/o/"
    if mutant == "missing-install-entry" and document["entries"]:
        document["entries"].pop(min(document["entries"]))
    if mutant == "error-body-200":
        return web.json_response({"error": "catalog temporarily unavailable", "code": 500})
    return web.json_response(document)


async def handle_object(request: web.Request) -> web.Response:
    """GET /o/<sha256>: content-addressed bytes, checked against their name."""
    state, region, root, timing = (
        state_of(request),
        region_of(request),
        root_of(request),
        timing_of(request),
    )
    name = request.match_info["name"]
    if not contract.SHA256_RE.fullmatch(name):
        raise ApiError(400, "object name must be 64 lowercase hex digits (its sha256)")
    key = contract.object_key(root, name)

    def fetch() -> tuple[bytes, str] | None:
        data = state.store.get(key)
        return None if data is None else (data, contract.sha256_hex(data))

    async def load() -> tuple[Any, int] | None:
        found = await state.bucket(timing, fetch)
        if found is None:
            return None
        if found[1] != name:
            raise ContractError(f"{key} holds bytes whose sha256 is {found[1]}")
        return found[0], len(found[0])

    request[CACHE] = "miss"
    try:
        read = await region.kv.read(
            root, f"o/{name}", load, ttl_s=OBJECT_TTL_S, miss_ms=state.miss_ms(region.spec)
        )
    except ContractError as exc:
        raise ApiError(502, f"corrupt object: {exc}") from None
    _record_kv(request, read.hit, read.kv_ms)
    if read.value is None:
        raise ApiError(404, f"no object {name}")
    body: bytes = read.value
    if mutant_of(request) == "corrupt-object":
        body = bytes([body[0] ^ 0xFF]) + body[1:] if body else b"\x00"
    return web.Response(
        body=body,
        content_type="application/octet-stream",
        headers={"etag": f'"{name}"', "cache-control": "public, max-age=31536000, immutable"},
    )


async def handle_probe(request: web.Request) -> web.Response:
    """GET /_probe/kv/<nonce>: a KV read of a key this region has never seen (then a hit)."""
    state, region, root = state_of(request), region_of(request), root_of(request)
    nonce = request.match_info["nonce"]
    if not NONCE_RE.fullmatch(nonce):
        raise ApiError(400, "nonce must be 8-128 characters of A-Z, a-z, 0-9, '_' or '-'")

    async def load() -> tuple[Any, int] | None:
        return True, len(nonce)

    read = await region.kv.read(
        root, f"_probe/{nonce}", load, ttl_s=PROBE_TTL_S, miss_ms=state.miss_ms(region.spec)
    )
    _record_kv(request, read.hit, read.kv_ms)
    return web.json_response(
        {
            "nonce": nonce,
            "colo": region.spec.colo,
            "cache": "hit" if read.hit else "miss",
            "kv_ms": round(read.kv_ms, 3),
        }
    )


async def handle_push(request: web.Request) -> web.Response:
    """POST /_push: store a tenant's state document byte for byte."""
    state, root, mutant = state_of(request), root_of(request), mutant_of(request)
    tenant = authenticate_tenant(request, bypass=mutant == "push-auth-bypass")
    limit = MUTANT_BODY_CAP_BYTES if mutant == "no-413" else contract.PUSH_LIMIT_BYTES
    body = await read_limited(request, limit)
    document = json_body(body, "push body")
    if not isinstance(document, dict):
        raise ApiError(400, "push body must be a JSON object")
    named = document.get("tenant")
    if (
        mutant == "cross-tenant-push"
        and isinstance(named, str)
        and contract.TENANT_RE.fullmatch(named)
    ):
        tenant = named
    check_body_tenant(document, tenant)
    key = contract.tenant_state_key(root, tenant)
    if mutant != "push-no-write":
        await state.bucket(timing_of(request), state.store.put, key, body, "application/json")
    return web.json_response({"key": key, "sha256": contract.sha256_hex(body)}, status=201)


async def handle_alert(request: web.Request) -> web.Response:
    """POST /_alert: record a failing check once per idempotency key, rate-limited per tenant."""
    state, root = state_of(request), root_of(request)
    tenant = authenticate_tenant(request)
    body = await read_limited(request, contract.ALERT_LIMIT_BYTES)
    document = json_body(body, "alert body")
    if state.config.mutant == "alert-controls" and isinstance(document, dict):
        document = {
            k: MUTANT_CONTROL_RE.sub("", v) if isinstance(v, str) else v
            for k, v in document.items()
        }
    try:
        alert = contract.validate_alert(document)
        rows = parse_alert_rows(document.get("rows", []))
    except ContractError as exc:
        raise ApiError(400, str(exc)) from None
    idem = alert["idempotency_key"]
    if not IDEMPOTENCY_RE.fullmatch(idem):
        raise ApiError(
            400, "idempotency_key must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'"
        )
    check_body_tenant(document, tenant)
    book = state.book(root)
    if (tenant, idem) in book.seen and state.config.mutant != "alert-no-dedup":
        return web.json_response({"stored": False, "idempotency_key": idem}, status=200)
    wait_s = state.take_alert_token(root, tenant)
    if wait_s > 0:
        raise ApiError(
            429,
            f"tenant {tenant} sent more than {ALERT_RATE_PER_MIN:g} alerts a minute",
            headers={"retry-after": str(max(1, math.ceil(wait_s)))},
        )
    now = state.now()
    book.record_alert(tenant=tenant, key=idem, alert=alert, rows=rows, now=now)
    record = {**alert, "tenant": tenant, "received_at": iso_time(now), "rows": rows}
    key = f"{root}_alerts/{tenant}/{idem}.json"
    data = json.dumps(record, sort_keys=True).encode()
    try:
        await state.bucket(timing_of(request), state.store.put, key, data, "application/json")
    except SyncCIError as exc:
        # Best effort: the alert is already counted; a failed copy must not turn into a retry storm.
        book.persist_failures += 1
        log(f"could not persist alert {key}: {exc}")
    return web.json_response({"stored": True, "idempotency_key": idem}, status=202)


async def handle_heartbeat(request: web.Request) -> web.Response:
    """POST /_heartbeat: remember when the tenant was last heard from."""
    state, root = state_of(request), root_of(request)
    tenant = authenticate_tenant(request)
    await read_limited(request, HEARTBEAT_LIMIT_BYTES)
    state.book(root).heartbeats[tenant] = state.now()
    return web.Response(status=204)


async def handle_status(request: web.Request) -> web.Response:
    """GET /_status: alerts by check and silent tenants; HTML for Accept: text/html."""
    if mutant_of(request) != "status-open":
        authenticate_admin(request)
    state, root = state_of(request), root_of(request)
    book = state.book(root)
    summary = {"root": root, **summarize_status(book.checks, book.heartbeats, state.now())}
    summary["persist_failures"] = book.persist_failures
    if "text/html" in request.headers.get("accept", ""):
        page = render_status_page(summary, state.now())
        return web.Response(text=page, content_type="text/html")
    return web.json_response(summary)


async def handle_faults_get(request: web.Request) -> web.Response:
    """GET /_sandbox/faults."""
    authenticate_admin(request)
    return web.json_response({"faults": state_of(request).faults})


async def handle_faults_post(request: web.Request) -> web.Response:
    """POST /_sandbox/faults: change faults at run time (null removes a key, clear resets)."""
    authenticate_admin(request)
    state = state_of(request)
    update = json_body(await read_limited(request, CONTROL_LIMIT_BYTES), "fault update")
    try:
        state.faults = apply_fault_update(state.faults, update, state.colos)
    except UsageError as exc:
        raise ApiError(400, str(exc)) from None
    return web.json_response({"faults": state.faults})


async def handle_clock_get(request: web.Request) -> web.Response:
    """GET /_sandbox/clock."""
    authenticate_admin(request)
    state = state_of(request)
    return web.json_response({"offset_s": state.clock_offset_s, "now": iso_time(state.now())})


async def handle_clock_post(request: web.Request) -> web.Response:
    """POST /_sandbox/clock {"offset_s": N}: shift the Worker's now."""
    authenticate_admin(request)
    state = state_of(request)
    document = json_body(await read_limited(request, CONTROL_LIMIT_BYTES), "clock body")
    offset = document.get("offset_s") if isinstance(document, dict) else None
    if (
        isinstance(offset, bool)
        or not isinstance(offset, int | float)
        or not math.isfinite(offset)
        or abs(offset) > MAX_CLOCK_OFFSET_S
    ):
        raise ApiError(
            400, f'clock body must be {{"offset_s": N}} with |N| <= {MAX_CLOCK_OFFSET_S:g}'
        )
    state.clock_offset_s = float(offset)
    return web.json_response({"offset_s": state.clock_offset_s, "now": iso_time(state.now())})


async def drop_date(request: web.Request, response: web.StreamResponse) -> None:
    """The no-date mutant: remove the Date header aiohttp adds to every answer."""
    response.headers.popall("date", None)


def build_region_app(state: WorkerState, spec: RegionSpec) -> web.Application:
    """Build the app one region's listener serves; regions share `state` but not their KV."""
    app = web.Application(middlewares=[contract_middleware])
    app[STATE_KEY] = state
    app[REGION_KEY] = Region(spec=spec, kv=RegionKV(spec.colo))
    router = app.router
    router.add_get("/_health", handle_health)
    router.add_get("/catalog", handle_catalog)
    router.add_get("/install", handle_install)
    router.add_get("/o/{name}", handle_object)
    router.add_get("/_probe/kv/{nonce}", handle_probe)
    router.add_post("/_push", handle_push)
    router.add_post("/_alert", handle_alert)
    router.add_post("/_heartbeat", handle_heartbeat)
    router.add_get("/_status", handle_status)
    if state.config.mutant == "no-date":
        app.on_response_prepare.append(drop_date)
    if state.config.sandbox_control:
        router.add_get("/_sandbox/faults", handle_faults_get)
        router.add_post("/_sandbox/faults", handle_faults_post)
        router.add_get("/_sandbox/clock", handle_clock_get)
        router.add_post("/_sandbox/clock", handle_clock_post)
    return app
