"""The reference Worker's HTTP layer: shared state, the contract middleware, bodies and auth.

Every route passes through `contract_middleware` (faults, root selection, JSON errors, cf-ray,
Date, x-cache and server-timing); handlers in `worker_app` reach the state through the accessors.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import random
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from sync_ci import contract, guards
from sync_ci.errors import ContractError, GuardViolation, StoreError, UnreachableError
from sync_ci.sandbox.faults import KV_MISS_FAULT_PREFIX
from sync_ci.sandbox.kv import RegionKV
from sync_ci.sandbox.status_book import ALERT_BURST, ALERT_RATE_PER_MIN, RootBook, TokenBucket
from sync_ci.sandbox.worker_config import RegionSpec, WorkerConfig
from sync_ci.store import Store

T = TypeVar("T")

TENANT_HEADER = contract.TENANT_HEADER


# --- data ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Timing:
    """Milliseconds one request spent in KV, in the bucket, and in injected latency."""

    kv_ms: float | None = None
    bucket_ms: float = 0.0
    bucket_used: bool = False
    fault_ms: float = 0.0


class ApiError(Exception):
    """An answer other than success, rendered as {"error", "code"}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.close = close


# --- pure functions --------------------------------------------------------------------------


def server_timing(timing: Timing, total_ms: float) -> str:
    """Render the `server-timing` header value."""
    metrics = []
    if timing.kv_ms is not None:
        metrics.append(f"kv;dur={timing.kv_ms:.2f}")
    if timing.bucket_used:
        metrics.append(f"bucket;dur={timing.bucket_ms:.2f}")
    if timing.fault_ms:
        metrics.append(f"fault;dur={timing.fault_ms:.2f}")
    metrics.append(f"total;dur={total_ms:.2f}")
    return ", ".join(metrics)


def select_root(header: str | None, config: WorkerConfig) -> str:
    """Return the root a request works under, or raise ApiError(400) for a refused root header."""
    if header is None or header == config.root:
        return config.root
    if not config.allow_root_header:
        raise ApiError(400, f"{contract.ROOT_HEADER} is not accepted by this Worker")
    if guards.is_full_ci_prefix(header, config.ci_root):
        return header
    raise ApiError(
        400,
        f"{contract.ROOT_HEADER} must be {config.root!r} or a full {config.ci_root}<sha>/ prefix",
    )


# --- shared state and edges ------------------------------------------------------------------


class WorkerState:
    """State shared by every region: the store, faults, clock offset, alerts and rate limits."""

    def __init__(
        self,
        config: WorkerConfig,
        store: Store,
        executor: Executor,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.executor = executor
        self.faults: dict[str, float] = dict(config.faults)
        self.clock_offset_s = 0.0
        self.books: dict[str, RootBook] = {}
        self.rate: dict[tuple[str, str], TokenBucket] = {}
        self.rng = rng or random.Random()
        self.colos = tuple(region.colo for region in config.regions)

    def now(self) -> float:
        """The Worker's notion of now (wall clock plus the sandbox clock offset)."""
        return time.time() + self.clock_offset_s

    def book(self, root: str) -> RootBook:
        """Return the alert book of a root, creating it on first use."""
        return self.books.setdefault(root, RootBook())

    def miss_ms(self, region: RegionSpec) -> float:
        """The region's cold-miss latency, after any fault override."""
        return self.faults.get(KV_MISS_FAULT_PREFIX + region.colo, region.miss_ms)

    def take_alert_token(self, root: str, tenant: str) -> float:
        """Spend one of the tenant's alert tokens; return seconds to wait when none is left."""
        now = time.monotonic()
        bucket = self.rate.setdefault(
            (root, tenant), TokenBucket(tokens=ALERT_BURST, updated_at=now)
        )
        return bucket.take(now, rate_per_s=ALERT_RATE_PER_MIN / 60.0, burst=ALERT_BURST)

    async def bucket(self, timing: Timing, fn: Callable[..., T], *args: Any) -> T:
        """Run one blocking store call in the pool, with any injected bucket latency."""
        started = time.perf_counter()
        timing.bucket_used = True
        try:
            extra = self.faults.get("bucket_latency_ms", 0.0)
            if extra:
                await asyncio.sleep(extra / 1000)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, functools.partial(fn, *args))
        finally:
            timing.bucket_ms += (time.perf_counter() - started) * 1000


@dataclass(slots=True)
class Region:
    """A region at run time: its spec and its own KV cache."""

    spec: RegionSpec
    kv: RegionKV


STATE_KEY = web.AppKey("sync_ci_state", WorkerState)
REGION_KEY = web.AppKey("sync_ci_region", Region)
ROOT = "sync_ci.root"
TIMING = "sync_ci.timing"
CACHE = "sync_ci.x_cache"


def state_of(request: web.Request) -> WorkerState:
    """The state every region of this Worker shares."""
    return request.app[STATE_KEY]


def region_of(request: web.Request) -> Region:
    """The region whose listener took the request."""
    return request.app[REGION_KEY]


def timing_of(request: web.Request) -> Timing:
    """The request's timings, reported in server-timing."""
    timing: Timing = request[TIMING]
    return timing


def root_of(request: web.Request) -> str:
    """The root the request works under (chosen by the middleware)."""
    root: str = request[ROOT]
    return root


def mutant_of(request: web.Request) -> str:
    """The mutant this Worker commits ('' for none)."""
    return state_of(request).config.mutant


def in_mutant_region(request: web.Request) -> bool:
    """True in the region a one-region mutant breaks: the last configured one."""
    return region_of(request).spec.colo == state_of(request).config.regions[-1].colo


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON error answer: {"error": message, "code": status}."""
    return web.json_response({"error": message, "code": status}, status=status, headers=headers)


def log(message: str) -> None:
    """Write one line to the Worker's log (stderr)."""
    print(f"sync-ci worker: {message}", file=sys.stderr, flush=True)


@web.middleware
async def contract_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Faults, root selection, JSON errors and the cf-ray / server-timing / x-cache headers."""
    started = time.perf_counter()
    state = state_of(request)
    timing = Timing()
    request[TIMING] = timing
    exempt = request.path == "/_health" or request.path.startswith("/_sandbox/")
    close = False
    try:
        if not exempt:
            latency = state.faults.get("latency_ms", 0.0)
            if latency:
                await asyncio.sleep(latency / 1000)
                timing.fault_ms = latency
            rate = state.faults.get("5xx_rate", 0.0)
            if rate and state.rng.random() < rate:
                raise ApiError(503, "injected fault: 5xx_rate")
        if mutant_of(request) == "region-down" and in_mutant_region(request):
            raise ApiError(503, "region unavailable")
        request[ROOT] = select_root(request.headers.get(contract.ROOT_HEADER), state.config)
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        response, close = error_response(exc.status, exc.message, exc.headers), exc.close
    except web.HTTPException as exc:
        allow = {"allow": exc.headers["allow"]} if "allow" in exc.headers else None
        message = {
            404: f"no such endpoint: {request.path}",
            405: f"method {request.method} is not allowed on {request.path}",
        }.get(exc.status, exc.reason)
        response = error_response(exc.status, message, allow)
    except GuardViolation as exc:
        response = error_response(403, f"refused by the Worker's write policy: {exc}")
    except UnreachableError as exc:
        response = error_response(502, f"bucket unreachable: {exc}")
    except StoreError as exc:
        response = error_response(502, f"bucket error: {exc}")
    except Exception as exc:
        log(f"internal error on {request.method} {request.path}: {type(exc).__name__}: {exc}")
        response = error_response(500, "internal error")
    if close:
        response.force_close()
    mutant = state.config.mutant
    if mutant == "bad-cf-ray":
        response.headers["cf-ray"] = secrets.token_hex(8)
    elif mutant != "no-cf-ray":
        response.headers["cf-ray"] = f"{secrets.token_hex(8)}-{region_of(request).spec.colo}"
    if mutant != "no-date":
        # The Date header follows the Worker's clock, so /_sandbox/clock can simulate skew.
        response.headers["date"] = formatdate(state.now(), usegmt=True)
    if CACHE in request:
        response.headers["x-cache"] = "hit" if mutant == "x-cache-always-hit" else request[CACHE]
    total_ms = (time.perf_counter() - started) * 1000
    response.headers["server-timing"] = server_timing(timing, total_ms)
    return response


async def read_limited(request: web.Request, limit: int) -> bytes:
    """Read a request body of at most `limit` bytes, never buffering more than limit+1."""
    too_big = ApiError(413, f"body larger than {limit} bytes", close=True)
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = await request.content.read(limit + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise too_big
    return b"".join(chunks)


def json_body(data: bytes, what: str) -> Any:
    """Parse a JSON request body, or raise ApiError(400) naming `what`."""
    try:
        return contract.parse_json(data, what)
    except ContractError as exc:
        raise ApiError(400, str(exc)) from None


def authenticate_tenant(request: web.Request, *, bypass: bool = False) -> str:
    """Return the tenant id proven by `x-sync-tenant` and its bearer token, else raise 401."""
    secret = state_of(request).config.tenant_secret
    tenant = request.headers.get(TENANT_HEADER, "")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    challenge = {"www-authenticate": 'Bearer realm="sync-ci tenant"'}
    if not tenant or scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            f"tenant auth required: {TENANT_HEADER} and authorization: Bearer <token>",
            headers=challenge,
        )
    token = token.strip()
    if bypass and contract.TENANT_RE.fullmatch(tenant):
        return tenant
    valid = (
        bool(secret)
        and contract.TENANT_RE.fullmatch(tenant) is not None
        and token.isascii()
        and contract.token_matches(secret, tenant, token)
    )
    if not valid:
        raise ApiError(401, "invalid tenant id or token", headers=challenge)
    return tenant


def authenticate_admin(request: web.Request) -> None:
    """Raise 401 unless the request carries the admin bearer token."""
    expected = state_of(request).config.admin_token
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    presented = token.strip().encode("utf-8", "surrogateescape")
    if not (
        expected
        and scheme.lower() == "bearer"
        and hmac.compare_digest(presented, expected.encode())
    ):
        raise ApiError(
            401,
            "admin token required",
            headers={"www-authenticate": 'Bearer realm="sync-ci admin"'},
        )


def check_body_tenant(document: Mapping[str, Any], tenant: str) -> None:
    """Raise ApiError(403) when the body names a tenant other than the authenticated one."""
    if "tenant" in document and document["tenant"] != tenant:
        raise ApiError(403, f"body tenant {document['tenant']!r} is not the authenticated tenant")
