"""The sandbox's ready file: the fixed names it records, the SandboxInfo it holds, and its I/O.

`write_ready_file` publishes a running sandbox (mode 600); `read_ready_file` parses it and refuses
a stale one (its owner process is gone). Every reader takes the schema from here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.errors import SettingsError
from sync_ci.files import write_private
from sync_ci.sandbox.processes import is_running
from sync_ci.sandbox.store_server import STORE_KINDS, StoreKind

if TYPE_CHECKING:
    from sync_ci.sandbox.workerd import Runtime

SCHEMA = "sync-ci/sandbox@1"
BUCKET = "sync-ci-sandbox"
LIVE_ROOT = "snappy-os/"
CI_ROOT = "snappy-os-ci/"
TENANT_ID = "sandbox-tenant"
STORE_REGION = "us-east-1"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreInfo:
    """Where the sandbox's bucket is and how to sign for it."""

    kind: StoreKind
    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RegionInfo:
    """One Worker listener."""

    name: str
    colo: str
    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    """The reference Worker process and its regions (the first region is its main URL)."""

    pid: int
    url: str
    regions: tuple[RegionInfo, ...]
    runtime: Runtime = "python"


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxInfo:
    """Everything a client needs to use a running sandbox; the ready file is its JSON."""

    store: StoreInfo
    worker: WorkerInfo
    live_root: str
    ci_root: str
    tenant_id: str
    tenant_secret: str = field(repr=False)
    admin_token: str = field(repr=False)
    started_at: str
    # The process that runs the sandbox: its ready file is void once that process is gone.
    owner_pid: int = field(default_factory=os.getpid)
    owner_started: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Render as the ready-file document (schema sync-ci/sandbox@1)."""
        return {
            "schema": SCHEMA,
            "store": {
                "kind": self.store.kind,
                "endpoint_url": self.store.endpoint_url,
                "bucket": self.store.bucket,
                "access_key_id": self.store.access_key_id,
                "secret_access_key": self.store.secret_access_key,
                "pid": self.store.pid,
            },
            "worker": {
                "pid": self.worker.pid,
                "url": self.worker.url,
                "regions": [
                    {"name": r.name, "colo": r.colo, "url": r.url} for r in self.worker.regions
                ],
                "runtime": self.worker.runtime,
            },
            "live_root": self.live_root,
            "ci_root": self.ci_root,
            "tenant_id": self.tenant_id,
            "tenant_secret": self.tenant_secret,
            "admin_token": self.admin_token,
            "started_at": self.started_at,
            "owner": {"pid": self.owner_pid, "started": self.owner_started},
        }


def info_from_json(document: Any, what: str = "sandbox ready file") -> SandboxInfo:
    """Parse a ready-file document, raising SettingsError naming what is wrong."""

    def need(mapping: Any, key: str, kind: type, where: str) -> Any:
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            raise SettingsError(f"{what}: {where}{key} is missing or not a {kind.__name__}")
        return value

    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise SettingsError(f"{what} is not a {SCHEMA} document")
    store, worker = document.get("store"), document.get("worker")
    worker = worker if isinstance(worker, dict) else {}
    regions = []
    raw_regions = need(worker, "regions", list, "worker.")
    for index, item in enumerate(raw_regions):
        where = f"worker.regions[{index}]."
        regions.append(
            RegionInfo(
                name=need(item, "name", str, where),
                colo=need(item, "colo", str, where),
                url=need(item, "url", str, where),
            )
        )
    owner = document.get("owner")
    owner_pid = need(owner, "pid", int, "owner.")
    owner_started = owner.get("started") if isinstance(owner, dict) else None
    if owner_started is not None and (
        not isinstance(owner_started, int) or isinstance(owner_started, bool)
    ):
        raise SettingsError(f"{what}: owner.started is not a whole number")
    kind = need(store, "kind", str, "store.")
    if kind not in STORE_KINDS:
        raise SettingsError(f"{what}: store.kind {kind!r} is not one of {', '.join(STORE_KINDS)}")
    return SandboxInfo(
        store=StoreInfo(
            kind=kind,
            endpoint_url=need(store, "endpoint_url", str, "store."),
            bucket=need(store, "bucket", str, "store."),
            access_key_id=need(store, "access_key_id", str, "store."),
            secret_access_key=need(store, "secret_access_key", str, "store."),
            pid=need(store, "pid", int, "store."),
        ),
        worker=WorkerInfo(
            pid=need(worker, "pid", int, "worker."),
            url=need(worker, "url", str, "worker."),
            regions=tuple(regions),
            runtime="workerd" if worker.get("runtime") == "workerd" else "python",
        ),
        live_root=need(document, "live_root", str, ""),
        ci_root=need(document, "ci_root", str, ""),
        tenant_id=need(document, "tenant_id", str, ""),
        tenant_secret=need(document, "tenant_secret", str, ""),
        admin_token=need(document, "admin_token", str, ""),
        started_at=need(document, "started_at", str, ""),
        owner_pid=owner_pid,
        owner_started=owner_started,
    )


def write_ready_file(info: SandboxInfo, path: Path) -> Path:
    """Write the ready file atomically, readable by the owner alone (mode 600)."""
    text = json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n"
    return write_private(path, text, parents=True)


def read_ready_file(path: Path) -> SandboxInfo:
    """Read a ready file, raising SettingsError when it is missing or malformed."""
    hint = f"start a sandbox with `sync-ci sandbox --ready-file {path}`"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"SYNC_CI_SANDBOX names {path}, which does not exist; {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read the sandbox ready file {path}: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"the sandbox ready file {path} is not JSON ({exc}); {hint}") from None
    info = info_from_json(document, f"the sandbox ready file {path}")
    if not is_running(info.owner_pid, info.owner_started):
        raise SettingsError(
            f"the sandbox ready file {path} is stale: the sandbox that wrote it (pid "
            f"{info.owner_pid}) is no longer running; start a new one with "
            f"`sync-ci sandbox --ready-file {path}` or unset SYNC_CI_SANDBOX"
        )
    return info
