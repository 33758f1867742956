"""Point Settings at a sandbox (SYNC_CI_SANDBOX's, or an ephemeral one); change its faults."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci import contract
from sync_ci.config import Region, Secrets, Settings
from sync_ci.errors import SettingsError, UnreachableError, UsageError, WorkerError
from sync_ci.sandbox.launcher import STORE_REGION, SandboxInfo, read_ready_file

if TYPE_CHECKING:
    from sync_ci.worker import WorkerClient

CONTROL_POSTS = ("/_sandbox/faults", "/_sandbox/clock")
HEALTH_TIMEOUT_S = 5.0


def settings_for(settings: Settings, info: SandboxInfo, source: str) -> Settings:
    """Return `settings` filled in with the sandbox's store, Worker, regions and secrets."""
    tenant_id = settings.tenant_id or info.tenant_id
    secrets = Secrets(
        access_key_id=info.store.access_key_id,
        secret_access_key=info.store.secret_access_key,
        tenant_secret=info.tenant_secret,
        tenant_token=contract.tenant_token(info.tenant_secret, tenant_id),
        admin_token=info.admin_token,
    )
    filled = ("bucket", "endpoint_url", "region_name", "worker_url", "live_root", "ci_root")
    sources = {**settings.sources, **{name: source for name in filled}}
    if not settings.tenant_id:
        sources["tenant_id"] = source
    return settings.with_values(
        bucket=info.store.bucket,
        endpoint_url=info.store.endpoint_url,
        region_name=STORE_REGION,
        worker_url=info.worker.url,
        live_root=info.live_root,
        ci_root=info.ci_root,
        regions=tuple(Region(name=r.name, url=r.url, colo=r.colo) for r in info.worker.regions),
        tenant_id=tenant_id,
        secrets=secrets,
        sources=sources,
    )


def check_alive(info: SandboxInfo, path: str) -> None:
    """Raise UnreachableError unless the sandbox's Worker answers GET /_health."""
    from sync_ci.worker import WorkerClient, WorkerTarget

    target = WorkerTarget(
        base_url=info.worker.url, read_only=True, timeout_s=HEALTH_TIMEOUT_S, retries=0
    )
    healthy = False
    with contextlib.suppress(UnreachableError, WorkerError), WorkerClient(target) as client:
        answer = client.get("/_health", retry=False)
        document = answer.json() if answer.status == 200 else None
        healthy = isinstance(document, dict) and document.get("ok") is True
    if not healthy:
        raise UnreachableError(
            f"the sandbox named by SYNC_CI_SANDBOX={path} is not answering; "
            f"start one with `sync-ci sandbox --ready-file {path}`"
        )


@contextlib.contextmanager
def attach(settings: Settings) -> Iterator[Settings]:
    """Yield settings pointed at a sandbox for the duration of the block (ci/live: unchanged)."""
    if settings.target != "sandbox":
        yield settings
        return
    if settings.sandbox_file:
        info = read_ready_file(Path(settings.sandbox_file))
        check_alive(info, settings.sandbox_file)
        yield settings_for(settings, info, f"sandbox {settings.sandbox_file}")
        return
    from sync_ci.sandbox.launcher import start_sandbox

    with start_sandbox() as sandbox:
        yield settings_for(settings, sandbox.info, "ephemeral sandbox")


def _control_client(settings: Settings) -> WorkerClient:
    from sync_ci.worker import WorkerClient, WorkerTarget

    if settings.target != "sandbox":
        raise UsageError(f"faults exist only on the sandbox; this run targets {settings.target}")
    if not (settings.worker_url and settings.secrets.admin_token):
        raise SettingsError(
            "no sandbox attached: set SYNC_CI_SANDBOX to a sandbox ready file "
            "(start one with `sync-ci sandbox --ready-file PATH`)"
        )
    return WorkerClient(
        WorkerTarget(
            base_url=settings.worker_url,
            read_only=False,
            timeout_s=settings.worker_timeout_s,
            allowed_posts=CONTROL_POSTS,
        )
    )


def _faults_call(settings: Settings, body: Mapping[str, object] | None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {settings.secrets.admin_token}"}
    with _control_client(settings) as client:
        if body is None:
            answer = client.get("/_sandbox/faults", headers=headers)
        else:
            answer = client.post("/_sandbox/faults", json_body=dict(body), headers=headers)
    document = answer.json() if answer.status in (200, 400) else None
    if answer.status == 400 and isinstance(document, dict):
        raise UsageError(f"the sandbox refused the fault change: {document.get('error', '?')}")
    if answer.status != 200 or not isinstance(document, dict):
        raise WorkerError(f"{answer.url} answered {answer.status} to a fault request")
    faults = document.get("faults")
    if not isinstance(faults, dict):
        raise WorkerError(f"{answer.url} answered without a 'faults' object")
    return faults


def get_faults(settings: Settings) -> dict[str, Any]:
    """Return the faults now in force on the attached sandbox."""
    return _faults_call(settings, None)


def set_faults(settings: Settings, faults: Mapping[str, object]) -> dict[str, Any]:
    """Change faults at run time (a None value removes one); return the faults now in force."""
    if "clear" in faults:
        raise UsageError("use clear_faults() to reset every fault")
    return _faults_call(settings, faults)


def clear_faults(settings: Settings) -> dict[str, Any]:
    """Remove every fault; return the (empty) faults now in force."""
    return _faults_call(settings, {"clear": True})

