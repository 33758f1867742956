"""What the reference Worker is configured with: its regions, roots, freshness bound and secrets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The five regions the sandbox serves, in the order their listeners start (the first is the main).
DEFAULT_COLOS = ("SJC", "IAD", "FRA", "SIN", "GRU")
# How long a region may serve a catalog it cached: the freshness bound /_health declares.
CATALOG_TTL_S = 3.0
MAX_CATALOG_TTL_S = 60.0


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
