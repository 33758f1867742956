"""The smoke's tenant and admin phases: the push, the refusals contract v1 demands (wrong token,
another tenant's state, oversize, control characters, /_status without the admin token), the
alert round trip and /_status.
"""

from __future__ import annotations

import json
import secrets
import socket
from datetime import UTC, datetime

from sync_ci import __version__
from sync_ci.clock import utc_stamp
from sync_ci.contract import PUSH_LIMIT_BYTES, TENANT_HEADER, tenant_state_key
from sync_ci.contract import tenant_headers as contract_tenant_headers
from sync_ci.smoke_run import PhaseFailed, Skipped, SmokeRun
from sync_ci.worker import Answer, error_text, expect


def tenant_headers(run: SmokeRun) -> dict[str, str]:
    """Tenant auth headers of contract v1."""
    if not run.tenant_token:
        raise Skipped(
            f"no token for tenant {run.tenant_id}: set SYNC_CI_TENANT_SECRET (a SYNC_CI_TENANT_TOKEN "
            "serves only the tenant named by SYNC_CI_TENANT_ID): push and alert not checked"
        )
    return contract_tenant_headers(run.tenant_id, run.tenant_token)


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
