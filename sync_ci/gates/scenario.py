"""The gate scenarios, defined once: operations, counts, bodies, tenants, probe keys.

Every engine (the built-in aiohttp one, and any other) runs the requests planned here.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync_ci.contract import (
    TENANT_HEADER,
    parse_catalog,
    tenant_headers,
    tenant_state_key,
    tenant_token,
)
from sync_ci.errors import ContractError, UsageError

INSTALL = "install"
PUSH = "push"
OPERATIONS = (INSTALL, PUSH)
INSTALL_PATH = "/install"
PUSH_PATH = "/_push"
PROBE_PATH = "/_probe/kv/"
EXPECTED_STATUS = {INSTALL: 200, PUSH: 201}
# One answer in this many is checked in full (every catalog entry); the rest by shape only.
FULL_CHECK_EVERY = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadScenario:
    """The load burst: concurrent installs and pushes fired together."""

    installs: int = 1000
    pushes: int = 100
    tenants: int = 100
    body_bytes: int = 10 * 1024
    tenant_prefix: str = "gate"

    def tenant_ids(self) -> list[str]:
        """Return the distinct tenant ids the pushes use."""
        return [f"{self.tenant_prefix}-{i:03d}" for i in range(self.tenants)]

    def planned(self) -> dict[str, int]:
        """Return the planned count per operation."""
        return {INSTALL: self.installs, PUSH: self.pushes}

    def to_json(self) -> dict[str, object]:
        """Render for the result document."""
        return {
            "installs": self.installs,
            "pushes": self.pushes,
            "tenants": self.tenants,
            "body_bytes": self.body_bytes,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyScenario:
    """The cold-KV probe: samples per region at bounded concurrency."""

    samples: int = 200
    concurrency: int = 8

    def to_json(self) -> dict[str, object]:
        """Render for the result document."""
        return {"samples": self.samples, "concurrency": self.concurrency}


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedRequest:
    """One request of a scenario, ready for any engine to send."""

    operation: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def push_body(tenant_id: str, size: int, nonce: str) -> bytes:
    """Return a JSON push body of exactly `size` bytes."""
    document = {
        "schema": 1,
        "tenant": tenant_id,
        "source": "sync-ci gate load",
        "nonce": nonce,
        "pad": "",
    }
    base = len(json.dumps(document, separators=(",", ":")).encode())
    if size < base:
        raise UsageError(f"push body of {size} bytes is too small for the push document ({base})")
    document["pad"] = "x" * (size - base)
    body = json.dumps(document, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def push_request(tenant_id: str, tenant_secret: str, size: int, nonce: str) -> PlannedRequest:
    """Return one authenticated push for a tenant."""
    return PlannedRequest(
        operation=PUSH,
        method="POST",
        path=PUSH_PATH,
        headers={
            **tenant_headers(tenant_id, tenant_token(tenant_secret, tenant_id)),
            "content-type": "application/json",
        },
        body=push_body(tenant_id, size, nonce),
    )


def install_request() -> PlannedRequest:
    """Return one install manifest request."""
    return PlannedRequest(operation=INSTALL, method="GET", path=INSTALL_PATH)


def plan_burst(scenario: LoadScenario, tenant_secret: str) -> list[PlannedRequest]:
    """Return every request of the burst: installs first, then one push per tenant in turn."""
    if not tenant_secret:
        raise UsageError(
            "the load gate pushes as tenants and needs the tenant secret (SYNC_CI_TENANT_SECRET)"
        )
    if scenario.tenants < 1 and scenario.pushes:
        raise UsageError("the load scenario needs at least one tenant")
    run = secrets.token_hex(4)
    tenants = scenario.tenant_ids()
    plan = [install_request() for _ in range(scenario.installs)]
    for i in range(scenario.pushes):
        tenant = tenants[i % len(tenants)]
        plan.append(push_request(tenant, tenant_secret, scenario.body_bytes, f"{run}-{i}"))
    return plan


def open_model_operations(scenario: LoadScenario) -> Iterator[str]:
    """Yield operations forever in the scenario's install:push ratio, evenly interleaved."""
    total = scenario.installs + scenario.pushes
    if total == 0:
        raise UsageError("the load scenario plans no requests")
    # Bresenham-style interleave: push number k lands where k*total/pushes falls.
    i = 0
    while True:
        position = i % total
        is_push = (
            scenario.pushes
            and (position * scenario.pushes) // total != ((position + 1) * scenario.pushes) // total
        )
        yield PUSH if is_push else INSTALL
        i += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenSchedule:
    """The open-model phase's plan: each request's intended send time (a fixed, wrk2-style rate)."""

    scenario: LoadScenario
    tenant_secret: str
    rate: float
    duration_s: float
    operations: tuple[str, ...]
    run: str

    def planned(self) -> dict[str, int]:
        """Return the planned count per operation."""
        return {name: self.operations.count(name) for name in OPERATIONS}

    def requests(self) -> Iterator[tuple[int, PlannedRequest]]:
        """Yield (ns after the phase starts, request) in order; each push is built as it comes."""
        interval_ns = 1e9 / self.rate
        tenants = self.scenario.tenant_ids()
        pushes = 0
        for i, operation in enumerate(self.operations):
            if operation == PUSH:
                tenant = tenants[pushes % len(tenants)]
                nonce = f"{self.run}-o{pushes}"
                request = push_request(tenant, self.tenant_secret, self.scenario.body_bytes, nonce)
                pushes += 1
            else:
                request = install_request()
            yield int(i * interval_ns), request


def open_schedule(
    scenario: LoadScenario, tenant_secret: str, *, rate: float, duration_s: float
) -> OpenSchedule:
    """Plan `rate` requests a second for `duration_s` in the scenario's install:push ratio."""
    if rate <= 0 or duration_s <= 0:
        raise UsageError("--rate and --duration must both be positive")
    operations = open_model_operations(scenario)
    return OpenSchedule(
        scenario=scenario,
        tenant_secret=tenant_secret,
        rate=rate,
        duration_s=duration_s,
        operations=tuple(next(operations) for _ in range(round(rate * duration_s))),
        run=secrets.token_hex(4),
    )


def split(plan: Sequence[PlannedRequest], parts: int) -> list[list[PlannedRequest]]:
    """Deal a plan into `parts` slices (round robin, so each slice keeps the operation mix)."""
    if parts < 1:
        raise UsageError(f"cannot split a plan into {parts} parts")
    return [list(plan[i::parts]) for i in range(parts)]


def probe_path(nonce: str) -> str:
    """Return the cold-KV probe path for a never-used key."""
    return f"{PROBE_PATH}{nonce}"


def region_slug(name: str) -> str:
    """Return a region name as it may stand in a probe key (lowercase alphanumerics and `-`)."""
    return "".join(c if c.isalnum() else "-" for c in name.lower())[:24] or "region"


def probe_nonces(region: str, count: int) -> list[str]:
    """Return `count` unique, never-reused probe keys for a region (random per run)."""
    run = secrets.token_hex(8)
    return [f"sync-ci-{region_slug(region)}-{run}-{i:05d}" for i in range(count)]


def _document(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None


def answer_problem(
    request: PlannedRequest, status: int, body: bytes, *, root: str = "", full: bool = False
) -> str:
    """Return why a 2xx answer is not what the contract promises for the request ('' if it is).

    Every answer's shape is checked (cheap); with `full`, an install manifest's every entry too.
    A push must answer with the key under `root` (when given) and the sha256 of the bytes sent.
    """
    expected = EXPECTED_STATUS.get(request.operation)
    if expected is not None and status != expected:
        return f"answered {status}, expected {expected}"
    document = _document(body)
    if not isinstance(document, dict):
        return f"answered {status} with a body that is not a JSON object: {body[:60]!r}"
    if request.operation == INSTALL:
        if "error" in document:
            return f"answered {status} with an error body: {str(document['error'])[:80]!r}"
        if not isinstance(document.get("object_base"), str):
            return "answered a manifest without an object_base"
        generation, entries = document.get("generation"), document.get("entries")
        if document.get("schema") != 1 or not isinstance(entries, dict):
            return "answered a manifest without schema 1 and an entries object"
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            return f"answered a manifest with generation {generation!r}"
        if full:
            try:
                parse_catalog(document, "manifest")
            except ContractError as exc:
                return f"answered a malformed manifest: {exc}"
        return ""
    if request.operation == PUSH:
        tenant = request.headers.get(TENANT_HEADER, "")
        key, digest = document.get("key"), document.get("sha256")
        want = tenant_state_key(root, tenant) if root else f"tenants/{tenant}/state.json"
        if not isinstance(key, str) or not (key == want if root else key.endswith(want)):
            return f"answered push key {key!r}, expected {want!r}"
        if digest != hashlib.sha256(request.body).hexdigest():
            return f"answered push sha256 {str(digest)[:16]!r}…, not that of the bytes sent"
    return ""
