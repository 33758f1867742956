"""One smoke pass's state and how it opens: the guarded clients, what the phases share and learn,
and the outcomes a phase ends in (passed, failed, skipped), with the cf-ray rule every phase
judges an answer by.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sync_ci.config import Settings
from sync_ci.conformance import SMOKE_BUDGET_S
from sync_ci.contract import Catalog, colo_from_ray
from sync_ci.errors import SettingsError, SyncCIError, UsageError
from sync_ci.parity import Observation
from sync_ci.report import Result
from sync_ci.store import Store
from sync_ci.target import SMOKE_TENANT, colo_of, regions_to_ask
from sync_ci.target import tenant_token as tenant_credential
from sync_ci.target import worker_url as main_worker_url
from sync_ci.worker import Answer, WorkerClient, WorkerTarget

Mode = Literal["write", "read-only"]
DEFAULT_SAMPLE = 5
# The bound on a whole run when its caller names none (ci-loop names its own).
DEFAULT_BUDGET_S = 600.0
# Contract v1: a Worker serves a newly published catalog generation within this many seconds
# (real Workers KV is eventually consistent for up to about 60 s). A Worker may declare a
# tighter bound as `catalog_ttl_s` in /_health and is then held to it.
FRESHNESS_BOUND_S = 60.0


class PhaseFailed(SyncCIError):
    """A phase's own assertion did not hold."""


class PhaseFailedWithCells(PhaseFailed):
    """Parity failed; the cells travel with the error so the matrix still renders."""

    def __init__(self, message: str, cells: list[Result]) -> None:
        super().__init__(message)
        self.cells = cells


class Skipped(SyncCIError):
    """A phase could not run for a reason that is not a failure (e.g. no admin token)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseOutcome:
    """A passed phase: its detail line and the values it measured."""

    detail: str
    observed: dict[str, Any] = field(default_factory=dict)
    threshold: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegionClient:
    """One region the smoke asks: its expected colo ('' when unknown) and its client."""

    colo: str
    client: WorkerClient

    @property
    def label(self) -> str:
        """The colo, or the base URL when the colo is not known."""
        return self.colo or self.client.target.base_url


@dataclass(slots=True, kw_only=True)
class SmokeRun:
    """Shared state of one smoke pass, filled in phase by phase."""

    settings: Settings
    mode: Mode
    store: Store
    worker: WorkerClient
    root: str
    mirror_dir: Path
    tenant_id: str
    tenant_token: str
    admin_token: str
    sample: int
    deadline: float
    regions: tuple[RegionClient, ...] = ()
    freshness_bound_s: float = FRESHNESS_BOUND_S
    seeded_at: float = 0.0
    catalog: Catalog | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    pushed: bytes = b""
    alert_key: str = ""
    worker_observations: list[Observation] = field(default_factory=list)
    bucket_observations: list[Observation] = field(default_factory=list)
    unmeasured: bool = False
    conformance_budget_s: float = SMOKE_BUDGET_S


def check_ray(answer: Answer, colo: str, what: str) -> str:
    """Return the answer's cf-ray, or fail unless it is `<16 hex>-<COLO>` naming `colo`."""
    ray = answer.header("cf-ray")
    served = colo_from_ray(ray)
    if not served:
        raise PhaseFailed(
            f"{what} answered with cf-ray {ray!r}; contract v1 wants '<16 lowercase hex>-<COLO>'"
        )
    if colo and served != colo:
        raise PhaseFailed(
            f"{what} via the {colo} region answered with cf-ray {ray} (colo {served})"
        )
    return ray


@contextmanager
def open_run(
    settings: Settings,
    *,
    mode: Mode,
    sample: int = DEFAULT_SAMPLE,
    budget_s: float = DEFAULT_BUDGET_S,
    mirror_dir: Path | None = None,
) -> Iterator[SmokeRun]:
    """Build the guarded store and Worker clients for a smoke run."""
    from sync_ci import guards
    from sync_ci.store import endpoint_from_settings, open_store

    if mode == "write" and settings.target == "live":
        raise UsageError(
            "the live target is read-only: run the smoke with --read-only (or use --target ci)"
        )
    read_only = mode == "read-only" or settings.read_only
    root = settings.live_root if mode == "read-only" else settings.ci_prefix
    if read_only:
        policy = guards.read_only_policy()
    else:
        if not guards.is_full_ci_prefix(root, settings.ci_root):
            raise SettingsError(
                f"refusing to write: {root!r} is not a full {settings.ci_root}<sha>/ prefix"
            )
        policy = guards.prefix_policy(settings.bucket, root)
    worker_url = main_worker_url(settings)
    tenant = settings.tenant_id or SMOKE_TENANT
    token = tenant_credential(settings, tenant)
    store = open_store(endpoint_from_settings(settings), policy)

    def client(url: str) -> WorkerClient:
        return WorkerClient(
            WorkerTarget(
                base_url=url,
                read_only=read_only,
                timeout_s=settings.worker_timeout_s,
                root=root,
                allowed_posts=() if read_only else ("/_push", "/_alert"),
            )
        )

    worker = client(worker_url)
    with ExitStack() as stack:
        stack.callback(worker.close)
        regions = [RegionClient(colo=colo_of(settings, worker_url), client=worker)]
        for region in regions_to_ask(settings, worker_url):
            regional = client(region.url)
            stack.callback(regional.close)
            regions.append(RegionClient(colo=region.colo, client=regional))
        if mirror_dir is None and mode == "read-only":
            mirror_dir = settings.mirror_dir
        elif mirror_dir is None:
            import tempfile

            # A write-mode pull fills a throwaway mirror: the run leaves nothing on the machine.
            mirror_dir = (
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sync-ci-smoke-")))
                / "mirror"
            )
        yield SmokeRun(
            settings=settings,
            mode=mode,
            store=store,
            worker=worker,
            root=root,
            mirror_dir=mirror_dir,
            tenant_id=tenant,
            tenant_token=token,
            admin_token=settings.secrets.admin_token,
            sample=sample,
            deadline=time.monotonic() + budget_s,
            regions=tuple(regions),
        )
