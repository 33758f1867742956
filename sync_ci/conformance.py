"""`sync-ci conformance`: requests generated from docs/contract.openapi.yaml, answers checked.

Schemathesis (on Hypothesis) builds valid and invalid requests for every operation; each one goes
through the guarded Worker client, and its answer is checked against the OpenAPI document.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci import contract
from sync_ci.errors import SettingsError, SyncCIError, UnreachableError, UsageError
from sync_ci.extras import require_extra
from sync_ci.report import Report, Result, Status, make_report

if TYPE_CHECKING:
    import argparse

    import requests

    from sync_ci.config import Settings
    from sync_ci.report import Outputs
    from sync_ci.worker import WorkerClient

SPEC_PATH = Path(__file__).resolve().parents[1] / "docs" / "contract.openapi.yaml"
DEFAULT_MAX_EXAMPLES = 25
DEFAULT_BUDGET_S = 300.0
CONFORMANCE_TENANT = "conformance"
# The Schemathesis checks that judge one answer against the document (named as Schemathesis does).
SCHEMA_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
# What one answer cannot show, so sync-ci probes it: credentials really checked, the declared body
# limit enforced, control characters refused in `Line` fields, a repeated alert key not stored again.
PROBE_CHECKS = ("ignored_auth", "body_limit", "controls_refused", "idempotent_alert")
# A terminal escape sequence (ESC, then "clear screen") and the other characters `Line` forbids.
CONTROL_SAMPLES = ("\x1b[2J", "\x00", "\n", "\x7f", "\x9b", "\u202e", "\u2028")
LINE_REF = "#/components/schemas/Line"
POSTS = ("/_push", "/_alert", "/_heartbeat")
BODY_LIMIT_KEY = "x-body-limit-bytes"
# Mutants of the reference Worker (docs/mutants.md) whose violation the OpenAPI document makes
# visible, so that conformance alone catches each: auth ignored, a wrong status, a missing or
# malformed header, an error body in a 200, a 5xx in one region, a repeated alert stored again.
# Each names the operation and the check whose finding catches it ("@GRU": the one-region mutants'
# region, the last of the sandbox's five); docs/mutants.md shows the same in its conformance column.
CATCHES_MUTANTS: Mapping[str, tuple[str, str]] = {
    "alert-no-dedup": ("POST /_alert", "idempotent_alert"),
    "push-auth-bypass": ("POST /_push", "ignored_auth"),
    "status-open": ("GET /_status", "ignored_auth"),
    "no-413": ("POST /_push", "body_limit"),
    "alert-controls": ("POST /_alert", "controls_refused"),
    "region-500": ("GET /install @GRU", "not_a_server_error"),
    "region-down": ("GET /_health @GRU", "not_a_server_error"),
    "no-cf-ray": ("GET /_health", "response_headers_conformance"),
    "bad-cf-ray": ("GET /_health", "response_headers_conformance"),
    "error-body-200": ("GET /install", "response_schema_conformance"),
    "no-date": ("GET /_health", "response_headers_conformance"),
}
# The write smoke's conformance phase: a handful of cases per operation within a few seconds, so the
# smoke stays short; `sync-ci conformance` (the PR workflow's own step) is the full run.
SMOKE_MAX_EXAMPLES = 3
SMOKE_BUDGET_S = 6.0
SMOKE_FINDINGS_SHOWN = 3


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


def wrong_credentials(secured: str, credentials: Credentials) -> list[tuple[str, dict[str, str]]]:
    """Credentials a Worker must refuse with 401: none at all, and a wrong token."""
    wrong = "0" * 64
    if secured == "tenant":
        return [
            ("no credentials", {}),
            (
                "a wrong token for a valid tenant",
                contract.tenant_headers(credentials.tenant_id, wrong),
            ),
        ]
    return [("no credentials", {}), ("a wrong admin token", {"authorization": f"Bearer {wrong}"})]


def secured_by(definition: Mapping[str, Any]) -> str:
    """Which credentials an operation needs: 'tenant', 'admin' or ''."""
    schemes = {name for requirement in definition.get("security", []) for name in requirement}
    if "adminToken" in schemes:
        return "admin"
    return "tenant" if "tenantToken" in schemes else ""


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


def load_contract(path: Path) -> Any:
    """Load the OpenAPI document with Schemathesis; a missing or broken one is a settings error."""
    require_extra("schemathesis", "conformance", needed_by="conformance")
    require_extra("hypothesis", "conformance", needed_by="conformance")
    import schemathesis

    if not path.is_file():
        raise SettingsError(f"no OpenAPI document at {path}; pass --spec PATH")
    try:
        return schemathesis.openapi.from_path(str(path))
    except Exception as exc:  # schemathesis raises several loader errors; all mean the same here
        raise SettingsError(f"cannot load the OpenAPI document {path}: {exc}") from None


def schema_checks() -> dict[str, Callable[..., Any]]:
    """The Schemathesis check functions of SCHEMA_CHECKS, by name."""
    from schemathesis import checks
    from schemathesis.specs.openapi import checks as openapi_checks

    return {
        name: getattr(openapi_checks, name, None) or getattr(checks, name) for name in SCHEMA_CHECKS
    }


def curl_of(case: Any, base_url: str, headers: Mapping[str, Any] | None = None) -> str:
    """The curl command that reproduces a case (secrets are masked where the row is built)."""
    try:
        return str(case.as_curl_command(headers=dict(headers or {}), base_url=base_url))
    except Exception:  # a case Schemathesis cannot render still gets a description
        return f"{case.method} {base_url}{case.formatted_path}"


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


def judge(run: Run, case: Any, response: Any, base_url: str, where: str) -> None:
    """Run every schema check on one answer; failures become findings."""
    for name, check in schema_checks().items():
        try:
            case.validate_response(response, checks=[check])
        except (AssertionError, BaseExceptionGroup) as exc:
            failures = getattr(exc, "exceptions", None) or [exc]
            message = "; ".join(
                f"{getattr(f, 'title', '')}: {getattr(f, 'message', str(f))}".strip(": ")
                for f in failures
            )
            record(
                run,
                Finding(
                    operation=case.operation.label,
                    check=name,
                    message=message,
                    status=response.status_code,
                    request=curl_of(case, base_url),
                    where=where,
                ),
            )


def expect_refusal(
    run: Run, probe: Any, base_url: str, where: str, *, want: int, check: str, sent: str
) -> None:
    """Send one probe; any answer but `want` becomes a finding that names what was sent."""
    answer = send(run, probe, base_url)
    if answer.status_code == want:
        return
    shown = curl_of(probe, base_url)
    record(
        run,
        Finding(
            operation=probe.operation.label,
            check=check,
            message=f"answered {answer.status_code} to {sent}, not {want}",
            status=answer.status_code,
            request=shown if len(shown) < 600 else f"{shown[:300]}… (cut: {len(shown)} characters)",
            where=where,
        ),
    )


def probe_auth(run: Run, case: Any, response: Any, base_url: str, secured: str, where: str) -> None:
    """After a 2xx, resend without and with wrong credentials: each must get 401."""
    label = case.operation.label
    if not secured or not 200 <= response.status_code < 300:
        return
    for what, credentials in wrong_credentials(secured, run.credentials):
        key = (where, label, what)
        if key in run.probed:
            continue
        run.probed.add(key)
        headers = {
            k: v
            for k, v in (case.headers or {}).items()
            if k.lower() not in ("authorization", contract.TENANT_HEADER)
        }
        probe = case.derive(headers={**headers, **credentials})
        expect_refusal(
            run,
            probe,
            base_url,
            where,
            want=401,
            check="ignored_auth",
            sent=f"a request with {what}",
        )


def probe_body_limit(run: Run, case: Any, base_url: str, limit: int, where: str) -> None:
    """Once per operation: a valid request with a JSON body one byte over the limit gets 413."""
    label = case.operation.label
    key = (where, label, "body_limit")
    if key in run.probed:
        return
    run.probed.add(key)
    pad = "x" * limit  # serialised with its key and quotes, over the limit however it is spaced
    body = {"pad": pad}
    probe = case.derive(headers=dict(case.headers or {}))
    probe.body = body
    probe.media_type = "application/json"
    expect_refusal(
        run,
        probe,
        base_url,
        where,
        want=413,
        check="body_limit",
        sent=f"a body over {limit} bytes (the document's {BODY_LIMIT_KEY})",
    )


def line_fields(definition: Mapping[str, Any], raw_spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The request-body fields the document types as `Line` (one line, no control characters)."""
    body = definition.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = body.get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = raw_spec.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[1], {})
    properties = schema.get("properties", {})
    return tuple(sorted(name for name, prop in properties.items() if prop.get("$ref") == LINE_REF))


def probe_controls(run: Run, case: Any, base_url: str, fields: tuple[str, ...], where: str) -> None:
    """Once per operation: the accepted body with a control character in each Line field gets 400."""
    label = case.operation.label
    if not isinstance(case.body, Mapping):
        return
    for index, name in enumerate(fields):
        key = (where, label, f"controls:{name}")
        if key in run.probed:
            continue
        run.probed.add(key)
        sample = CONTROL_SAMPLES[(run.seed + index) % len(CONTROL_SAMPLES)]
        body = {**case.body, name: f"conformance{sample}probe"}
        if "idempotency_key" in body and name != "idempotency_key":
            body["idempotency_key"] = f"conformance.{run.seed}.{index}.{time.monotonic_ns()}"
        probe = case.derive(headers=dict(case.headers or {}))
        probe.body = body
        expect_refusal(
            run,
            probe,
            base_url,
            where,
            want=400,
            check="controls_refused",
            sent=f"field {name!r} holding U+{ord(sample[0]):04X} (the document's Line forbids it)",
        )


def prepare(run: Run, case: Any, secured: str, pick: int) -> None:
    """Give a case real data: the run's root, valid credentials, an existing object name."""
    from schemathesis.core.parameters import ParameterLocation

    case.headers = request_headers(
        case.method,
        case.headers,
        secured=secured,
        credentials=run.credentials,
        read_root=run.read_root,
        write_root=run.write_root,
        # On ci the client itself names the CI root on every request, so a generated one never
        # reaches the Worker; sending it anyway would test nothing.
        keep_invalid_root=not run.pinned_root
        and case.meta is not None
        and case.meta.is_negative_at(ParameterLocation.HEADER),
    )
    positive = case.meta is None or not case.meta.generation.mode.is_negative
    if (
        positive
        and "sha256" in (case.path_parameters or {})
        and run.object_names
        and pick < len(run.object_names)
    ):
        case.path_parameters = {**case.path_parameters, "sha256": run.object_names[pick]}


def examine(
    run: Run, case: Any, response: Any, base_url: str, where: str, *, negative: bool
) -> None:
    """Judge one answer, then probe what one answer cannot show (credentials, limits, controls)."""
    definition = case.operation.definition.raw
    judge(run, case, response, base_url, where)
    check_idempotency(run, case, response, base_url, where)
    probe_auth(run, case, response, base_url, secured_by(definition), where)
    if negative or not 200 <= response.status_code < 300:
        return
    limit = definition.get(BODY_LIMIT_KEY)
    if isinstance(limit, int):
        probe_body_limit(run, case, base_url, limit, where)
    fields = line_fields(definition, case.operation.schema.raw_schema)
    if fields:
        probe_controls(run, case, base_url, fields, where)


def check_idempotency(run: Run, case: Any, response: Any, base_url: str, where: str) -> None:
    """An alert whose idempotency key was already stored is answered 200, not stored again."""
    body = case.body
    if case.operation.label != "POST /_alert" or not isinstance(body, Mapping):
        return
    key = (where, str(case.headers.get(contract.ROOT_HEADER, "")), str(body.get("idempotency_key")))
    if response.status_code == 202 and key in run.stored_alerts:
        record(
            run,
            Finding(
                operation=case.operation.label,
                check="idempotent_alert",
                message="answered 202 (stored) to an idempotency key it had already stored, not 200",
                status=response.status_code,
                request=curl_of(case, base_url),
                where=where,
            ),
        )
    if response.status_code in (200, 202):
        run.stored_alerts.add(key)


def exercise(
    run: Run,
    operation: Any,
    *,
    mode: Any,
    base_url: str,
    where: str,
    max_examples: int,
    tally_as: str = "",
) -> None:
    """Generate up to `max_examples` cases of one operation in one mode, send and judge each."""
    import hypothesis
    from hypothesis import strategies as st

    secured = secured_by(operation.definition.raw)
    label = tally_as or operation.label
    tally = run.tallies.setdefault((where, label), OperationTally(operation=label, where=where))

    @hypothesis.settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
        report_multiple_bugs=False,
    )
    @hypothesis.seed(run.seed)
    @hypothesis.given(
        case=operation.as_strategy(generation_mode=mode),
        pick=st.integers(min_value=0, max_value=max(len(run.object_names), 1) * 2),
    )
    def one(case: Any, pick: int) -> None:
        if run.out_of_time():
            tally.skipped = "budget spent before every case was sent"
            return
        prepare(run, case, secured, pick)
        started = time.perf_counter()
        response = send(run, case, base_url)
        tally.count(response.status_code, time.perf_counter() - started)
        examine(run, case, response, base_url, where, negative=mode.is_negative)

    try:
        one()
    except generation_errors() as exc:
        # A replay that drew differently (Flaky), or a case that cannot be built or sent as drawn:
        # every case sent was judged already, and the inconsistency says nothing about the Worker.
        reraise_own(run, exc)
        tally.skipped = tally.skipped or f"Hypothesis stopped early ({generation_note(exc)})"


def generation_errors() -> tuple[type[BaseException], ...]:
    """What Hypothesis or Schemathesis raise about generation itself, never about an answer.

    Flaky (FlakyStrategyDefinition, FlakyReplay, FlakyFailure: a replay that drew differently),
    Unsatisfiable (no case fits the schema) and a case Schemathesis cannot serialise.
    """
    from hypothesis.errors import Flaky, Unsatisfiable
    from schemathesis.core.errors import SerializationError

    return (Flaky, Unsatisfiable, SerializationError)


def reraise_own(run: Run, exc: BaseException) -> None:
    """Raise what a generation error wraps of our own: a Worker gone silent, a guard's refusal."""
    if run.unanswered:
        raise Unanswered(run.unanswered) from None
    if isinstance(exc, BaseExceptionGroup):
        found: BaseException | None = exc.subgroup(lambda e: isinstance(e, SyncCIError))
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        if found is not None:
            raise found


def generation_note(exc: BaseException) -> str:
    """A one-line name for a generation error: its type and first line."""
    first = next(iter(str(exc).strip().splitlines()), "")
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def operations(schema: Any, *, read_only: bool) -> list[Any]:
    """The document's operations a run may send: GET (and HEAD) only on a read-only target."""
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if read_only and operation.method.upper() not in ("GET", "HEAD"):
            continue
        found.append(operation)
    return found


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


def run_operations(
    run: Run, schema: Any, *, read_only: bool, regions: list[tuple[str, str]]
) -> None:
    """Every operation, valid then invalid data, on the main URL; GETs on every other region."""
    from schemathesis import GenerationMode

    from sync_ci import progress

    ops = operations(schema, read_only=read_only)
    plans: list[tuple[Any, Any, str, str, int, str]] = []
    # Valid data for every operation first, so a budget that runs out cuts depth, not breadth.
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in ops:
            plans.append((operation, mode, run.base_url, "", run.max_examples, ""))
    # Every region serves the same contract: its GETs with valid data, a fifth of the examples.
    for colo, url in regions:
        for operation in ops:
            if operation.method.upper() == "GET":
                examples = max(1, run.max_examples // 5)
                plans.append(
                    (operation, GenerationMode.POSITIVE, url, colo, examples, "GET operations")
                )
    shown = progress.current()
    for operation, mode, url, where, examples, tally_as in plans:
        shown.note(f"conformance: {tally_as or operation.label}{f' @{where}' if where else ''} ...")
        if run.out_of_time():
            label = tally_as or operation.label
            tally = run.tallies.setdefault(
                (where, label), OperationTally(operation=label, where=where)
            )
            tally.skipped = tally.skipped or f"budget spent before its {mode.value} cases ran"
            continue
        try:
            exercise(
                run,
                operation,
                mode=mode,
                base_url=url,
                where=where,
                max_examples=examples,
                tally_as=tally_as,
            )
        except Unanswered:
            raise UnreachableError(f"the Worker stopped answering ({run.unanswered})") from None


def run_stateful(run: Run, schema: Any, *, read_only: bool) -> None:
    """Follow the document's links: an alert, then /_status, and the same alert again."""
    import hypothesis

    if read_only or run.out_of_time():
        return
    tally = run.tallies.setdefault(("", "links"), OperationTally(operation="links"))

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def step(self, input: Any) -> Any:
            from schemathesis.generation.stateful.state_machine import StepOutput

            case = input.case
            if run.out_of_time():
                tally.skipped = "budget spent before every sequence ran"
                raise BudgetSpent
            secured = secured_by(case.operation.definition.raw)
            prepare(run, case, secured, len(run.object_names))
            started = time.perf_counter()
            response = send(run, case, run.base_url)
            tally.count(response.status_code, time.perf_counter() - started)
            negative = case.meta is not None and case.meta.generation.mode.is_negative
            examine(run, case, response, run.base_url, "", negative=negative)
            return StepOutput(response, case)

    from hypothesis.stateful import get_state_machine_test

    sequences = get_state_machine_test(
        Machine,
        settings=hypothesis.settings(
            max_examples=max(1, run.max_examples // 2),
            stateful_step_count=4,
            database=None,
            deadline=None,
            phases=[hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        ),
        _min_steps=2,
    )
    with suppress(BudgetSpent):
        try:
            hypothesis.seed(run.seed)(sequences)()
        except generation_errors() as exc:
            # Hypothesis replays a sequence and finds the link targets drawn differently (the
            # Worker's answers feed the next step). Every step sent was already judged by
            # `examine`; the replay's inconsistency says nothing about the Worker.
            reraise_own(run, exc)
            tally.skipped = tally.skipped or f"Hypothesis stopped early ({generation_note(exc)})"


# --- entry points -----------------------------------------------------------------------------------


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
    from sync_ci.config import register_settings_secrets
    from sync_ci.target import worker_url as worker_base_url
    from sync_ci.worker import WorkerClient, WorkerTarget, expect, guarded_session

    begun = time.monotonic() if started is None else started

    read_only = settings.read_only
    worker_url = worker_base_url(settings)
    tenant = settings.tenant_id or CONFORMANCE_TENANT
    token = settings.secrets.tenant_token
    if settings.secrets.tenant_secret:
        token = contract.tenant_token(settings.secrets.tenant_secret, tenant)
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


def hypothesis_cache_dir() -> Path:
    """Where Hypothesis keeps its storage for us: `$XDG_CACHE_HOME/sync-ci/hypothesis`.

    Only derived tables live there (the Unicode category map and the per-codec character sets,
    which depend on the Python build alone, and the constants Hypothesis reads from our code): the
    runs keep no example database, so a cached table changes no generated case. Computing the
    codec table costs seconds of CPU per run, which the smoke's short phase cannot spare.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sync-ci" / "hypothesis"


@contextmanager
def _private_hypothesis_home() -> Iterator[None]:
    """Point Hypothesis's storage at our own cache dir (a temp dir if that cannot be made).

    Left alone it writes `.hypothesis/` into the working directory of whoever runs the smoke.
    """
    import shutil
    import tempfile

    from hypothesis.configuration import set_hypothesis_home_dir

    home = hypothesis_cache_dir()
    made = ""
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:  # a read-only or missing home: the tables are computed again, in a temp dir
        made = tempfile.mkdtemp(prefix="sync-ci-hypothesis-")
    set_hypothesis_home_dir(made or str(home))
    try:
        yield
    finally:
        set_hypothesis_home_dir(None)
        if made:
            shutil.rmtree(made, ignore_errors=True)


def run_conformance(
    settings: Settings,
    *,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    budget_s: float = DEFAULT_BUDGET_S,
    seed: int | None = None,
    spec: Path = SPEC_PATH,
    every_region: bool = True,
    floor_cases: int = 0,
) -> Report:
    """Run conformance against already-attached settings and return its report.

    `every_region=False` sends to the main URL only (the smoke asks every region in its own
    install and catalog phases); `floor_cases` cases are sent even after the budget is spent.
    Nothing is written to the working directory.
    """
    with _private_hypothesis_home():
        return _run_conformance(
            settings,
            max_examples=max_examples,
            budget_s=budget_s,
            seed=seed,
            spec=spec,
            every_region=every_region,
            floor_cases=floor_cases,
        )


def _run_conformance(
    settings: Settings,
    *,
    max_examples: int,
    budget_s: float,
    seed: int | None,
    spec: Path,
    every_region: bool,
    floor_cases: int,
) -> Report:
    from sync_ci.target import regions_to_ask

    if max_examples < 1:
        raise UsageError(f"--max-examples {max_examples} must be at least 1")
    if not budget_s > 0:
        raise UsageError(f"--budget {budget_s:g} must be a positive number of seconds")
    chosen = random.SystemRandom().randrange(2**32) if seed is None else seed
    begun = time.monotonic()  # the budget bounds the whole run, loading the document included
    schema = load_contract(spec)
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    with open_run(
        settings,
        max_examples=max_examples,
        budget_s=budget_s,
        seed=chosen,
        started=begun,
        floor_cases=floor_cases,
    ) as (run, _):
        worker_url = run.base_url
        regions = [
            (r.colo, r.url.rstrip("/"))
            for r in (regions_to_ask(settings, worker_url) if every_region else [])
        ]
        run_operations(run, schema, read_only=settings.read_only, regions=regions)
        try:
            run_stateful(run, schema, read_only=settings.read_only)
        except Unanswered:
            raise UnreachableError(f"the Worker stopped answering ({run.unanswered})") from None
    rows = summarize_run(run)
    return make_report(
        suite="conformance",
        target=settings.target,
        mode="read-only" if settings.read_only else "write",
        sha=settings.sha,
        started_at=started_at,
        duration_s=time.perf_counter() - clock,
        results=rows,
        # A run whose budget ran out before one case was sent measured nothing: fail closed.
        unmeasured=not any(t.cases for t in run.tallies.values()),
        extra={
            "seed": chosen,
            "cases": sum(t.cases for t in run.tallies.values()),
            "spec": str(spec),
            "max_examples": max_examples,
            "checks": [*SCHEMA_CHECKS, *PROBE_CHECKS],
            "findings": len(run.findings),
            "notes": [
                f"{f'{t.operation} @{t.where}' if t.where else t.operation}: {t.skipped}"
                for t in run.tallies.values()
                if t.skipped
            ],
        },
    )


# --- the write smoke's phase -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseVerdict:
    """What the smoke's conformance phase concluded: its status, detail line and values."""

    status: Status
    detail: str
    observed: dict[str, Any] = field(default_factory=dict)


def smoke_seed(sha: str) -> int:
    """The seed of a smoke's conformance phase: derived from the commit, so a re-run replays it."""
    digest = hashlib.sha256(f"sync-ci smoke conformance {sha}".encode()).hexdigest()
    return int(digest[:8], 16)


def rerun_command(target: str, seed: int, max_examples: int) -> str:
    """The command that sends a run's cases again."""
    return f"sync-ci conformance --target {target} --seed {seed} --max-examples {max_examples}"


def summarize_notes(notes: list[str]) -> str:
    """Why some cases were not sent, each reason once with the operations it cut."""
    by_reason: dict[str, list[str]] = {}
    for note in notes:
        where, _, reason = note.partition(": ")
        by_reason.setdefault(reason, []).append(where)
    return "; ".join(f"{reason} ({', '.join(where)})" for reason, where in by_reason.items())


def summarize_phase(report: Report, *, shown: int = SMOKE_FINDINGS_SHOWN) -> PhaseVerdict:
    """Fold a conformance report into one smoke row: its findings, each with its request."""
    seed = int(report.extra["seed"])
    cases = int(report.extra["cases"])
    rerun = rerun_command(report.target, seed, int(report.extra["max_examples"]))
    notes = [str(n) for n in report.extra.get("notes", [])]
    findings = [r for r in report.failing() if "check" in r.observed]
    observed = {"seed": seed, "cases": cases, "findings": len(findings), "notes": notes}
    if report.unmeasured:
        return PhaseVerdict(
            status="skip",
            detail=f"seed {seed}: the phase's budget was spent before any case was sent; "
            f"rerun: {rerun}",
            observed=observed,
        )
    if findings:
        parts = [
            f"{r.observed['check']} on {r.observed['operation']}: {r.detail}"
            for r in findings[:shown]
        ]
        more = f"; {len(findings) - shown} more" if len(findings) > shown else ""
        return PhaseVerdict(
            status="fail",
            detail=f"seed {seed}, {cases} generated cases, {len(findings)} finding(s): "
            + "; ".join(parts)
            + f"{more}; rerun: {rerun}",
            observed=observed,
        )
    cut = f"; not sent: {summarize_notes(notes)}" if notes else ""
    return PhaseVerdict(
        status="pass",
        detail=f"seed {seed}: {cases} generated cases, every answer conforms{cut}; rerun: {rerun}",
        observed=observed,
    )


def run_smoke_phase(settings: Settings, *, budget_s: float = SMOKE_BUDGET_S) -> PhaseVerdict:
    """The write smoke's short conformance run against its Worker, seeded by the commit."""
    import importlib.util

    if importlib.util.find_spec("schemathesis") is None:
        return PhaseVerdict(
            status="skip",
            detail="schemathesis is not installed here (pip install 'sync-ci[conformance]'): "
            "no generated requests sent",
        )
    report = run_conformance(
        settings,
        max_examples=SMOKE_MAX_EXAMPLES,
        budget_s=budget_s,
        seed=smoke_seed(settings.sha),
        every_region=False,
        # However loaded the machine, the phase measures: a conforming Worker always passes it.
        floor_cases=1,
    )
    return summarize_phase(report)


def command(
    *,
    target: str | None,
    config: str | None,
    max_examples: int,
    budget_s: float,
    seed: int | None,
    spec: str,
    outputs: Outputs,
) -> int:
    """Resolve settings, attach the target, run conformance, print the table."""
    import sys

    from sync_ci import progress
    from sync_ci.attachment import SUITE, open_target
    from sync_ci.config import load_settings
    from sync_ci.report import emit

    settings = load_settings(config=config, target=target)
    with progress.showing(progress.for_outputs(outputs)), open_target(settings, SUITE) as attached:
        report = run_conformance(
            attached, max_examples=max_examples, budget_s=budget_s, seed=seed, spec=Path(spec)
        )
    print(
        f"sync-ci conformance: seed {report.extra['seed']}, {report.extra['cases']} cases "
        f"(rerun with --seed {report.extra['seed']})",
        file=sys.stderr,
    )
    return emit(report, outputs)


def add_parser(sub: Any) -> None:
    """Register `sync-ci conformance`."""
    from sync_ci.options import add_common, number

    parser = sub.add_parser(
        "conformance",
        help="check the target's Worker against docs/contract.openapi.yaml (Schemathesis)",
        description="Generate valid and invalid requests for every operation of the contract's "
        "OpenAPI document and check each answer: no server errors, documented status codes, "
        "headers and bodies, invalid data refused, credentials enforced, body limits. On live "
        "only GET operations run; on ci and sandbox every write goes under the CI prefix.",
    )
    add_common(parser)
    parser.add_argument(
        "--max-examples",
        type=number(int, minimum=1, maximum=10_000),
        default=DEFAULT_MAX_EXAMPLES,
        metavar="N",
        help="generated cases per operation and mode, 1 to 10000 (default %(default)s)",
    )
    parser.add_argument(
        "--budget",
        type=number(float, minimum=0, above=True, maximum=86_400, unit="seconds"),
        default=DEFAULT_BUDGET_S,
        metavar="SECONDS",
        help="bound on the whole run, 0 < SECONDS <= 86400; what is left unsent is a skipped row "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=number(int, minimum=0, maximum=2**64 - 1),
        default=None,
        metavar="N",
        help="reproduce an earlier run's cases (the seed it printed)",
    )
    parser.add_argument(
        "--spec",
        default=str(SPEC_PATH),
        metavar="PATH",
        help="the OpenAPI document (default: docs/contract.openapi.yaml of this checkout)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sync_ci.options import outputs

    return command(
        target=args.target,
        config=args.config,
        max_examples=args.max_examples,
        budget_s=args.budget,
        seed=args.seed,
        spec=args.spec,
        outputs=outputs(args),
    )
