"""The smoke's mirror phases: the pull (write mode), the dry pull (read-only) and the parity
matrix of bucket, Worker and mirror, with the object fetch that checks each digest.
"""

from __future__ import annotations

import json
from typing import Any

from sync_ci.contract import (
    Catalog,
    catalog_key,
    object_key,
    parse_json,
    sha256_hex,
    tenant_state_key,
)
from sync_ci.parity import (
    Observation,
    behind_count,
    evaluate_cells,
    mirror_observations,
    mirror_path,
)
from sync_ci.report import Result
from sync_ci.smoke_run import PhaseFailed, PhaseFailedWithCells, PhaseOutcome, SmokeRun
from sync_ci.worker import expect


def fetch_object(run: SmokeRun, digest: str) -> bytes:
    """GET /o/<sha256> and verify the bytes hash to their name."""
    answer = expect(run.worker.get(f"/o/{digest}"), 200)
    actual = sha256_hex(answer.body)
    if actual != digest:
        raise PhaseFailed(
            f"/o/{digest[:12]}… served {len(answer.body)} bytes hashing to {actual[:12]}…"
        )
    return answer.body


def canonical_catalog(raw: bytes) -> bytes:
    """Re-serialise a catalog so bucket and Worker copies compare by content, not formatting."""
    return json.dumps(parse_json(raw, "catalog"), sort_keys=True).encode()


def plan_pull(catalog: Catalog, mirror: dict[str, str | None]) -> dict[str, int]:
    """Count what a pull would add, update or keep."""
    plan = {"add": 0, "update": 0, "keep": 0}
    for entry in catalog.entries:
        have = mirror.get(entry.name)
        key = "add" if have in (None, "missing") else "keep" if have == entry.sha256 else "update"
        plan[key] += 1
    return plan


def sample_entries(catalog: Catalog, sample: int) -> tuple[Any, ...]:
    """Pick up to `sample` entries spread evenly over the catalog (0 means all)."""
    entries = catalog.entries
    if sample <= 0 or sample >= len(entries):
        return entries
    step = len(entries) / sample
    return tuple(entries[int(i * step)] for i in range(sample))


def phase_pull(run: SmokeRun) -> str:
    """Download every object through the Worker into the local mirror, checking each sha256."""
    assert run.catalog is not None
    fetched = 0
    for entry in run.catalog.entries:
        data = fetch_object(run, entry.sha256)
        target = mirror_path(run.mirror_dir, entry.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        fetched += len(data)
    return f"{len(run.catalog.entries)} files, {fetched} bytes into {run.mirror_dir}"


def phase_pull_dry(run: SmokeRun) -> PhaseOutcome:
    """Say what a pull would change against the local mirror, writing nothing; verify a sample."""
    assert run.catalog is not None
    mirror = {o.artifact: o.digest for o in mirror_observations(run.catalog, run.mirror_dir)}
    plan = plan_pull(run.catalog, mirror)
    sampled = sample_entries(run.catalog, run.sample)
    for entry in sampled:
        fetch_object(run, entry.sha256)
    behind = plan["add"] + plan["update"] if plan["keep"] or plan["update"] else 0
    lag = f"; the mirror is behind by {behind} file(s)" if behind else ""
    return PhaseOutcome(
        detail=f"would add {plan['add']}, update {plan['update']}, keep {plan['keep']} "
        f"(mirror {run.mirror_dir}){lag}; {len(sampled)} sampled objects verified",
        observed={**plan, "mirror_behind": behind},
    )


def phase_parity(run: SmokeRun) -> tuple[str, list[Result]]:
    """Compare the catalog and objects across bucket, Worker and mirror."""
    assert run.catalog is not None
    catalog_raw = run.store.get(catalog_key(run.root))
    bucket_catalog = sha256_hex(canonical_catalog(catalog_raw)) if catalog_raw else "missing"
    worker_catalog = sha256_hex(
        json.dumps(expect(run.worker.get("/catalog"), 200).json(), sort_keys=True).encode()
    )
    observations = [
        Observation(artifact="catalog.json", surface="bucket", digest=bucket_catalog),
        Observation(artifact="catalog.json", surface="worker", digest=worker_catalog),
    ]
    entries = (
        run.catalog.entries if run.mode == "write" else sample_entries(run.catalog, run.sample)
    )
    expected = {}
    for entry in entries:
        expected[entry.name] = entry.sha256
        raw = run.store.get(object_key(run.root, entry.sha256))
        observations.append(
            Observation(
                artifact=entry.name,
                surface="bucket",
                digest=sha256_hex(raw) if raw is not None else "missing",
            )
        )
        answer = run.worker.get(f"/o/{entry.sha256}")
        observations.append(
            Observation(
                artifact=entry.name,
                surface="worker",
                digest=sha256_hex(answer.body) if answer.status == 200 else "missing",
            )
        )
    mirror = [o for o in mirror_observations(run.catalog, run.mirror_dir) if o.artifact in expected]
    if run.mode == "write" or any(o.digest != "missing" for o in mirror):
        observations += mirror
    if run.pushed:
        state = run.store.get(tenant_state_key(run.root, run.tenant_id))
        observations += [
            Observation(
                artifact=f"tenants/{run.tenant_id}/state.json",
                surface="bucket",
                digest=sha256_hex(state) if state is not None else "missing",
            ),
            Observation(
                artifact=f"tenants/{run.tenant_id}/state.json",
                surface="mirror",
                digest=sha256_hex(run.pushed),
            ),
        ]
    lagging = ("mirror",) if run.mode == "read-only" else ()
    cells = evaluate_cells(observations, expected=expected, behind_ok=lagging)
    failing = [c for c in cells if c.status == "fail"]
    passed = sum(c.status == "pass" for c in cells)
    behind = behind_count(cells)
    detail = (
        f"{passed} cells equal"
        + (f", {len(failing)} differ: {failing[0].title}" if failing else "")
        + (f"; the local mirror is behind on {behind} file(s) (pull to catch up)" if behind else "")
    )
    if failing:
        raise PhaseFailedWithCells(detail, cells)
    return detail, cells
