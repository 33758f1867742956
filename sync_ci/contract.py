"""Reference sync contract v1: catalog, manifest, push and alert shapes, digests, tenant tokens."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from sync_ci.errors import ContractError
from sync_ci.redaction import first_control

CONTRACT_VERSION = 1
CATALOG_SCHEMA = 1
PUSH_LIMIT_BYTES = 64 * 1024
ALERT_LIMIT_BYTES = 16 * 1024
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CF_RAY_RE = re.compile(r"^[0-9a-f]{16}-([A-Z]{3})$")
ALERT_FIELDS = ("check", "message", "host", "version", "ts", "idempotency_key")
ROOT_HEADER = "x-sync-ci-root"
TENANT_HEADER = "x-sync-tenant"


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogEntry:
    """One named artifact in the catalog."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalog:
    """A parsed `R/catalog.json`."""

    generation: int
    entries: tuple[CatalogEntry, ...]

    def to_json(self) -> dict[str, Any]:
        """Render as the contract's JSON document."""
        return {
            "schema": CATALOG_SCHEMA,
            "generation": self.generation,
            "entries": {e.name: {"sha256": e.sha256, "size": e.size} for e in self.entries},
        }


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def tenant_token(tenant_secret: str, tenant_id: str) -> str:
    """Return hex(HMAC-SHA256(tenant_secret, tenant_id))."""
    return hmac.new(tenant_secret.encode(), tenant_id.encode(), hashlib.sha256).hexdigest()


def tenant_headers(tenant_id: str, token: str) -> dict[str, str]:
    """Return the headers that prove a tenant: its id and its bearer token."""
    return {TENANT_HEADER: tenant_id, "authorization": f"Bearer {token}"}


def token_matches(tenant_secret: str, tenant_id: str, token: str) -> bool:
    """Compare a presented token in constant time."""
    return hmac.compare_digest(tenant_token(tenant_secret, tenant_id), token)


def validate_tenant_id(tenant_id: str) -> str:
    """Return the id if it is 1-63 of [a-z0-9_-], starting alphanumeric."""
    if not TENANT_RE.fullmatch(tenant_id):
        raise ContractError(
            f"tenant id {tenant_id!r} must be 1-63 characters of a-z, 0-9, '_' or '-'"
        )
    return tenant_id


def parse_json(data: bytes, what: str) -> Any:
    """Decode JSON bytes or raise ContractError naming the document."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{what} is not valid JSON: {exc}") from None


def parse_catalog(document: Any, what: str = "catalog") -> Catalog:
    """Validate a catalog document against contract v1."""
    if not isinstance(document, dict):
        raise ContractError(f"{what} is not a JSON object")
    if document.get("schema") != CATALOG_SCHEMA:
        raise ContractError(
            f"{what} has schema {document.get('schema')!r}, expected {CATALOG_SCHEMA}"
        )
    generation = document.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ContractError(f"{what} generation {generation!r} is not a non-negative integer")
    raw = document.get("entries")
    if not isinstance(raw, dict):
        raise ContractError(f"{what} entries is not an object")
    entries = []
    for name, entry in sorted(raw.items()):
        if not isinstance(entry, dict):
            raise ContractError(f"{what} entry {name!r} is not an object")
        digest, size = entry.get("sha256"), entry.get("size")
        if not isinstance(digest, str) or not SHA256_RE.fullmatch(digest):
            raise ContractError(f"{what} entry {name!r} has no valid sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ContractError(f"{what} entry {name!r} has an invalid size {size!r}")
        entries.append(CatalogEntry(name=name, sha256=digest, size=size))
    return Catalog(generation=generation, entries=tuple(entries))


def build_catalog(files: dict[str, bytes], generation: int) -> tuple[Catalog, dict[str, bytes]]:
    """Return the catalog for named files and the content-addressed blobs it points to."""
    blobs = {sha256_hex(data): data for data in files.values()}
    entries = tuple(
        CatalogEntry(name=name, sha256=sha256_hex(data), size=len(data))
        for name, data in sorted(files.items())
    )
    return Catalog(generation=generation, entries=entries), blobs


def catalog_key(root: str) -> str:
    """Return `R/catalog.json`."""
    return f"{root}catalog.json"


def object_key(root: str, digest: str) -> str:
    """Return `R/objects/<sha256>`."""
    if not SHA256_RE.fullmatch(digest):
        raise ContractError(f"object name {digest!r} is not a sha256")
    return f"{root}objects/{digest}"


def tenant_state_key(root: str, tenant_id: str) -> str:
    """Return `R/tenants/<tenant>/state.json`."""
    return f"{root}tenants/{validate_tenant_id(tenant_id)}/state.json"


def run_key(root: str) -> str:
    """Return `R/_ci/run.json`."""
    return f"{root}_ci/run.json"


def colo_from_ray(ray: str) -> str:
    """Return the data-centre suffix of a `cf-ray` header, or '' when it has none."""
    match = CF_RAY_RE.fullmatch(ray.strip())
    return match.group(1) if match else ""


def validate_alert(document: Any) -> dict[str, str]:
    """Check an alert body has every field as a string free of control characters."""
    if not isinstance(document, dict):
        raise ContractError("alert body is not a JSON object")
    missing = [
        f for f in ALERT_FIELDS if not isinstance(document.get(f), str) or not document.get(f)
    ]
    if missing:
        raise ContractError(f"alert body lacks {', '.join(missing)}")
    for name in ALERT_FIELDS:
        # Alerts are printed on the maintainer's terminal; an escape sequence could rewrite it.
        char = first_control(document[name])
        if char is not None:
            raise ContractError(
                f"alert field {name!r} holds a control character (U+{ord(char):04X}); "
                "send one line of plain text"
            )
    return {f: str(document[f]) for f in ALERT_FIELDS}
