"""Doctor checks of the Worker as a tenant sees it: health and contract version, the read path
(/install, /catalog, sampled objects, contract headers) and the clock against its Date header.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from sync_ci.errors import SyncCIError
from sync_ci.field.doctor_context import Context, new_row
from sync_ci.report import Result, Status

if TYPE_CHECKING:
    from sync_ci.contract import Catalog, CatalogEntry
    from sync_ci.worker import Answer

MAX_SKEW_S = 300.0

SUPPORTED_CONTRACTS = (1,)

OBJECT_BASE = "/o/"

READ_SAMPLE = 3

SAMPLE_MAX_BYTES = 4 * 2**20  # larger blobs are sampled only when nothing smaller exists

TIMING_TOTAL = "total;dur="


READ_TITLES = {
    "worker-install": "/install serves a valid manifest",
    "worker-catalog": "/catalog valid and agrees with /install",
    "worker-objects": "sampled objects fetched and sha256-checked",
    "worker-headers": "answers carry cf-ray, x-cache and server-timing",
}


def evaluate_health(status: int, document: Any) -> Result:
    """Judge a `/_health` answer: 200, ok true, a contract version we speak."""
    title = "Worker reachable, contract compatible"
    if status != 200:
        return new_row("worker", title, "fail", f"/_health answered {status}", http_status=status)
    if not isinstance(document, dict) or document.get("ok") is not True:
        return new_row("worker", title, "fail", "/_health did not say ok: true")
    version = document.get("contract")
    if version not in SUPPORTED_CONTRACTS:
        return new_row(
            "worker",
            title,
            "fail",
            f"Worker speaks contract {version!r}; this sync-ci speaks {SUPPORTED_CONTRACTS}",
            contract=version,
        )
    return new_row(
        "worker",
        title,
        "pass",
        f"contract {version}, Worker {document.get('version', '?')}",
        contract=version,
        worker_version=document.get("version"),
    )


def evaluate_skew(date_header: str, local_now: datetime, max_skew_s: float = MAX_SKEW_S) -> Result:
    """Compare the Worker's `Date` header with the local clock."""
    title = f"clock within {max_skew_s / 60:g} min of the Worker"
    try:
        remote = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return new_row(
            "clock-skew", title, "fail", f"Worker sent no usable Date header ({date_header!r})"
        )
    if remote.tzinfo is None:
        remote = remote.replace(tzinfo=UTC)
    skew = (local_now - remote).total_seconds()
    status: Status = "fail" if abs(skew) > max_skew_s else "pass"
    ahead = "ahead of" if skew > 0 else "behind"
    detail = f"local clock {abs(skew):.0f} s {ahead} the Worker"
    if status == "fail":
        detail += "; fix the system clock (e.g. enable NTP: timedatectl set-ntp true)"
    return Result(
        id="clock-skew",
        title=title,
        status=status,
        detail=detail,
        observed={"skew_s": round(skew, 1)},
        threshold={"max_abs_s": max_skew_s},
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A parsed `/install` answer: the catalog it lists and where its objects are fetched."""

    catalog: Catalog
    object_base: str


def _not_ok(answer: Answer) -> str:
    """Return '' for a 200, else the Worker's status, error text and cf-ray in one phrase."""
    from sync_ci.worker import expect

    try:
        expect(answer, 200)
    except SyncCIError as exc:
        return str(exc)
    return ""


def evaluate_install(answer: Answer) -> tuple[Result, Manifest | None]:
    """Judge GET /install: 200, a contract v1 manifest, an object base, at least one entry."""
    from sync_ci.contract import parse_catalog

    title = READ_TITLES["worker-install"]
    problem = _not_ok(answer)
    manifest = None
    if not problem:
        try:
            document = answer.json()
            if not isinstance(document, dict) or document.get("schema") != 1:
                raise SyncCIError(f"{answer.url} is not a contract v1 manifest (schema 1 object)")
            catalog = parse_catalog(
                {"schema": 1, **{k: document.get(k) for k in ("generation", "entries")}},
                f"{answer.url} manifest",
            )
        except SyncCIError as exc:
            problem = str(exc)
        else:
            base = document.get("object_base")
            if not isinstance(base, str) or not base.startswith("/") or not base.endswith("/"):
                problem = f"{answer.url} object_base {base!r} is not a path like {OBJECT_BASE!r}"
            else:
                manifest = Manifest(catalog=catalog, object_base=base)
                if not catalog.entries:
                    problem = f"{answer.url} lists no entries: a tenant install would fetch nothing"
    if problem:
        return new_row(
            "worker-install", title, "fail", problem, http_status=answer.status
        ), manifest
    assert manifest is not None
    detail = f"generation {manifest.catalog.generation}, {len(manifest.catalog.entries)} entries"
    row = new_row(
        "worker-install",
        title,
        "pass",
        detail,
        generation=manifest.catalog.generation,
        entries=len(manifest.catalog.entries),
    )
    return row, manifest


def _names(names: Iterable[str], limit: int = 3) -> str:
    ordered = sorted(names)
    more = len(ordered) - limit
    return ", ".join(ordered[:limit]) + (f" and {more} more" if more > 0 else "")


def evaluate_catalog(answer: Answer, manifest: Manifest | None) -> tuple[Result, Catalog | None]:
    """Judge GET /catalog: 200, a valid catalog, the same generation and entries as /install."""
    from sync_ci.contract import parse_catalog

    title = READ_TITLES["worker-catalog"]
    problem = _not_ok(answer)
    if problem:
        return new_row("worker-catalog", title, "fail", problem, http_status=answer.status), None
    try:
        catalog = parse_catalog(answer.json(), f"{answer.url} catalog")
    except SyncCIError as exc:
        return new_row("worker-catalog", title, "fail", str(exc)), None
    observed = {"generation": catalog.generation, "entries": len(catalog.entries)}
    summary = f"generation {catalog.generation}, {len(catalog.entries)} entries"
    if manifest is None:
        return new_row(
            "worker-catalog",
            title,
            "pass",
            f"{summary}; not compared (/install failed)",
            **observed,
        ), catalog
    listed = manifest.catalog
    problems = []
    if catalog.generation != listed.generation:
        problems.append(f"generation {catalog.generation}, /install says {listed.generation}")
    have = {e.name: (e.sha256, e.size) for e in catalog.entries}
    want = {e.name: (e.sha256, e.size) for e in listed.entries}
    if only := have.keys() - want.keys():
        problems.append(f"only in /catalog: {_names(only)}")
    if only := want.keys() - have.keys():
        problems.append(f"only in /install: {_names(only)}")
    if differ := {name for name in have.keys() & want.keys() if have[name] != want[name]}:
        problems.append(f"sha256 or size differs for {_names(differ)}")
    if problems:
        return new_row("worker-catalog", title, "fail", "; ".join(problems), **observed), catalog
    return new_row("worker-catalog", title, "pass", f"{summary}, as /install", **observed), catalog


def choose_sample(
    entries: Sequence[CatalogEntry], seed: str, size: int = READ_SAMPLE
) -> tuple[CatalogEntry, ...]:
    """Pick up to `size` entries, rotating with `seed`, preferring blobs under SAMPLE_MAX_BYTES."""
    small = [e for e in entries if e.size <= SAMPLE_MAX_BYTES]
    pool = small or sorted(entries, key=lambda e: e.size)[:1]
    ranked = sorted(pool, key=lambda e: hashlib.sha256(f"{seed}:{e.name}".encode()).digest())
    return tuple(ranked[:size])


def evaluate_objects(fetched: Sequence[tuple[CatalogEntry, Answer | None, str]]) -> Result:
    """Judge sampled object GETs: each 200, its bytes hashing to the listed sha256 and size."""
    title = READ_TITLES["worker-objects"]
    if not fetched:
        return new_row("worker-objects", title, "skip", "the catalog lists no objects to sample")
    problems = []
    for entry, answer, why in fetched:
        if answer is None:
            problems.append(f"{entry.name}: {why}")
        elif problem := _not_ok(answer):
            problems.append(f"{entry.name}: {problem}")
        elif (digest := hashlib.sha256(answer.body).hexdigest()) != entry.sha256:
            problems.append(
                f"{entry.name}: {answer.url} served {len(answer.body)} bytes hashing to "
                f"{digest[:12]}, not {entry.sha256[:12]}"
            )
        elif len(answer.body) != entry.size:
            problems.append(
                f"{entry.name}: {len(answer.body)} bytes, the catalog says {entry.size}"
            )
    observed = {"sampled": len(fetched), "bad": len(problems)}
    if problems:
        return new_row("worker-objects", title, "fail", "; ".join(problems), **observed)
    names = _names((entry.name for entry, _, _ in fetched), limit=len(fetched))
    return new_row("worker-objects", title, "pass", f"{len(fetched)} match: {names}", **observed)


def header_problems(route: str, answer: Answer) -> list[str]:
    """Return what one answer lacks of the contract's headers (x-cache only where KV was read)."""
    from sync_ci.contract import CF_RAY_RE

    problems = []
    ray = answer.header("cf-ray")
    if not CF_RAY_RE.fullmatch(ray):
        problems.append(f"cf-ray {ray!r} is not <16 hex>-<COLO>" if ray else "no cf-ray")
    timing = answer.header("server-timing")
    total = next((p.strip() for p in timing.split(",") if p.strip().startswith(TIMING_TOTAL)), "")
    try:
        float(total.removeprefix(TIMING_TOTAL))
    except ValueError:
        problems.append(
            f"server-timing {timing!r} has no total;dur=<ms>" if timing else "no server-timing"
        )
    cache = answer.header("x-cache")
    if route != "/_health" and answer.status == 200 and cache not in ("hit", "miss"):
        problems.append(f"x-cache {cache!r} is not hit|miss" if cache else "no x-cache")
    return [f"GET {route}: {p}" for p in problems]


def evaluate_headers(answers: Sequence[tuple[str, Answer]]) -> Result:
    """Judge the contract's headers (cf-ray, server-timing, x-cache) on the read path's answers."""
    title = READ_TITLES["worker-headers"]
    problems = [p for route, answer in answers for p in header_problems(route, answer)]
    observed = {"answers": len(answers), "problems": len(problems)}
    if problems:
        return new_row("worker-headers", title, "fail", "; ".join(problems[:6]), **observed)
    colos = sorted({a.header("cf-ray").rsplit("-", 1)[-1] for _, a in answers})
    detail = f"{len(answers)} answers, colo {', '.join(colos)}"
    return new_row("worker-headers", title, "pass", detail, **observed)


def check_worker(ctx: Context) -> list[Result]:
    """GET /_health: reachable and contract compatible."""
    answer, why = ctx.health()
    if answer is None:
        return [new_row("worker", "Worker reachable, contract compatible", "fail", why)]
    try:
        document = answer.json()
    except SyncCIError:
        document = None
    return [evaluate_health(answer.status, document)]


def check_read_path(ctx: Context) -> list[Result]:
    """Walk what a tenant's install does: /install, /catalog, sampled objects, the headers."""
    health = ctx.reachable()
    seen: list[tuple[str, Answer]] = [("/_health", health)]
    rows: list[Result] = []
    manifest: Manifest | None = None
    catalog: Catalog | None = None
    for route in ("/install", "/catalog"):
        answer, why = ctx.get(route)
        if answer is None:
            row_id = f"worker{route.replace('/', '-')}"
            rows.append(new_row(row_id, READ_TITLES[row_id], "fail", why))
            continue
        seen.append((route, answer))
        if route == "/install":
            row, manifest = evaluate_install(answer)
        else:
            row, catalog = evaluate_catalog(answer, manifest)
        rows.append(row)
    listed = catalog or (manifest.catalog if manifest else None)
    if listed is None:
        rows.append(
            new_row(
                "worker-objects",
                READ_TITLES["worker-objects"],
                "skip",
                "nothing to sample: neither /install nor /catalog gave a valid list",
            )
        )
    else:
        base = manifest.object_base if manifest else OBJECT_BASE
        fetched: list[tuple[CatalogEntry, Answer | None, str]] = []
        for entry in choose_sample(listed.entries, seed=ctx.now().strftime("%Y%m%d%H")):
            answer, why = ctx.get(f"{base}{entry.sha256}")
            fetched.append((entry, answer, why))
            if answer is not None:
                seen.append((f"{base}{entry.sha256[:12]}…", answer))
        rows.append(evaluate_objects(fetched))
    rows.append(evaluate_headers(seen))
    return rows


def check_clock(ctx: Context) -> list[Result]:
    """Clock skew against the Worker's Date header."""
    answer = ctx.reachable()
    local = ctx.now()
    return [evaluate_skew(answer.header("date"), local)]
