"""Cleanup's data: the listing, the plan per prefix, the outcome of a deletion, and a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sync_ci.errors import ExitCode, SyncCIError
from sync_ci.store import DeleteFailure, UploadInfo, VersionInfo

SUITE = "cleanup"
DEFAULT_OLDER_THAN = "7d"

PrefixKind = Literal["ci", "other", "loose"]
Action = Literal["delete", "keep", "leave"]


class PlanRefused(SyncCIError):
    """The plan breaks a limit (--max-delete, the CI root): nothing was deleted."""

    exit_code = ExitCode.FAILED


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing:
    """Everything under the CI root, from one listing pass."""

    versions: tuple[VersionInfo, ...]
    uploads: tuple[UploadInfo, ...] = ()
    versioned: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Doomed:
    """One object version or delete marker the plan deletes."""

    key: str
    version_id: str
    size: int
    current: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefixPlan:
    """One top-level entry under the CI root and what happens to it."""

    prefix: str
    name: str
    kind: PrefixKind
    action: Action
    age_s: float
    objects: int
    versions: int
    bytes: int
    doomed: tuple[Doomed, ...] = ()
    uploads: tuple[UploadInfo, ...] = ()
    upload_count: int = 0
    unsafe_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one run deletes, keeps and leaves alone; built without I/O."""

    ci_root: str
    now: datetime
    older_than: timedelta
    prefixes: tuple[PrefixPlan, ...]

    @property
    def to_delete(self) -> tuple[PrefixPlan, ...]:
        """The CI prefixes old enough to go."""
        return tuple(p for p in self.prefixes if p.action == "delete")

    @property
    def delete_count(self) -> int:
        """How many (key, version) entries the plan sends to DeleteObjects."""
        return sum(len(p.doomed) for p in self.to_delete)

    @property
    def abort_count(self) -> int:
        """How many incomplete multipart uploads the plan aborts."""
        return sum(len(p.uploads) for p in self.to_delete)

    @property
    def bytes_before(self) -> int:
        """Bytes stored under the CI root (every version) when listed."""
        return sum(p.bytes for p in self.prefixes)

    @property
    def objects_before(self) -> int:
        """Current objects under the CI root when listed."""
        return sum(p.objects for p in self.prefixes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What the deletion did: failures are per key, everything else was removed."""

    deleted: int
    deleted_bytes: int
    failures: tuple[DeleteFailure, ...] = ()
    failed_entries: frozenset[tuple[str, str]] = frozenset()
    aborted: int = 0
    abort_failures: tuple[tuple[str, str], ...] = ()
    batches: int = 0
    unreachable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupRun:
    """A plan, and its outcome when it was applied (None on a dry run)."""

    plan: Plan
    outcome: Outcome | None
    dry_run: bool
    duration_s: float = 0.0
    requests: Mapping[str, int] = field(default_factory=dict)
