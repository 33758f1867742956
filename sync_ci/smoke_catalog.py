"""The smoke's catalog phases: preflight, seed, install, catalog and freshness, with the publish
of a generation and the bounded poll that judges how soon each region serves it.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime

from sync_ci.contract import (
    Catalog,
    build_catalog,
    catalog_key,
    object_key,
    parse_catalog,
    parse_json,
    run_key,
)
from sync_ci.errors import ContractError, SyncCIError, UnreachableError
from sync_ci.smoke_run import (
    FRESHNESS_BOUND_S,
    PhaseFailed,
    PhaseOutcome,
    RegionClient,
    SmokeRun,
    check_ray,
)
from sync_ci.worker import Answer, expect

FIRST_POLL_S = 0.05
MAX_POLL_S = 1.0


def smoke_files(sha: str, nonce: str) -> dict[str, bytes]:
    """Return the small file set a write-mode smoke seeds (one file unique to this run)."""
    files = {
        "bin/snappy": b"#!/bin/sh\necho snappy\n" * 40,
        "etc/snappy.toml": b"[sync]\nchannel = 'ci'\n",
        "share/empty": b"",
        "share/blob.bin": bytes(range(256)) * 64,
        "share/unicod\u00e9 name.txt": "r\u00e9sum\u00e9 \u2713\n".encode(),
        "run/nonce.txt": f"{sha} {nonce}\n".encode(),
    }
    return files


def phase_preflight(run: SmokeRun) -> PhaseOutcome:
    """Check /_health (contract 1, cf-ray, Date), read the declared freshness bound, list the root."""
    try:
        answer = expect(run.worker.get("/_health"), 200)
    except UnreachableError:
        run.unmeasured = True
        raise
    health = answer.json()
    if (
        not isinstance(health, dict)
        or health.get("contract", 1) != 1
        or health.get("ok") is not True
    ):
        raise PhaseFailed(
            f"Worker /_health answered {str(health)[:120]!r}, expected ok and contract 1"
        )
    main_colo = run.regions[0].colo if run.regions else ""
    ray = check_ray(answer, main_colo, "/_health")
    if not answer.header("date"):
        raise PhaseFailed(
            "Worker /_health sent no Date header; contract v1 requires one on every answer "
            "(RFC 9110 section 6.6.1), and doctor's clock check reads it"
        )
    run.freshness_bound_s = declared_bound(health.get("catalog_ttl_s"))
    try:
        next(iter(run.store.list(run.root, page_size=1)), None)
    except UnreachableError:
        run.unmeasured = True
        raise
    return PhaseOutcome(
        detail=f"Worker {health.get('version', '?')} at {run.worker.target.base_url} "
        f"(cf-ray {ray}); freshness bound {run.freshness_bound_s:g} s; root {run.root}",
        observed={"freshness_bound_s": run.freshness_bound_s},
    )


def declared_bound(value: object) -> float:
    """Return the freshness bound a Worker declares, never looser than the contract's."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return FRESHNESS_BOUND_S
    return max(0.0, min(float(value), FRESHNESS_BOUND_S))


def phase_seed(run: SmokeRun) -> str:
    """Write `_ci/run.json` first, then objects, then a catalog one generation above any there."""
    settings = run.settings
    stamp = {
        "sha": settings.sha,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": secrets.token_hex(8),
    }
    run.store.put(run_key(run.root), json.dumps(stamp).encode(), "application/json")
    # A re-run of the same commit finds its earlier catalog: seed above it, so a Worker that
    # still caches the earlier one is seen to serve an older generation, not a wrong one.
    previous = stored_generation(run)
    catalog = publish(run, smoke_files(settings.sha, stamp["run"]), previous + 1)
    again = f"; generation {previous} was there (a re-run)" if previous else ""
    return f"{len(catalog.entries)} entries, {len(run.blobs)} objects under {run.root}{again}"


def stored_generation(run: SmokeRun) -> int:
    """The generation of the catalog already in the bucket (0 when none or unreadable)."""
    raw = run.store.get(catalog_key(run.root))
    if raw is None:
        return 0
    try:
        return parse_catalog(parse_json(raw, "catalog"), "catalog").generation
    except ContractError:
        return 0


def publish(run: SmokeRun, files: dict[str, bytes], generation: int) -> Catalog:
    """Write the files' objects, then the catalog naming them; remember when it landed."""
    catalog, blobs = build_catalog(files, generation=generation)
    for digest, data in blobs.items():
        run.store.put(object_key(run.root, digest), data)
    run.store.put(catalog_key(run.root), json.dumps(catalog.to_json()).encode(), "application/json")
    run.catalog, run.blobs, run.seeded_at = catalog, blobs, time.monotonic()
    return catalog


def served_catalog(answer: Answer, path: str) -> Catalog | None:
    """Parse a /catalog or /install answer (None for a 404: not published there yet)."""
    if answer.status == 404:
        return None
    document = expect(answer, 200).json()
    if not isinstance(document, dict) or document.get("schema", 1) != 1:
        raise ContractError(f"{path} answer is not a contract v1 object: {str(document)[:120]}")
    return parse_catalog(
        {"schema": 1, "generation": document.get("generation"), "entries": document.get("entries")},
        path,
    )


def await_catalog(
    run: SmokeRun, region: RegionClient, path: str, want: Catalog, *, allow_newer: bool = False
) -> float:
    """Poll `path` with backoff until it serves `want`; return seconds from the publish.

    An older generation (or a 404) is allowed only for requests sent within the freshness bound
    of the publish; the same generation with other entries fails at once.
    """
    where = f"{region.label}: {path}"
    delay = FIRST_POLL_S
    while True:
        sent = time.monotonic()
        try:
            answer = region.client.get(path)
        except SyncCIError as exc:
            raise PhaseFailed(f"{where}: {exc}") from None
        try:
            served = served_catalog(answer, path)
        except SyncCIError as exc:
            raise PhaseFailed(f"{where}: {exc}") from None
        check_ray(answer, region.colo, where)
        if served is not None and answer.header("x-cache") not in ("hit", "miss"):
            raise PhaseFailed(f"{where} answered without x-cache: hit|miss")
        age = sent - run.seeded_at
        if served == want or (
            allow_newer and served is not None and served.generation > want.generation
        ):
            return max(0.0, age)
        if served is not None and served.generation >= want.generation:
            raise PhaseFailed(
                f"{where} serves generation {served.generation} with {len(served.entries)} "
                f"entries; published generation {want.generation} with {len(want.entries)}"
            )
        if age > run.freshness_bound_s:
            have = "404" if served is None else f"generation {served.generation}"
            raise PhaseFailed(
                f"{where} still serves {have} {age:.1f} s after generation {want.generation} "
                f"was published (freshness bound {run.freshness_bound_s:g} s)"
            )
        if time.monotonic() > run.deadline:
            raise PhaseFailed(f"{where}: time budget exceeded while waiting for a fresh catalog")
        # Land one poll just past the bound, so a stale answer there is judged, not guessed.
        until_bound = run.seeded_at + run.freshness_bound_s - time.monotonic()
        time.sleep(max(0.0, min(delay, until_bound + FIRST_POLL_S)))
        delay = min(delay * 2, MAX_POLL_S)


def await_everywhere(
    run: SmokeRun, paths: tuple[str, ...], *, allow_newer: bool = False
) -> dict[str, float]:
    """Wait until every region serves run.catalog on every path; return the slowest per colo."""
    assert run.catalog is not None
    fresh: dict[str, float] = {}
    for region in run.regions:
        for path in paths:
            took = await_catalog(run, region, path, run.catalog, allow_newer=allow_newer)
            fresh[region.label] = round(max(took, fresh.get(region.label, 0.0)), 3)
    return fresh


def phase_install(run: SmokeRun) -> PhaseOutcome:
    """GET /install in every region: the seeded catalog (write mode) or the bucket's (read-only)."""
    if run.mode == "read-only":
        raw = run.store.get(catalog_key(run.root))
        if raw is None:
            raise PhaseFailed(f"{catalog_key(run.root)} is missing from the bucket")
        run.catalog = parse_catalog(parse_json(raw, catalog_key(run.root)), catalog_key(run.root))
        # Not knowing when live was published, allow the Worker the whole bound from now.
        run.seeded_at = time.monotonic()
    assert run.catalog is not None
    fresh = await_everywhere(run, ("/install",), allow_newer=run.mode == "read-only")
    return PhaseOutcome(
        detail=f"generation {run.catalog.generation}, {len(run.catalog.entries)} entries, "
        f"in {len(fresh)} region(s): {', '.join(fresh)}",
        observed={"regions": len(fresh), "time_to_fresh_s": fresh},
    )


def phase_catalog(run: SmokeRun) -> PhaseOutcome:
    """GET /catalog in every region, and a never-seen KV key there must miss."""
    fresh = await_everywhere(run, ("/catalog",), allow_newer=run.mode == "read-only")
    for region in run.regions:
        nonce = f"smoke-{secrets.token_hex(8)}"
        where = f"{region.label}: /_probe/kv/{nonce}"
        answer = expect(region.client.get(f"/_probe/kv/{nonce}"), 200)
        check_ray(answer, region.colo, where)
        document = answer.json()
        said = document.get("cache") if isinstance(document, dict) else None
        if answer.header("x-cache") != "miss" or said != "miss":
            raise PhaseFailed(
                f"{where} is a key this region never read, yet it answered x-cache "
                f"{answer.header('x-cache') or 'none'!r} and cache {said!r} (want miss)"
            )
    return PhaseOutcome(
        detail=f"catalog and a cold KV miss in {len(fresh)} region(s): {', '.join(fresh)}",
        observed={"regions": len(fresh)},
    )


def phase_freshness(run: SmokeRun) -> PhaseOutcome:
    """Publish the next generation and poll every region until it serves it, within the bound."""
    assert run.catalog is not None
    files = smoke_files(run.settings.sha, secrets.token_hex(8))
    catalog = publish(run, files, run.catalog.generation + 1)
    fresh = await_everywhere(run, ("/install", "/catalog"))
    slowest = max(fresh.values(), default=0.0)
    return PhaseOutcome(
        detail=f"generation {catalog.generation} served everywhere {slowest:.2f} s after the "
        f"publish (bound {run.freshness_bound_s:g} s)",
        observed={"time_to_fresh_s": slowest, "per_region_s": fresh},
        threshold={"max_s": run.freshness_bound_s},
    )
