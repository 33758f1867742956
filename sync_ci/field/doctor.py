"""Field doctor: field lints, the tenant's read path, mirror parity; exit code = failure count."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.clock import utc_stamp
from sync_ci.errors import SyncCIError, UsageError
from sync_ci.report import Report, Result, Status, make_report

if TYPE_CHECKING:
    from sync_ci.config import Settings
    from sync_ci.contract import Catalog, CatalogEntry
    from sync_ci.worker import Answer, WorkerClient

MAX_EXIT = 100
MAX_SKEW_S = 300.0
MAX_PULL_AGE_S = 24 * 3600.0
MIN_FREE_BYTES = 100 * 1024 * 1024
HEALTH_TIMEOUT_S = 5.0
LAST_PULL_STAMP = "last-pull"
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


# --- pure evaluations --------------------------------------------------------------------------


def _row(id: str, title: str, status: Status, detail: str = "", **observed: Any) -> Result:
    return Result(id=id, title=title, status=status, detail=detail, observed=observed)


def evaluate_health(status: int, document: Any) -> Result:
    """Judge a `/_health` answer: 200, ok true, a contract version we speak."""
    title = "Worker reachable, contract compatible"
    if status != 200:
        return _row("worker", title, "fail", f"/_health answered {status}", http_status=status)
    if not isinstance(document, dict) or document.get("ok") is not True:
        return _row("worker", title, "fail", "/_health did not say ok: true")
    version = document.get("contract")
    if version not in SUPPORTED_CONTRACTS:
        return _row(
            "worker",
            title,
            "fail",
            f"Worker speaks contract {version!r}; this sync-ci speaks {SUPPORTED_CONTRACTS}",
            contract=version,
        )
    return _row(
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
        return _row(
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


def evaluate_pull_age(
    stamp_mtime: float | None, now: float, max_age_s: float = MAX_PULL_AGE_S
) -> Result:
    """Judge the age of the last successful pull from its stamp file's mtime (None = no stamp)."""
    title = f"last successful pull within {max_age_s / 3600:g} h"
    if stamp_mtime is None:
        return Result(
            id="last-pull",
            title=title,
            status="skip",
            detail=f"no {LAST_PULL_STAMP} stamp in the state directory yet (no pull recorded)",
        )
    age = now - stamp_mtime
    status: Status = "fail" if age > max_age_s else "pass"
    return Result(
        id="last-pull",
        title=title,
        status=status,
        detail=f"last pull {age / 3600:.1f} h ago" + ("; run a pull" if status == "fail" else ""),
        observed={"age_s": round(age)},
        threshold={"max_age_s": max_age_s},
    )


def evaluate_free_space(free_bytes: int, path: Path, min_free: int = MIN_FREE_BYTES) -> Result:
    """Require some free space where the state directory lives."""
    status: Status = "fail" if free_bytes < min_free else "pass"
    return Result(
        id="free-space",
        title="free space for the state directory",
        status=status,
        detail=f"{free_bytes / 2**20:.0f} MiB free at {path}",
        observed={"free_bytes": free_bytes},
        threshold={"min_free_bytes": min_free},
    )


def evaluate_secrets_file(path: Path | None, mode: int, owner: int, uid: int) -> Result:
    """A secrets file, when used, must belong to this user and be unreadable by anyone else."""
    title = "secrets file owner-only"
    if path is None:
        return _row(
            "secrets-file", title, "skip", "no SYNC_CI_SECRETS_FILE (secrets from the environment)"
        )
    if owner != uid:
        return _row("secrets-file", title, "fail", f"{path} belongs to uid {owner}, not {uid}")
    if mode & 0o077:
        return _row(
            "secrets-file", title, "fail", f"{path} has mode {mode:o}; run: chmod 600 {path}"
        )
    return _row("secrets-file", title, "pass", f"{path} mode {mode:o}")


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
        return _row("worker-install", title, "fail", problem, http_status=answer.status), manifest
    assert manifest is not None
    detail = f"generation {manifest.catalog.generation}, {len(manifest.catalog.entries)} entries"
    row = _row(
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
        return _row("worker-catalog", title, "fail", problem, http_status=answer.status), None
    try:
        catalog = parse_catalog(answer.json(), f"{answer.url} catalog")
    except SyncCIError as exc:
        return _row("worker-catalog", title, "fail", str(exc)), None
    observed = {"generation": catalog.generation, "entries": len(catalog.entries)}
    summary = f"generation {catalog.generation}, {len(catalog.entries)} entries"
    if manifest is None:
        return _row(
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
        return _row("worker-catalog", title, "fail", "; ".join(problems), **observed), catalog
    return _row("worker-catalog", title, "pass", f"{summary}, as /install", **observed), catalog


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
        return _row("worker-objects", title, "skip", "the catalog lists no objects to sample")
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
        return _row("worker-objects", title, "fail", "; ".join(problems), **observed)
    names = _names((entry.name for entry, _, _ in fetched), limit=len(fetched))
    return _row("worker-objects", title, "pass", f"{len(fetched)} match: {names}", **observed)


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
        return _row("worker-headers", title, "fail", "; ".join(problems[:6]), **observed)
    colos = sorted({a.header("cf-ray").rsplit("-", 1)[-1] for _, a in answers})
    detail = f"{len(answers)} answers, colo {', '.join(colos)}"
    return _row("worker-headers", title, "pass", detail, **observed)


def evaluate_state_dir(path: Path, problem: str) -> Result:
    """Judge the writability probe of the state directory ('' = a temp file came and went)."""
    title = "state directory writable"
    if not problem:
        return _row("state-dir", title, "pass", f"{path} (created and removed a file)")
    return _row(
        "state-dir",
        title,
        "fail",
        f"cannot write in {path}: {problem}; make it a directory this user owns "
        "(mkdir -p, chown) or point [tenant] state_dir / SYNC_CI_STATE_DIR elsewhere",
    )


def summarize_parity(cells: Sequence[Result]) -> list[Result]:
    """Collapse parity cells: one summary row plus every failing cell (those count as failures)."""
    failing = [c for c in cells if c.status in ("fail", "error")]
    passed = sum(c.status == "pass" for c in cells)
    skipped = sum(c.status == "skip" for c in cells)
    status: Status = "fail" if failing else ("pass" if passed else "skip")
    summary = Result(
        id="mirror-parity",
        title="local mirror matches the Worker catalog",
        status="skip" if failing else status,
        detail=f"{passed} cells agree, {len(failing)} differ, {skipped} skipped (bucket cells need "
        "bucket credentials)"
        if cells
        else "the Worker catalog is empty",
        observed={"pass": passed, "fail": len(failing), "skip": skipped},
    )
    return [summary, *failing] if failing else [summary]


def cap_exit(report: Report) -> int:
    """Return the failure count, capped so it never wraps to 0 modulo 256."""
    return min(MAX_EXIT, len(report.failing()))


# --- the run context -------------------------------------------------------------------------


@dataclass
class Context:
    """What the checks share: settings, clock, and a lazily opened Worker client."""

    settings: Settings | None
    settings_error: str = ""
    cron_user: str = ""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _client: WorkerClient | None = None
    _answers: dict[str, tuple[Answer | None, str]] = field(default_factory=dict)
    _state_problem: str | None = None
    crontab_text: str | None = None

    def need_settings(self) -> Settings:
        """Return the settings or raise Skip."""
        if self.settings is None:
            raise Skip("settings invalid (see the settings row)")
        return self.settings

    def client(self) -> WorkerClient:
        """A read-only Worker client with a short timeout (doctor only GETs)."""
        settings = self.need_settings()
        if not settings.worker_url:
            raise Skip("no Worker URL configured")
        if self._client is None:
            from sync_ci.worker import WorkerClient, WorkerTarget

            self._client = WorkerClient(
                WorkerTarget(
                    base_url=settings.worker_url,
                    read_only=True,
                    timeout_s=min(settings.worker_timeout_s, HEALTH_TIMEOUT_S),
                    retries=0,
                )
            )
        return self._client

    def get(self, path: str) -> tuple[Answer | None, str]:
        """GET a path once per run; return (answer, '') or (None, why)."""
        if path not in self._answers:
            try:
                self._answers[path] = (self.client().get(path, retry=False), "")
            except Skip:
                raise
            except SyncCIError as exc:
                self._answers[path] = (None, str(exc))
        return self._answers[path]

    def health(self) -> tuple[Answer | None, str]:
        """GET /_health once; return (answer, '') or (None, why)."""
        return self.get("/_health")

    def state_problem(self) -> str:
        """Create the state directory if needed, then a temp file in it; return '' or why not."""
        if self._state_problem is None:
            self._state_problem = probe_writable(self.need_settings().state_dir)
        return self._state_problem

    def need_state_dir(self) -> Path:
        """Return the state directory or raise Skip when it cannot be written."""
        if self.state_problem():
            raise Skip("state directory unusable (see the state-dir row)")
        return self.need_settings().state_dir

    def reachable(self) -> Answer:
        """Return the health answer or raise Skip when the Worker is down."""
        answer, _ = self.health()
        if answer is None or answer.status != 200:
            raise Skip("Worker unreachable (see the worker row)")
        return answer

    def crontab(self) -> str:
        """Read the crontab once."""
        if self.crontab_text is None:
            from sync_ci.field.cron import read_crontab

            self.crontab_text = read_crontab(self.cron_user)
        return self.crontab_text

    def close(self) -> None:
        """Release the Worker connection."""
        if self._client is not None:
            self._client.close()


class Skip(Exception):
    """A check that cannot run here; its message becomes the skip detail."""


def probe_writable(path: Path) -> str:
    """Create `path` if missing, then create and remove a file in it; return '' or why not."""
    probe = path / f".doctor-probe-{os.getpid()}-{time.monotonic_ns()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        return f"{exc.strerror or type(exc).__name__}{where}"
    return ""


# --- the checks -------------------------------------------------------------------------------


def check_settings(ctx: Context) -> list[Result]:
    """Settings load and name a Worker."""
    title = "settings valid"
    if ctx.settings is None:
        return [_row("settings", title, "fail", ctx.settings_error)]
    settings = ctx.settings
    if not settings.worker_url:
        return [
            _row(
                "settings",
                title,
                "fail",
                "no Worker URL: set [worker] url in sync-ci.toml or SYNC_CI_WORKER_URL",
            )
        ]
    return [
        _row(
            "settings",
            title,
            "pass",
            f"target {settings.target}, config {settings.config_path or '(none)'}",
        )
    ]


def check_tenant(ctx: Context) -> list[Result]:
    """Tenant id valid, token present, secrets file owner-only."""
    from sync_ci.contract import validate_tenant_id
    from sync_ci.errors import ContractError

    settings = ctx.need_settings()
    title = "tenant id and token present"
    rows: list[Result] = []
    problems = []
    try:
        validate_tenant_id(settings.tenant_id)
    except ContractError as exc:
        problems.append(f"{exc} (set [tenant] id or SYNC_CI_TENANT_ID)")
    if not (settings.secrets.tenant_token or settings.secrets.tenant_secret):
        problems.append(
            "no tenant token (set SYNC_CI_TENANT_TOKEN in the env or SYNC_CI_SECRETS_FILE)"
        )
    rows.append(
        _row(
            "tenant",
            title,
            "fail" if problems else "pass",
            "; ".join(problems) or f"tenant {settings.tenant_id}",
        )
    )
    secrets_path = os.environ.get("SYNC_CI_SECRETS_FILE", "")
    if secrets_path:
        path = Path(secrets_path)
        try:
            info = path.stat()
        except OSError as exc:
            rows.append(
                _row("secrets-file", "secrets file owner-only", "fail", f"{path}: {exc.strerror}")
            )
        else:
            rows.append(
                evaluate_secrets_file(path, stat.S_IMODE(info.st_mode), info.st_uid, os.getuid())
            )
    else:
        rows.append(evaluate_secrets_file(None, 0, 0, 0))
    return rows


def check_worker(ctx: Context) -> list[Result]:
    """GET /_health: reachable and contract compatible."""
    answer, why = ctx.health()
    if answer is None:
        return [_row("worker", "Worker reachable, contract compatible", "fail", why)]
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
            rows.append(_row(row_id, READ_TITLES[row_id], "fail", why))
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
            _row(
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


def check_state_dir(ctx: Context) -> list[Result]:
    """The state directory exists (or can be made) and a file can be created in it."""
    settings = ctx.need_settings()
    return [evaluate_state_dir(settings.state_dir, ctx.state_problem())]


def check_clock(ctx: Context) -> list[Result]:
    """Clock skew against the Worker's Date header."""
    answer = ctx.reachable()
    local = ctx.now()
    return [evaluate_skew(answer.header("date"), local)]


def check_cron(ctx: Context) -> list[Result]:
    """The crontab holds one sane sync-ci entry."""
    from sync_ci.field.cron import evaluate_entry

    try:
        text = ctx.crontab()
    except SyncCIError as exc:
        return [_row("cron-entry", "cron entry installed and sane", "fail", str(exc))]
    return [evaluate_entry(text)]


def check_last_pull(ctx: Context) -> list[Result]:
    """Age of the last successful pull."""
    state_dir = ctx.need_state_dir()
    try:
        mtime: float | None = (state_dir / LAST_PULL_STAMP).stat().st_mtime
    except FileNotFoundError:
        mtime = None
    return [evaluate_pull_age(mtime, ctx.now().timestamp())]


def check_parity(ctx: Context) -> list[Result]:
    """Worker catalog against the local mirror (parity-matrix cells a tenant can reach)."""
    settings = ctx.need_settings()
    if not settings.mirror_dir.is_dir():
        raise Skip(f"no local mirror at {settings.mirror_dir}")
    ctx.reachable()
    from sync_ci.contract import parse_catalog
    from sync_ci.parity import Observation, evaluate_cells, mirror_observations
    from sync_ci.worker import expect

    try:
        answer, why = ctx.get("/catalog")  # the read path's answer, not a second request
        if answer is None:
            raise SyncCIError(why)
        catalog = parse_catalog(expect(answer, 200).json(), "Worker /catalog")
        advertised = [
            Observation(artifact=e.name, surface="worker", digest=e.sha256) for e in catalog.entries
        ]
        cells = evaluate_cells(advertised + mirror_observations(catalog, settings.mirror_dir))
    except SyncCIError as exc:
        return [_row("mirror-parity", "local mirror matches the Worker catalog", "fail", str(exc))]
    return summarize_parity(cells)


def check_free_space(ctx: Context) -> list[Result]:
    """Free space where the state directory lives."""
    settings = ctx.need_settings()
    path = settings.state_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    return [evaluate_free_space(shutil.disk_usage(path).free, path)]


def check_spool(ctx: Context) -> list[Result]:
    """Deliver spooled alerts; fail if any remain undelivered."""
    from sync_ci.field.alerts import Spool, flush_spool

    settings = ctx.need_settings()
    title = "no undelivered alerts in the spool"
    spool = Spool(ctx.need_state_dir())
    if not spool.pending():
        dropped = spool.dropped()
        if dropped:
            return [
                _row("alert-spool", title, "fail", f"{dropped} alerts were dropped (spool full)")
            ]
        return [_row("alert-spool", title, "pass", "spool empty")]
    result = flush_spool(settings)
    status: Status = "fail" if result.pending or result.dropped else "pass"
    detail = f"delivered {result.delivered}, {result.pending} still waiting in {spool.dir}"
    if result.dropped:
        detail += f", {result.dropped} dropped (spool full)"
    if result.error:
        detail += f": {result.error}"
    return [
        Result(
            id="alert-spool",
            title=title,
            status=status,
            detail=detail,
            observed={
                "delivered": result.delivered,
                "pending": result.pending,
                "dropped": result.dropped,
            },
        )
    ]


def check_lints(ctx: Context) -> list[Result]:
    """Every field-scope rule of the lint catalogue."""
    from checks.catalogue import field_subject, run_rules, to_results

    settings = ctx.settings
    files = [Path(settings.config_path)] if settings and settings.config_path else []
    secrets_path = os.environ.get("SYNC_CI_SECRETS_FILE", "")
    try:
        crontab = ctx.crontab()
    except SyncCIError:
        crontab = ""
    subject = field_subject(
        crontab=crontab, files=files, secret_files=[Path(secrets_path)] if secrets_path else []
    )
    return to_results(run_rules(scope="field", subject=subject))


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """A named doctor check."""

    name: str
    title: str
    run: Callable[[Context], list[Result]]


CHECKS: tuple[Check, ...] = (
    Check(name="settings", title="settings valid", run=check_settings),
    Check(
        name="tenant",
        title="tenant id and token present; secrets file owner-only",
        run=check_tenant,
    ),
    Check(name="worker", title="Worker reachable and contract compatible", run=check_worker),
    Check(
        name="read-path",
        title="tenant read path: /install, /catalog, sampled objects, contract headers",
        run=check_read_path,
    ),
    Check(
        name="clock-skew", title="clock within 5 min of the Worker's Date header", run=check_clock
    ),
    Check(name="cron-entry", title="cron entry installed and sane", run=check_cron),
    Check(name="state-dir", title="state directory writable", run=check_state_dir),
    Check(name="last-pull", title="last successful pull within 24 h", run=check_last_pull),
    Check(name="mirror-parity", title="local mirror matches the Worker catalog", run=check_parity),
    Check(name="free-space", title="free space for the state directory", run=check_free_space),
    Check(name="alert-spool", title="no undelivered alerts in the spool", run=check_spool),
    Check(name="lint", title="field-scope lint rules (checks/)", run=check_lints),
)


def select_checks(names: Sequence[str]) -> tuple[Check, ...]:
    """Return the named checks (all when none named) or raise UsageError."""
    if not names:
        return CHECKS
    known = {c.name: c for c in CHECKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown check {', '.join(unknown)}; see sync-ci doctor --list-checks")
    return tuple(c for c in CHECKS if c.name in names)


def run_checks(ctx: Context, checks: Sequence[Check]) -> list[Result]:
    """Run checks in order; a Skip becomes a skip row, a project error an error row."""
    results: list[Result] = []
    for check in checks:
        started = time.perf_counter()
        try:
            rows = check.run(ctx)
        except Skip as why:
            rows = [_row(check.name, check.title, "skip", str(why))]
        except (SyncCIError, OSError) as exc:
            rows = [_row(check.name, check.title, "error", f"{type(exc).__name__}: {exc}")]
        spent = time.perf_counter() - started
        results += [
            Result(
                id=r.id,
                title=r.title,
                status=r.status,
                detail=r.detail,
                observed=r.observed,
                threshold=r.threshold,
                duration_s=r.duration_s or spent / len(rows),
            )
            for r in rows
        ]
    return results


def doctor(
    settings: Settings | None,
    *,
    names: Sequence[str] = (),
    settings_error: str = "",
    cron_user: str = "",
    now: Callable[[], datetime] | None = None,
) -> Report:
    """Run the doctor checks and return the report."""
    wall = now or (lambda: datetime.now(UTC))
    started_at = wall()
    started = time.perf_counter()
    ctx = Context(settings=settings, settings_error=settings_error, cron_user=cron_user, now=wall)
    try:
        results = run_checks(ctx, select_checks(names))
    finally:
        ctx.close()
    return make_report(
        suite="doctor",
        target=settings.target if settings else "unknown",
        mode="field",
        sha=settings.sha if settings else "",
        started_at=utc_stamp(started_at),
        duration_s=time.perf_counter() - started,
        results=results,
    )


def save_report(report: Report, state_dir: Path) -> None:
    """Keep the report as last-doctor.json (owner-only) so `alert` can attach the failing rows."""
    from sync_ci.field import last_doctor

    # A report we cannot keep must not change doctor's verdict; the free-space row says why.
    with contextlib.suppress(OSError):
        last_doctor.save(report.to_json(), state_dir)


def send_heartbeat(settings: Settings) -> None:
    """POST /_heartbeat as the tenant (best effort, silent)."""
    from sync_ci.field.alerts import tenant_poster

    with contextlib.suppress(SyncCIError):
        tenant_poster(settings, "/_heartbeat")({}, HEALTH_TIMEOUT_S)


def record_pull(state_dir: Path) -> None:
    """Touch the last-pull stamp (called by whatever performs a successful pull)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (state_dir / LAST_PULL_STAMP).touch()


def list_checks() -> str:
    """Return the `--list-checks` text: one check per line."""
    lines = [f"{c.name:<14} {c.title}" for c in CHECKS]
    try:
        from checks.catalogue import discover

        lines += [f"  {r.id:<12} {r.title}" for r in discover() if "field" in r.scopes]
    except ImportError:
        pass
    return "\n".join(lines)


def command(
    *,
    names: Sequence[str] = (),
    config: str | None = None,
    target: str | None = None,
    silent: bool = False,
    json_path: str | None = None,
    junit_path: str | None = None,
    heartbeat: bool = False,
    cron_user: str = "",
) -> int:
    """Run doctor, print/write the report, and return the failure count (capped at 100)."""
    from sync_ci.config import load_settings
    from sync_ci.report import emit

    select_checks(names)
    settings: Settings | None
    try:
        from sync_ci.field.alerts import field_settings

        settings = field_settings(load_settings(config=config, target=target, check_remote=False))
        error = ""
    except SyncCIError as exc:
        settings, error = None, str(exc)
    exclusive = contextlib.ExitStack()
    if settings is not None:
        from sync_ci.errors import LockBusy
        from sync_ci.locks import LockUnavailable, hold_lock, lock_path

        try:
            exclusive.enter_context(hold_lock(lock_path(settings.state_dir, "doctor"), "doctor"))
        except LockBusy as exc:  # a run still going is not a failure: exit 0, no alert
            if not silent:
                print(f"sync-ci: doctor: {exc}", file=sys.stderr)
            return 0
        except LockUnavailable:
            pass  # an unusable state directory must not stop doctor from reporting it
    with exclusive:
        report = doctor(settings, names=names, settings_error=error, cron_user=cron_user)
        if settings is not None:
            save_report(report, settings.state_dir)
        args = argparse.Namespace(quiet=silent, json_path=json_path, junit_path=junit_path)
        emit(report, args)
        if heartbeat and report.ok and settings is not None:
            send_heartbeat(settings)
    return cap_exit(report)


def add_parser(sub: Any) -> None:
    """Register `doctor`."""
    from sync_ci.options import add_common

    parser = sub.add_parser(
        "doctor",
        help="check this machine's sync setup; exit code = number of failing checks",
        description="Run the field checks (lint rules of scope field, then the parity cells). "
        "With --quiet: nothing on success, only the failing rows on failure. Exit code: the "
        "number of failing checks (capped at 100); 0 when healthy.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="CHECK", help="run only these checks (see --list-checks)"
    )
    add_common(parser)
    # The seed's field cron line spells --quiet as --silent; installed lines keep working.
    parser.add_argument(
        "--silent",
        action="store_true",
        dest="quiet",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--list-checks", action="store_true", help="list the checks and exit")
    parser.add_argument(
        "--heartbeat",
        action="store_true",
        help="on success POST a tiny /_heartbeat so the Worker knows we are alive",
    )
    parser.add_argument(
        "--cron-user",
        default="",
        metavar="NAME",
        help="whose crontab to check (default: yours)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.list_checks:
        print(list_checks())
        return 0
    return command(
        names=args.names,
        config=args.config,
        target=args.target,
        silent=args.quiet,
        json_path=args.json_path,
        junit_path=args.junit_path,
        heartbeat=args.heartbeat,
        cron_user=args.cron_user,
    )
