"""Fill Settings in from a sandbox, start a local Worker over a CI prefix, change faults.

Which of these a command gets is decided in one place, `sync_ci.attachment.open_target`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci import contract
from sync_ci.config import Region, Settings
from sync_ci.config_env import Secrets, register_settings_secrets
from sync_ci.errors import SettingsError, UnreachableError, UsageError, WorkerError
from sync_ci.sandbox.ready_file import STORE_REGION, SandboxInfo
from sync_ci.target import SMOKE_TENANT

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
    # The sandbox's secrets are masked like any other: a failing row may quote a header.
    register_settings_secrets(secrets, tenant_id)
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
def local_ci_worker(settings: Settings) -> Iterator[Settings]:
    """Start the reference Worker on loopback over `ci_prefix` of the real bucket (writes only there).

    With `[worker] runtime = "workerd"` it is the JavaScript Worker on workerd, and with
    `[worker] project` the user's own Worker project; secrets reach it as bindings, never argv.
    """
    import os
    import secrets as _secrets
    import subprocess
    import tempfile

    from sync_ci.extras import require_extra
    from sync_ci.guards import is_full_ci_prefix
    from sync_ci.sandbox.processes import spawn, stop_process_group
    from sync_ci.sandbox.worker_process import (
        WORKER_COMMAND,
        WORKERD_READY_TIMEOUT_S,
        wait_for_worker,
    )
    from sync_ci.sandbox.workerd import workerd_command, write_project_file

    prefix = settings.ci_prefix
    if not settings.endpoint_url:
        raise SettingsError(
            "target ci without a preview URL starts a local Worker over the bucket, and it needs "
            "the store's endpoint: set [store] endpoint_url in sync-ci.toml or "
            "SYNC_CI_ENDPOINT_URL (or SYNC_CI_PREVIEW_URL to test a deployed preview)"
        )
    if not is_full_ci_prefix(prefix, settings.ci_root):
        raise SettingsError(
            f"refusing to start a Worker over {prefix!r}: not a full {settings.ci_root}<sha>/"
        )
    tenant_id = settings.tenant_id or SMOKE_TENANT
    tenant_secret = settings.secrets.tenant_secret or _secrets.token_hex(32)
    admin_token = settings.secrets.admin_token or _secrets.token_hex(32)
    with tempfile.TemporaryDirectory(prefix="sync-ci-worker-") as workdir:
        ready, log_path = Path(workdir) / "ready.json", Path(workdir) / "worker.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SYNC_CI_WORKER_")},
            "SYNC_CI_WORKER_STORE_ENDPOINT": settings.endpoint_url,
            "SYNC_CI_WORKER_STORE_REGION": settings.region_name,
            "SYNC_CI_WORKER_BUCKET": settings.bucket,
            "SYNC_CI_WORKER_ACCESS_KEY_ID": settings.secrets.access_key_id,
            "SYNC_CI_WORKER_SECRET_ACCESS_KEY": settings.secrets.secret_access_key,
            "SYNC_CI_WORKER_TENANT_SECRET": tenant_secret,
            "SYNC_CI_WORKER_ADMIN_TOKEN": admin_token,
        }
        runtime, timeout_s = tuple(WORKER_COMMAND), 30.0
        if settings.worker_runtime != "workerd":
            require_extra("aiohttp", "sandbox", needed_by="the local reference Worker")
        if settings.worker_runtime == "workerd":
            runtime, timeout_s = workerd_command(), WORKERD_READY_TIMEOUT_S
            if settings.worker_project:
                project = write_project_file(Path(settings.worker_project), Path(workdir))
                runtime += ("--project", str(project))
        command = [
            *runtime,
            "--ready-file",
            str(ready),
            "--root",
            prefix,
            "--ci-root",
            settings.ci_root,
            "--write-prefix",
            prefix,
        ]
        with open(log_path, "wb") as log:
            worker = spawn(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        try:
            document = wait_for_worker(worker, ready, log_path, timeout_s)
            regions = document["regions"]
            yield settings.with_values(
                worker_url=str(regions[0]["url"]),
                tenant_id=tenant_id,
                secrets=Secrets(
                    access_key_id=settings.secrets.access_key_id,
                    secret_access_key=settings.secrets.secret_access_key,
                    tenant_secret=tenant_secret,
                    tenant_token=contract.tenant_token(tenant_secret, tenant_id),
                    admin_token=admin_token,
                ),
                sources={
                    **settings.sources,
                    "worker_url": "local reference Worker over the CI prefix",
                },
            )
        finally:
            stop_process_group(worker)


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
