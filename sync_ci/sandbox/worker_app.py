"""The reference Worker (contract v1): one aiohttp app per region, shared state, one bucket."""

from __future__ import annotations

import asyncio
import functools
import hmac
import html
import json
import math
import random
import re
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from sync_ci import __version__, contract, guards
from sync_ci.clock import epoch_stamp
from sync_ci.errors import (
    ContractError,
    GuardViolation,
    StoreError,
    SyncCIError,
    UnreachableError,
    UsageError,
)
from sync_ci.sandbox.kv import RegionKV
from sync_ci.store import Store

T = TypeVar("T")

# How long a region may serve a catalog it cached: the freshness bound /_health declares.
CATALOG_TTL_S = 3.0
MAX_CATALOG_TTL_S = 60.0
OBJECT_TTL_S = 3600.0
PROBE_TTL_S = 24 * 3600.0
SILENT_AFTER_S = 12 * 3600.0
HEARTBEAT_LIMIT_BYTES = 1024
CONTROL_LIMIT_BYTES = 4096
ALERT_RATE_PER_MIN = 30.0
ALERT_BURST = 30.0
MAX_ALERT_ROWS = 20
MAX_ROW_FIELDS = 20
MAX_ROW_VALUE_CHARS = 200
MAX_SEEN_KEYS = 100_000
MAX_FAULT_MS = 60_000.0
MAX_CLOCK_OFFSET_S = 10 * 366 * 86400.0
TENANT_HEADER = "x-sync-tenant"
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
# One key segment: no '/', so R/_alerts/<tenant>/<key>.json cannot climb out of its folder.
IDEMPOTENCY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
FAULT_KEYS = ("5xx_rate", "latency_ms", "bucket_latency_ms")
KV_MISS_FAULT_PREFIX = "kv_miss_ms."
# What the alert-controls mutant strips instead of refusing the alert.
MUTANT_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SLOW_ROUTE_S = 3.0
# A body the no-413 mutant still bounds, so even a broken Worker cannot be made to buffer gigabytes.
MUTANT_BODY_CAP_BYTES = 16 * 1024 * 1024


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Mutant:
    """One named contract violation the reference Worker can commit, and the row that catches it."""

    name: str
    violation: str
    suite: str
    row: str


MUTANTS: Mapping[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            name="push-auth-bypass",
            violation="POST /_push accepts any token for any tenant",
            suite="smoke",
            row="phase:reject-bad-token",
        ),
        Mutant(
            name="cross-tenant-push",
            violation="POST /_push writes the state of the tenant named in the body",
            suite="smoke",
            row="phase:reject-cross-tenant",
        ),
        Mutant(
            name="status-open",
            violation="GET /_status answers without the admin token",
            suite="smoke",
            row="phase:reject-status-anon",
        ),
        Mutant(
            name="no-413",
            violation="POST /_push accepts bodies over 64 KiB",
            suite="smoke",
            row="phase:reject-oversize",
        ),
        Mutant(
            name="alert-controls",
            violation="POST /_alert accepts control characters in its fields",
            suite="smoke",
            row="phase:reject-alert-controls",
        ),
        Mutant(
            name="region-500",
            violation="/install and /catalog answer 500 in the last region only",
            suite="smoke, ci-loop",
            row="phase:install",
        ),
        Mutant(
            name="region-down",
            violation="every request to the last region answers 503",
            suite="smoke, ci-loop",
            row="phase:install",
        ),
        Mutant(
            name="stale-catalog",
            violation="a region never refreshes a catalog it has cached",
            suite="smoke",
            row="phase:freshness",
        ),
        Mutant(
            name="corrupt-object",
            violation="GET /o/ serves bytes that do not hash to their name",
            suite="smoke",
            row="phase:pull",
        ),
        Mutant(
            name="missing-install-entry",
            violation="GET /install leaves one catalog entry out",
            suite="smoke",
            row="phase:install",
        ),
        Mutant(
            name="push-no-write",
            violation="POST /_push answers 201 without writing the state",
            suite="smoke",
            row="phase:push",
        ),
        Mutant(
            name="alert-no-dedup",
            violation="a repeated alert idempotency key is stored again (202)",
            suite="smoke",
            row="phase:alert",
        ),
        Mutant(
            name="no-cf-ray",
            violation="answers carry no cf-ray header",
            suite="smoke",
            row="phase:preflight",
        ),
        Mutant(
            name="bad-cf-ray",
            violation="cf-ray does not name the colo that answered",
            suite="smoke",
            row="phase:preflight",
        ),
        Mutant(
            name="x-cache-always-hit",
            violation="x-cache says hit even for a key the region never read",
            suite="smoke",
            row="phase:catalog",
        ),
        Mutant(
            name="error-body-200",
            violation="GET /install answers 200 with an error body",
            suite="smoke",
            row="phase:install",
        ),
        Mutant(
            name="slow-install",
            violation=f"GET /install takes {SLOW_ROUTE_S:g} s more than it should",
            suite="gates.load",
            row="load.burst.install.p95_ms",
        ),
        Mutant(
            name="no-date",
            violation="answers carry no Date header (RFC 9110 requires one)",
            suite="smoke",
            row="phase:preflight",
        ),
    )
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RegionSpec:
    """One listener: its colo code and cold-miss latency."""

    colo: str
    miss_ms: float

    @property
    def name(self) -> str:
        """The region's lowercase name (e.g. 'sjc')."""
        return self.colo.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """Everything the Worker needs besides its store; secrets are kept out of the repr."""

    root: str
    ci_root: str
    regions: tuple[RegionSpec, ...]
    allow_root_header: bool = False
    sandbox_control: bool = False
    faults: Mapping[str, float] = field(default_factory=dict)
    catalog_ttl_s: float = CATALOG_TTL_S
    mutant: str = ""
    tenant_secret: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)


@dataclass(slots=True)
class CheckStats:
    """Aggregated alerts of one check under one root."""

    count: int = 0
    tenants: set[str] = field(default_factory=set)
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_message: str = ""
    last_tenant: str = ""
    last_rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class RootBook:
    """Alerts and heartbeats seen under one root."""

    checks: dict[str, CheckStats] = field(default_factory=dict)
    heartbeats: dict[str, float] = field(default_factory=dict)
    seen: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)
    persist_failures: int = 0


@dataclass(slots=True)
class TokenBucket:
    """A per-tenant alert allowance: `burst` tokens, refilled at `rate_per_s`."""

    tokens: float
    updated_at: float

    def take(self, now: float, *, rate_per_s: float, burst: float) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        self.tokens = min(burst, self.tokens + max(0.0, now - self.updated_at) * rate_per_s)
        self.updated_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate_per_s


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


def parse_fault_value(key: str, value: object, colos: Collection[str]) -> float:
    """Validate one fault setting (from argv text or JSON) and return its number."""
    if key not in FAULT_KEYS:
        colo = key.removeprefix(KV_MISS_FAULT_PREFIX)
        if not key.startswith(KV_MISS_FAULT_PREFIX) or colo not in colos:
            known = [*FAULT_KEYS, *(KV_MISS_FAULT_PREFIX + c for c in sorted(colos))]
            raise UsageError(f"unknown fault {key!r}; use one of: {', '.join(known)}")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UsageError(f"fault {key} must be a number, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"fault {key} must be a number, not {value!r}") from None
    high = 1.0 if key == "5xx_rate" else MAX_FAULT_MS
    if not math.isfinite(number) or not 0.0 <= number <= high:
        raise UsageError(f"fault {key} = {value!r} is out of range 0..{high:g}")
    return number


def parse_fault_assignments(items: Sequence[str], colos: Collection[str]) -> dict[str, float]:
    """Parse `KEY=VALUE` fault arguments."""
    faults: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"fault {item!r} is not KEY=VALUE (e.g. 5xx_rate=0.1)")
        faults[key.strip()] = parse_fault_value(key.strip(), value.strip(), colos)
    return faults


def apply_fault_update(
    current: Mapping[str, float], update: object, colos: Collection[str]
) -> dict[str, float]:
    """Return the faults after a runtime update: null removes a key, {"clear": true} resets."""
    if not isinstance(update, dict):
        raise UsageError("fault update must be a JSON object")
    result: dict[str, float] = {}
    clear = update.get("clear", False)
    if not isinstance(clear, bool):
        raise UsageError("fault update 'clear' must be true or false")
    if not clear:
        result.update(current)
    for key, value in update.items():
        if key == "clear":
            continue
        if value is None:
            parse_fault_value(key, 0, colos)
            result.pop(key, None)
        else:
            result[key] = parse_fault_value(key, value, colos)
    return result


def parse_alert_rows(raw: object) -> list[dict[str, Any]]:
    """Validate the optional failing rows of an alert and cap their number and size."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(row, dict) for row in raw):
        raise ContractError("alert rows must be a list of objects")
    rows: list[dict[str, Any]] = []
    for row in raw[:MAX_ALERT_ROWS]:
        clean: dict[str, Any] = {}
        for key, value in list(row.items())[:MAX_ROW_FIELDS]:
            if isinstance(value, dict | list):
                value = json.dumps(value, sort_keys=True)
            if isinstance(value, str):
                value = value[:MAX_ROW_VALUE_CHARS]
            clean[str(key)[:64]] = value
        rows.append(clean)
    return rows


def iso_time(epoch_s: float) -> str:
    """Render seconds since the epoch as ISO 8601 UTC with a Z."""
    return epoch_stamp(epoch_s)


def summarize_status(
    checks: Mapping[str, CheckStats], heartbeats: Mapping[str, float], now: float
) -> dict[str, Any]:
    """Aggregate a root's alerts by check (most recent first) and find tenants gone silent."""
    ordered = sorted(checks.items(), key=lambda item: (-item[1].last_seen, item[0]))
    silent = sorted(
        ((tenant, seen) for tenant, seen in heartbeats.items() if now - seen > SILENT_AFTER_S),
        key=lambda item: (item[1], item[0]),
    )
    return {
        "generated_at": iso_time(now),
        "checks": {
            name: {
                "count": stats.count,
                "tenants": sorted(stats.tenants),
                "tenant_count": len(stats.tenants),
                "first_seen": iso_time(stats.first_seen),
                "last_seen": iso_time(stats.last_seen),
                "last_message": stats.last_message,
                "last_tenant": stats.last_tenant,
                "last_rows": stats.last_rows,
            }
            for name, stats in ordered
        },
        "alert_count": sum(stats.count for stats in checks.values()),
        "silent_after_s": int(SILENT_AFTER_S),
        "silent_tenants": [
            {"tenant": tenant, "last_seen": iso_time(seen), "silent_for_s": int(now - seen)}
            for tenant, seen in silent
        ],
        "reporting_tenants": sorted(
            tenant for tenant, seen in heartbeats.items() if now - seen <= SILENT_AFTER_S
        ),
    }


def render_status_html(summary: Mapping[str, Any]) -> str:
    """Render a status summary as a small self-contained HTML page, failing checks first."""
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Sync status</title>',
        "<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.bad{color:#b00}</style>",
        "</head><body>",
        "<h1>Sync status</h1>",
        f"<p>Root <code>{esc(str(summary.get('root', '')))}</code>, "
        f"generated {esc(str(summary.get('generated_at', '')))}</p>",
        "<h2>Failing checks</h2>",
    ]
    checks: Mapping[str, Mapping[str, Any]] = summary.get("checks", {})
    if checks:
        parts.append(
            "<table><tr><th>check</th><th>alerts</th><th>tenants</th><th>first seen</th>"
            "<th>last seen</th><th>last message</th></tr>"
        )
        for name, row in checks.items():
            tenants = ", ".join(row.get("tenants", []))
            parts.append(
                f'<tr><td class="bad">{esc(name)}</td><td>{int(row.get("count", 0))}</td>'
                f"<td>{int(row.get('tenant_count', 0))}: {esc(tenants)}</td>"
                f"<td>{esc(str(row.get('first_seen', '')))}</td>"
                f"<td>{esc(str(row.get('last_seen', '')))}</td>"
                f"<td>{esc(str(row.get('last_message', '')))}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>No failing checks.</p>")
    hours = int(summary.get("silent_after_s", SILENT_AFTER_S)) // 3600
    parts.append(f"<h2>Silent tenants (no heartbeat for more than {hours} h)</h2>")
    silent: Sequence[Mapping[str, Any]] = summary.get("silent_tenants", [])
    if silent:
        parts.append("<table><tr><th>tenant</th><th>last heartbeat</th><th>silent for</th></tr>")
        for row in silent:
            parts.append(
                f'<tr><td class="bad">{esc(str(row.get("tenant", "")))}</td>'
                f"<td>{esc(str(row.get('last_seen', '')))}</td>"
                f"<td>{int(row.get('silent_for_s', 0)) // 3600} h</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>No silent tenants.</p>")
    reporting: Sequence[str] = summary.get("reporting_tenants", [])
    parts.append(f"<h2>Reporting tenants ({len(reporting)})</h2>")
    parts.append(f"<p>{esc(', '.join(reporting)) or 'none'}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


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


def _state(request: web.Request) -> WorkerState:
    return request.app[STATE_KEY]


def _region(request: web.Request) -> Region:
    return request.app[REGION_KEY]


def _timing(request: web.Request) -> Timing:
    timing: Timing = request[TIMING]
    return timing


def _root(request: web.Request) -> str:
    root: str = request[ROOT]
    return root


def _mutant(request: web.Request) -> str:
    return _state(request).config.mutant


def in_mutant_region(request: web.Request) -> bool:
    """True in the region a one-region mutant breaks: the last configured one."""
    return _region(request).spec.colo == _state(request).config.regions[-1].colo


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON error answer: {"error": message, "code": status}."""
    return web.json_response({"error": message, "code": status}, status=status, headers=headers)


def _log(message: str) -> None:
    print(f"sync-ci worker: {message}", file=sys.stderr, flush=True)


@web.middleware
async def contract_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Faults, root selection, JSON errors and the cf-ray / server-timing / x-cache headers."""
    started = time.perf_counter()
    state = _state(request)
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
        if _mutant(request) == "region-down" and in_mutant_region(request):
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
        _log(f"internal error on {request.method} {request.path}: {type(exc).__name__}: {exc}")
        response = error_response(500, "internal error")
    if close:
        response.force_close()
    mutant = state.config.mutant
    if mutant == "bad-cf-ray":
        response.headers["cf-ray"] = secrets.token_hex(8)
    elif mutant != "no-cf-ray":
        response.headers["cf-ray"] = f"{secrets.token_hex(8)}-{_region(request).spec.colo}"
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


def _json_body(data: bytes, what: str) -> Any:
    try:
        return contract.parse_json(data, what)
    except ContractError as exc:
        raise ApiError(400, str(exc)) from None


def authenticate_tenant(request: web.Request, *, bypass: bool = False) -> str:
    """Return the tenant id proven by `x-sync-tenant` and its bearer token, else raise 401."""
    secret = _state(request).config.tenant_secret
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
    expected = _state(request).config.admin_token
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


def _check_body_tenant(document: Mapping[str, Any], tenant: str) -> None:
    if "tenant" in document and document["tenant"] != tenant:
        raise ApiError(403, f"body tenant {document['tenant']!r} is not the authenticated tenant")


# --- handlers --------------------------------------------------------------------------------


async def handle_health(request: web.Request) -> web.Response:
    """GET /_health."""
    return web.json_response(
        {
            "ok": True,
            "version": __version__,
            "root": _root(request),
            "contract": contract.CONTRACT_VERSION,
            "colo": _region(request).spec.colo,
            "catalog_ttl_s": _state(request).config.catalog_ttl_s,
        }
    )


async def read_catalog(request: web.Request) -> tuple[contract.Catalog, bytes]:
    """Read the root's catalog and its stored bytes through this region's KV (404, 502)."""
    state, region, root, timing = (
        _state(request),
        _region(request),
        _root(request),
        _timing(request),
    )
    key = contract.catalog_key(root)

    async def load() -> tuple[Any, int] | None:
        data = await state.bucket(timing, state.store.get, key)
        if data is None:
            return None
        return (contract.parse_catalog(contract.parse_json(data, key), key), data), len(data)

    if _mutant(request) == "region-500" and in_mutant_region(request):
        raise ApiError(500, "internal error")
    # The stale-catalog mutant keeps what it cached for ever.
    ttl_s = math.inf if _mutant(request) == "stale-catalog" else state.config.catalog_ttl_s
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
    timing = _timing(request)
    request[CACHE] = "hit" if hit else "miss"
    timing.kv_ms = max(0.0, kv_ms - timing.bucket_ms)


async def handle_catalog(request: web.Request) -> web.Response:
    """GET /catalog: the stored bytes of R/catalog.json, once they parse as a catalog."""
    _, data = await read_catalog(request)
    return web.Response(body=data, content_type="application/json")


async def handle_install(request: web.Request) -> web.Response:
    """GET /install: the install manifest built from the cached catalog."""
    mutant = _mutant(request)
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
        _state(request),
        _region(request),
        _root(request),
        _timing(request),
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
    if _mutant(request) == "corrupt-object":
        body = bytes([body[0] ^ 0xFF]) + body[1:] if body else b"\x00"
    return web.Response(
        body=body,
        content_type="application/octet-stream",
        headers={"etag": f'"{name}"', "cache-control": "public, max-age=31536000, immutable"},
    )


async def handle_probe(request: web.Request) -> web.Response:
    """GET /_probe/kv/<nonce>: a KV read of a key this region has never seen (then a hit)."""
    state, region, root = _state(request), _region(request), _root(request)
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
    state, root, mutant = _state(request), _root(request), _mutant(request)
    tenant = authenticate_tenant(request, bypass=mutant == "push-auth-bypass")
    limit = MUTANT_BODY_CAP_BYTES if mutant == "no-413" else contract.PUSH_LIMIT_BYTES
    body = await read_limited(request, limit)
    document = _json_body(body, "push body")
    if not isinstance(document, dict):
        raise ApiError(400, "push body must be a JSON object")
    named = document.get("tenant")
    if (
        mutant == "cross-tenant-push"
        and isinstance(named, str)
        and contract.TENANT_RE.fullmatch(named)
    ):
        tenant = named
    _check_body_tenant(document, tenant)
    key = contract.tenant_state_key(root, tenant)
    if mutant != "push-no-write":
        await state.bucket(_timing(request), state.store.put, key, body, "application/json")
    return web.json_response({"key": key, "sha256": contract.sha256_hex(body)}, status=201)


async def handle_alert(request: web.Request) -> web.Response:
    """POST /_alert: record a failing check once per idempotency key, rate-limited per tenant."""
    state, root = _state(request), _root(request)
    tenant = authenticate_tenant(request)
    body = await read_limited(request, contract.ALERT_LIMIT_BYTES)
    document = _json_body(body, "alert body")
    if state.config.mutant == "alert-controls" and isinstance(document, dict):
        document = {
            k: MUTANT_CONTROL_RE.sub("", v) if isinstance(v, str) else v
            for k, v in document.items()
        }
    try:
        alert = contract.validate_alert(document)
        rows = parse_alert_rows(document.get("rows"))
    except ContractError as exc:
        raise ApiError(400, str(exc)) from None
    idem = alert["idempotency_key"]
    if not IDEMPOTENCY_RE.fullmatch(idem):
        raise ApiError(
            400, "idempotency_key must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'"
        )
    _check_body_tenant(document, tenant)
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
    book.seen[(tenant, idem)] = None
    if len(book.seen) > MAX_SEEN_KEYS:
        book.seen.popitem(last=False)
    stats = book.checks.setdefault(alert["check"], CheckStats(first_seen=now))
    stats.count += 1
    stats.tenants.add(tenant)
    stats.last_seen = now
    stats.last_message = alert["message"]
    stats.last_tenant = tenant
    stats.last_rows = rows
    record = {**alert, "tenant": tenant, "received_at": iso_time(now), "rows": rows}
    key = f"{root}_alerts/{tenant}/{idem}.json"
    data = json.dumps(record, sort_keys=True).encode()
    try:
        await state.bucket(_timing(request), state.store.put, key, data, "application/json")
    except SyncCIError as exc:
        # Best effort: the alert is already counted; a failed copy must not turn into a retry storm.
        book.persist_failures += 1
        _log(f"could not persist alert {key}: {exc}")
    return web.json_response({"stored": True, "idempotency_key": idem}, status=202)


async def handle_heartbeat(request: web.Request) -> web.Response:
    """POST /_heartbeat: remember when the tenant was last heard from."""
    state, root = _state(request), _root(request)
    tenant = authenticate_tenant(request)
    await read_limited(request, HEARTBEAT_LIMIT_BYTES)
    state.book(root).heartbeats[tenant] = state.now()
    return web.Response(status=204)


async def handle_status(request: web.Request) -> web.Response:
    """GET /_status: alerts by check and silent tenants; HTML for Accept: text/html."""
    if _mutant(request) != "status-open":
        authenticate_admin(request)
    state, root = _state(request), _root(request)
    book = state.book(root)
    summary = {"root": root, **summarize_status(book.checks, book.heartbeats, state.now())}
    summary["persist_failures"] = book.persist_failures
    if "text/html" in request.headers.get("accept", ""):
        return web.Response(text=render_status_html(summary), content_type="text/html")
    return web.json_response(summary)


async def handle_faults_get(request: web.Request) -> web.Response:
    """GET /_sandbox/faults."""
    authenticate_admin(request)
    return web.json_response({"faults": _state(request).faults})


async def handle_faults_post(request: web.Request) -> web.Response:
    """POST /_sandbox/faults: change faults at run time (null removes a key, clear resets)."""
    authenticate_admin(request)
    state = _state(request)
    update = _json_body(await read_limited(request, CONTROL_LIMIT_BYTES), "fault update")
    try:
        state.faults = apply_fault_update(state.faults, update, state.colos)
    except UsageError as exc:
        raise ApiError(400, str(exc)) from None
    return web.json_response({"faults": state.faults})


async def handle_clock_get(request: web.Request) -> web.Response:
    """GET /_sandbox/clock."""
    authenticate_admin(request)
    state = _state(request)
    return web.json_response({"offset_s": state.clock_offset_s, "now": iso_time(state.now())})


async def handle_clock_post(request: web.Request) -> web.Response:
    """POST /_sandbox/clock {"offset_s": N}: shift the Worker's now."""
    authenticate_admin(request)
    state = _state(request)
    document = _json_body(await read_limited(request, CONTROL_LIMIT_BYTES), "clock body")
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
