"""What one answer is judged by: the Schemathesis checks of SCHEMA_CHECKS, then the probes sent
after it for what one answer cannot show (PROBE_CHECKS), and the mutants each of them catches.

Schemathesis is imported only when a check runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from sync_ci import contract
from sync_ci.conformance_run import Credentials, Finding, Run, record, send

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


# --- pure functions ------------------------------------------------------------------------------


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


def line_fields(definition: Mapping[str, Any], raw_spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The request-body fields the document types as `Line` (one line, no control characters)."""
    body = definition.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = body.get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = raw_spec.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[1], {})
    properties = schema.get("properties", {})
    return tuple(sorted(name for name, prop in properties.items() if prop.get("$ref") == LINE_REF))


# --- edges ----------------------------------------------------------------------------------------


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
