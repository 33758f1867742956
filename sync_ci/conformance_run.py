"""A conformance run's state: where requests go and how they are guarded (`open_run`), the roots
and credentials each case carries, sending a case, and the findings and tallies as report rows.

The case and probe modules share this one `Run`; nothing here imports Schemathesis or Hypothesis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sync_ci import contract
from sync_ci.report import Result

if TYPE_CHECKING:
    import requests

    from sync_ci.config import Settings
    from sync_ci.worker import WorkerClient

CONFORMANCE_TENANT = "conformance"
POSTS = ("/_push", "/_alert", "/_heartbeat")


# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One check that failed on one operation, with the first request that showed it."""

    operation: str
    check: str
    message: str
    status: int
    request: str
    where: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes two findings the same: operation, check and where it was asked."""
        return (self.where, self.operation, self.check)


@dataclass(slots=True)
class OperationTally:
    """Cases sent to one operation and what came back (`skipped`: why some were not sent)."""

    operation: str
    where: str = ""
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    skipped: str = ""
    seconds: float = 0.0

    def count(self, status: int, seconds: float) -> None:
        """Count one answer and the time it took."""
        self.seconds += seconds
        self.cases += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """What authenticated requests carry; empty strings when the target gave none."""

    tenant_id: str
    tenant_token: str = field(repr=False)
    admin_token: str = field(repr=False)


@dataclass(slots=True)
class Run:
    """One conformance run: where requests go, how they are guarded, what was found."""

    base_url: str
    session: requests.Session
    timeout_s: float
    read_root: str
    write_root: str
    credentials: Credentials
    object_names: tuple[str, ...]
    max_examples: int
    seed: int
    deadline: float
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    tallies: dict[tuple[str, str], OperationTally] = field(default_factory=dict)
    probed: set[tuple[str, str, str]] = field(default_factory=set)
    unanswered: str = ""
    pinned_root: str = ""
    stored_alerts: set[tuple[str, str, str]] = field(default_factory=set)
    floor_cases: int = 0

    def out_of_time(self) -> bool:
        """True once the run's budget is spent and it has sent at least `floor_cases` cases."""
        if time.monotonic() < self.deadline:
            return False
        return sum(t.cases for t in self.tallies.values()) >= self.floor_cases


# --- pure functions ------------------------------------------------------------------------------


def root_for(method: str, read_root: str, write_root: str) -> str:
    """The root a request works under: writes under the CI root, reads where the data is."""
    return write_root if method.upper() not in ("GET", "HEAD") else read_root


def request_headers(
    method: str,
    generated: object,
    *,
    secured: str,
    credentials: Credentials,
    read_root: str,
    write_root: str,
    keep_invalid_root: bool = False,
) -> dict[str, Any]:
    """The headers one case is sent with: the root it works under, then real credentials.

    A read generated with an invalid root header keeps it (the Worker must answer 400); every
    other case works under the run's own root, so a write never names any root but the CI one.
    """
    headers: dict[str, Any] = dict(generated) if isinstance(generated, Mapping) else {}
    reads = method.upper() in ("GET", "HEAD")
    if not (keep_invalid_root and reads and sendable(headers.get(contract.ROOT_HEADER))):
        headers.pop(contract.ROOT_HEADER, None)
        root = root_for(method, read_root, write_root)
        if root:
            headers[contract.ROOT_HEADER] = root
    if secured == "tenant" and credentials.tenant_token:
        headers.update(contract.tenant_headers(credentials.tenant_id, credentials.tenant_token))
    elif secured == "admin" and credentials.admin_token:
        headers["authorization"] = f"Bearer {credentials.admin_token}"
    return headers


def sendable(value: object) -> bool:
    """True for a header value that reaches the Worker as generated.

    An empty value is dropped on the way (the client's own root header then goes instead), and
    surrounding spaces or non-ASCII text are rewritten, so such a value tests nothing.
    """
    return (
        isinstance(value, str)
        and value != ""
        and value == value.strip()
        and value.isascii()
        and value.isprintable()
    )


def summarize_run(run: Run) -> list[Result]:
    """One row per operation (and region), then one failing row per distinct finding."""
    rows: list[Result] = []
    for tally in run.tallies.values():
        label = f"{tally.operation} @{tally.where}" if tally.where else tally.operation
        found = [
            f
            for f in run.findings.values()
            if f.where == tally.where and (tally.where or f.operation == tally.operation)
        ]
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(tally.statuses.items()))
        if tally.skipped and not tally.cases:
            rows.append(
                Result(
                    id=f"conformance:{label}",
                    title="generated requests",
                    status="skip",
                    detail=tally.skipped,
                )
            )
            continue
        rows.append(
            Result(
                id=f"conformance:{label}",
                title="generated requests",
                status="fail" if found else "pass",
                duration_s=tally.seconds,
                detail=(
                    f"{tally.cases} cases ({statuses or 'none'}); "
                    + (f"{len(found)} finding(s)" if found else "every answer conforms")
                    + (f"; {tally.skipped}" if tally.skipped else "")
                ),
                observed={
                    "cases": tally.cases,
                    "statuses": {str(k): v for k, v in tally.statuses.items()},
                },
            )
        )
    for finding in run.findings.values():
        label = f"{finding.operation} @{finding.where}" if finding.where else finding.operation
        rows.append(
            Result(
                id=f"conformance:{label}:{finding.check}",
                title=f"{finding.check} on {finding.operation}",
                status="fail",
                detail=f"{' '.join(finding.message.split())[:400]} (status {finding.status}); "
                f"reproduce: {finding.request}",
                observed={
                    "status": finding.status,
                    "request": finding.request,
                    "check": finding.check,
                    "operation": label,
                    "seed": run.seed,
                },
            )
        )
    return rows


# --- edges ----------------------------------------------------------------------------------------


class Unanswered(Exception):
    """The Worker did not answer a case; the run stops and could not measure."""


class BudgetSpent(Exception):
    """The run's time budget ran out in the middle of a sequence."""


def send(run: Run, case: Any, base_url: str) -> Any:
    """Send one case through the guarded session (the adapter refuses what the target forbids)."""
    import requests

    if run.unanswered:
        raise Unanswered(run.unanswered)
    try:
        return case.call(
            base_url=base_url, session=run.session, timeout=run.timeout_s, allow_redirects=False
        )
    except requests.exceptions.RequestException as exc:
        run.unanswered = f"{case.method} {base_url}{case.formatted_path}: {type(exc).__name__}"
        raise Unanswered(run.unanswered) from None


def record(run: Run, finding: Finding) -> None:
    """Keep the first request that showed each distinct finding."""
    run.findings.setdefault(finding.key, finding)


def fetch_object_names(client: WorkerClient, root: str, limit: int = 8) -> tuple[str, ...]:
    """Names of objects the catalog lists (empty when there is no catalog to read)."""
    from sync_ci.errors import ContractError, WorkerError

    headers = {contract.ROOT_HEADER: root} if root else None
    answer = client.get("/catalog", headers=headers)
    if answer.status != 200:
        return ()
    try:
        catalog = contract.parse_catalog(answer.json())
    except (ContractError, WorkerError):
        return ()
    return tuple(sorted({e.sha256 for e in catalog.entries}))[:limit]


@contextmanager
def open_run(
    settings: Settings,
    *,
    max_examples: int,
    budget_s: float,
    seed: int,
    started: float | None = None,
    floor_cases: int = 0,
) -> Iterator[tuple[Run, WorkerClient]]:
    """Build the guarded session and the real data a run sends.

    The budget counts from `started` (a `time.monotonic()` value; default: now); `floor_cases`
    are sent however late.
    """
    from sync_ci.config_env import register_settings_secrets
    from sync_ci.target import tenant_token
    from sync_ci.target import worker_url as worker_base_url
    from sync_ci.worker import WorkerClient, WorkerTarget, expect, guarded_session

    begun = time.monotonic() if started is None else started

    read_only = settings.read_only
    worker_url = worker_base_url(settings)
    tenant = settings.tenant_id or CONFORMANCE_TENANT
    token = tenant_token(settings, tenant)
    register_settings_secrets(settings.secrets, tenant)
    # On ci every request names the CI root in the client itself; on sandbox reads go to the seeded
    # default root and writes under the CI prefix; live writes nothing, so only its root is read.
    write_root = "" if read_only else settings.ci_prefix
    read_root = settings.ci_prefix if settings.target == "ci" else ""
    pinned_root = settings.ci_prefix if settings.target == "ci" else ""
    target = WorkerTarget(
        base_url=worker_url,
        read_only=read_only,
        timeout_s=settings.worker_timeout_s,
        root=pinned_root,
        allowed_posts=() if read_only else POSTS,
        retries=0,
    )
    client = WorkerClient(target)
    with ExitStack() as stack:
        stack.callback(client.close)
        # Schemathesis sends through a requests Session: this one carries the same guard.
        session = stack.enter_context(guarded_session(target))
        expect(client.get("/_health"), 200)
        names = fetch_object_names(client, read_root)
        run = Run(
            base_url=worker_url,
            session=session,
            timeout_s=settings.worker_timeout_s,
            read_root=read_root,
            write_root=write_root,
            credentials=Credentials(
                tenant_id=tenant,
                tenant_token=token,
                admin_token=settings.secrets.admin_token,
            ),
            object_names=names,
            pinned_root=pinned_root,
            max_examples=max_examples,
            seed=seed,
            deadline=begun + budget_s,
            floor_cases=floor_cases,
        )
        yield run, client
