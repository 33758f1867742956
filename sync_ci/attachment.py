"""The one target resolver: loaded settings -> what a command runs against, for one block.

Every suite, gate, cleanup and field command goes through `open_target`; what it may start and
check is named by its caller's `Need` (SUITE, PASS, STORE, FIELD, FIELD_OR_EPHEMERAL, ATTACHED).
The sandbox modules are imported only on the branches that use them (doctor on live loads none).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sync_ci import guards
from sync_ci.config import Settings
from sync_ci.errors import UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class Need:
    """What one kind of caller needs of its target, and so what the resolver may do for it."""

    # With target sandbox and no SYNC_CI_SANDBOX: start an ephemeral sandbox for the block
    # (False: the settings as loaded, so a field command reports on what runs, starting nothing).
    ephemeral: bool
    # On ci without a preview URL: start the reference Worker locally over the run's CI prefix.
    local_ci_worker: bool = False
    # SYNC_CI_SANDBOX's Worker must answer GET /_health (False: doctor reports on it instead).
    alive: bool = True
    # An explicit [worker] url or SYNC_CI_WORKER_URL wins over the ready file's.
    own_worker_url: bool = False
    # No Worker is needed: on sandbox, an explicitly configured store is used as is (loopback only).
    store_only: bool = False


# smoke, conformance, the gates: a Worker they may write through, started if need be.
SUITE = Need(ephemeral=True, local_ci_worker=True)
# ci-loop: read-only, so never a local Worker that serves only the CI prefix.
PASS = Need(ephemeral=True)
# cleanup: the bucket only.
STORE = Need(ephemeral=True, store_only=True)
# doctor, alert, status: report on what runs; start nothing, check nothing.
FIELD = Need(ephemeral=False, alive=False, own_worker_url=True)
# verify: a fresh checkout runs the whole list on an ephemeral sandbox.
FIELD_OR_EPHEMERAL = Need(ephemeral=True, alive=False, own_worker_url=True)
# a Locust worker's own secrets, `sandbox-fault`: the sandbox SYNC_CI_SANDBOX names, if any.
ATTACHED = Need(ephemeral=False)


@contextlib.contextmanager
def open_target(
    settings: Settings,
    need: Need,
    *,
    faults: Mapping[str, str] | None = None,
    kv_miss_ms: Mapping[str, int] | None = None,
) -> Iterator[Settings]:
    """Yield `settings` pointed at what they target (store, Worker, secrets) for the block.

    sandbox: the one SYNC_CI_SANDBOX names (`faults` applied for the block, then restored) or,
    when `need` allows, an ephemeral one started with `faults`. ci: as loaded, except that a
    `need` with `local_ci_worker` and no preview URL starts the reference Worker over the CI
    prefix. live: as loaded (read-only is the settings' and the client builders' to enforce).
    """
    if settings.target != "sandbox":
        if faults or kv_miss_ms:
            raise UsageError(
                f"--fault and --kv-miss-ms apply to the sandbox only, not to {settings.target}"
            )
        if settings.target == "ci" and need.local_ci_worker and not settings.preview_url:
            from sync_ci.sandbox.attach import local_ci_worker

            with local_ci_worker(settings) as local:
                yield local
            return
        yield settings
        return
    if need.store_only and settings.endpoint_url and settings.bucket:
        if not guards.is_loopback_url(settings.endpoint_url):
            raise UsageError(
                f"target sandbox must use a loopback store, not {settings.endpoint_url!r}; "
                "use --target ci for a remote bucket"
            )
        yield settings
        return
    if settings.sandbox_file:
        with _ready_sandbox(settings, need, faults, kv_miss_ms) as attached:
            yield attached
        return
    if not need.ephemeral:
        yield settings
        return
    from sync_ci.sandbox.attach import settings_for
    from sync_ci.sandbox.launcher import start_sandbox

    with start_sandbox(
        faults=faults,
        kv_miss_ms=kv_miss_ms,
        runtime=settings.worker_runtime,
        project=settings.worker_project,
    ) as sandbox:
        yield settings_for(settings, sandbox.info, "ephemeral sandbox")


@contextlib.contextmanager
def _ready_sandbox(
    settings: Settings,
    need: Need,
    faults: Mapping[str, str] | None,
    kv_miss_ms: Mapping[str, int] | None,
) -> Iterator[Settings]:
    """Yield settings filled in from SYNC_CI_SANDBOX's ready file, its faults set for the block."""
    from sync_ci.sandbox.attach import (
        check_alive,
        clear_faults,
        get_faults,
        set_faults,
        settings_for,
    )
    from sync_ci.sandbox.ready_file import read_ready_file

    info = read_ready_file(Path(settings.sandbox_file))
    if need.alive:
        check_alive(info, settings.sandbox_file)
    attached = settings_for(settings, info, f"sandbox {settings.sandbox_file}")
    if need.own_worker_url and settings.worker_url:
        attached = attached.with_values(worker_url=settings.worker_url)
    if kv_miss_ms:
        raise UsageError(
            "--kv-miss-ms is fixed when a sandbox starts; restart it with --kv-miss-ms"
        )
    if not faults:
        yield attached
        return
    before = get_faults(attached)
    set_faults(attached, dict(faults))
    try:
        yield attached
    finally:
        clear_faults(attached)
        if before:
            set_faults(attached, before)


def field_settings(settings: Settings) -> Settings:
    """Return `settings` as a field command sees them (FIELD: nothing started, nothing held)."""
    with open_target(settings, FIELD) as attached:
        return attached
