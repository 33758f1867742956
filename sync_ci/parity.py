"""Parity-matrix cells: one per artifact and pair of surfaces (bucket, Worker, local mirror), by sha256."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sync_ci.report import Result, Status
from sync_ci.report_text import matrix_mark

if TYPE_CHECKING:
    from sync_ci.contract import Catalog
    from sync_ci.worker import WorkerClient

SURFACES = ("bucket", "worker", "mirror")
PAIRS: tuple[tuple[str, str], ...] = (
    ("bucket", "worker"),
    ("worker", "mirror"),
    ("bucket", "mirror"),
)
MISSING = "missing"


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """What one surface holds for one artifact: a sha256, MISSING, or None when not looked at."""

    artifact: str
    surface: str
    digest: str | None


def pair_name(pair: tuple[str, str]) -> str:
    """Return 'bucket~worker' style names."""
    return f"{pair[0]}~{pair[1]}"


def evaluate_cells(
    observations: Iterable[Observation],
    *,
    expected: Mapping[str, str] | None = None,
    behind_ok: Collection[str] = (),
) -> list[Result]:
    """Compare every pair of surfaces for every artifact; a pair with an unobserved side is skipped.

    A surface in `behind_ok` (the local mirror, read-only) may lag: where only it differs, the
    cell is skipped as "behind", not failed, since a pull that has not run yet is no sync fault.
    """
    by_artifact: dict[str, dict[str, str | None]] = {}
    for obs in observations:
        by_artifact.setdefault(obs.artifact, {})[obs.surface] = obs.digest
    results: list[Result] = []
    for artifact, seen in by_artifact.items():
        want = (expected or {}).get(artifact)
        for pair in PAIRS:
            left, right = seen.get(pair[0]), seen.get(pair[1])
            status: Status
            if left is None or right is None:
                status, detail = "skip", f"{pair[0] if left is None else pair[1]} not observed"
            elif left != right and (lagging := _lagging(pair, left, right, behind_ok, want)):
                status = "skip"
                detail = f"{lagging} behind: " + (
                    "not pulled yet" if seen.get(lagging) == MISSING else "an older copy"
                )
            elif left == MISSING or right == MISSING:
                status = "fail"
                detail = f"missing on {pair[0] if left == MISSING else pair[1]}"
            elif left != right:
                status, detail = "fail", f"sha256 differs: {left[:12]} vs {right[:12]}"
            elif want is not None and left != want:
                status, detail = "fail", f"both {left[:12]}, expected {want[:12]}"
            else:
                status, detail = "pass", left[:12]
            results.append(
                Result(
                    id=f"parity:{artifact}:{pair_name(pair)}",
                    title=f"{artifact} {pair[0]} = {pair[1]}",
                    status=status,
                    detail=detail,
                    observed={
                        "artifact": artifact,
                        "pair": pair_name(pair),
                        pair[0]: left,
                        pair[1]: right,
                    },
                )
            )
    return results


def _lagging(
    pair: tuple[str, str], left: str, right: str, behind_ok: Collection[str], want: str | None
) -> str:
    """The side of a differing pair that may lag: the other side holds what it should."""
    for side, other in ((pair[0], right), (pair[1], left)):
        if side in behind_ok and other != MISSING and want in (None, other):
            return side
    return ""


def behind_count(results: Iterable[Result]) -> int:
    """How many artifacts a lagging surface is behind on."""
    return len({str(r.observed.get("artifact")) for r in results if " behind: " in r.detail})


def matrix_cells(
    results: Sequence[Result],
) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """Arrange parity results as rows (artifacts), columns (pairs) and cell marks."""
    rows: list[str] = []
    cells: dict[tuple[str, str], str] = {}
    for result in results:
        artifact = str(result.observed.get("artifact", result.id))
        pair = str(result.observed.get("pair", ""))
        if artifact not in rows:
            rows.append(artifact)
        cells[(artifact, pair)] = matrix_mark(result.status)
    return rows, [pair_name(p) for p in PAIRS], cells


def render_parity(results: Sequence[Result]) -> str:
    """Render parity results as an artifacts x surface-pairs matrix."""
    from sync_ci.report_text import render_matrix

    rows, columns, cells = matrix_cells(results)
    return render_matrix(rows, columns, cells)


def file_digest(path: Path) -> str:
    """Return the sha256 of a file, or MISSING."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 16), b""):
                digest.update(chunk)
    except FileNotFoundError:
        return MISSING
    return digest.hexdigest()


def mirror_path(mirror_dir: Path, name: str) -> Path:
    """Return where a catalog entry lives in the local mirror, refusing names that escape it."""
    from sync_ci.errors import ContractError
    from sync_ci.guards import validate_key

    try:
        validate_key(name)
    except Exception:
        raise ContractError(f"catalog entry name {name!r} is not a safe relative path") from None
    path = (mirror_dir / name).resolve()
    if not path.is_relative_to(mirror_dir.resolve()):
        raise ContractError(f"catalog entry name {name!r} escapes the mirror directory")
    return path


def mirror_observations(catalog: Catalog, mirror_dir: Path) -> list[Observation]:
    """Observe the local mirror for every catalog entry."""
    return [
        Observation(
            artifact=entry.name,
            surface="mirror",
            digest=file_digest(mirror_path(mirror_dir, entry.name)),
        )
        for entry in catalog.entries
    ]


def tenant_cells(worker: WorkerClient, mirror_dir: Path) -> list[Result]:
    """Doctor's cells: the Worker's advertised digests against the local mirror (GETs only)."""
    from sync_ci.contract import parse_catalog
    from sync_ci.worker import expect

    catalog = parse_catalog(expect(worker.get("/catalog"), 200).json(), "Worker /catalog")
    observations = [
        Observation(artifact=e.name, surface="worker", digest=e.sha256) for e in catalog.entries
    ]
    observations += mirror_observations(catalog, mirror_dir)
    return evaluate_cells(observations)
