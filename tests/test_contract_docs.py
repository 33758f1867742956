"""docs/contract.md and docs/contract.openapi.yaml agree, and the code of contract v1 obeys both.

The prose table and the OpenAPI document must name the same routes and status codes; the Python
validators and the reference Worker's real answers are judged by the OpenAPI schemas.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import yaml

from sync_ci import contract
from sync_ci.config import Settings
from sync_ci.errors import ContractError

REPO = Path(__file__).resolve().parents[1]
PROSE = REPO / "docs" / "contract.md"
SPEC = REPO / "docs" / "contract.openapi.yaml"
# Every route answers 400 to a refused x-sync-ci-root (contract.md says so once, not per row).
COMMON_CODES = {400}
TIMEOUT_S = 10.0


def load_spec() -> dict[str, Any]:
    """The OpenAPI document as plain data."""
    document: dict[str, Any] = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    return document


def prose_routes(text: str) -> dict[tuple[str, str], set[int]]:
    """The Endpoints table of contract.md: (METHOD, OpenAPI path) -> the status codes it names."""
    section = text.split("## Endpoints", 1)[1].split("\n\n", 2)[1]
    routes: dict[tuple[str, str], set[int]] = {}
    for line in section.splitlines():
        match = re.fullmatch(r"\| `(GET|POST) ([^`]+)` \| [^|]+ \| (.+) \|", line)
        if not match:
            continue
        method, path, answer = match.groups()
        # Code spans hold shapes and patterns ({8,128}), not status codes.
        answer = re.sub(r"`[^`]*`", "", answer)
        codes = {int(code) for code in re.findall(r"\b([1-5][0-9]{2})\b", answer)}
        routes[(method, re.sub(r"<([a-z0-9_]+)>", r"{\1}", path))] = codes
    return routes


def spec_routes(spec: dict[str, Any]) -> dict[tuple[str, str], set[int]]:
    """The OpenAPI document's operations: (METHOD, path) -> the status codes it declares."""
    return {
        (method.upper(), path): {int(code) for code in operation["responses"]}
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "delete", "head", "patch")
    }


def validator(spec: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of the document's component schemas ($refs resolve inside it)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


def response_schema(spec: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    """The JSON schema the document gives one answer (following a $ref'd response)."""
    answer = spec["paths"][path][method.lower()]["responses"][str(status)]
    if "$ref" in answer:
        answer = spec["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    found: dict[str, Any] = answer["content"]["application/json"]["schema"]
    return {**found, "components": spec["components"]}


def required_headers(spec: dict[str, Any], method: str, path: str, status: int) -> dict[str, str]:
    """Header name -> pattern of every header the document requires on one answer."""
    answer = spec["paths"][path][method.lower()]["responses"][str(status)]
    if "$ref" in answer:
        answer = spec["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    out: dict[str, str] = {}
    for name, header in answer.get("headers", {}).items():
        if "$ref" in header:
            header = spec["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        if header.get("required"):
            schema = header["schema"]
            out[name] = schema.get("pattern") or "^(" + "|".join(schema["enum"]) + ")$"
    return out


# --- the two documents agree -------------------------------------------------------------------


def test_every_route_and_status_code_of_the_prose_is_in_the_openapi_document() -> None:
    prose = prose_routes(PROSE.read_text(encoding="utf-8"))
    spec = spec_routes(load_spec())
    assert len(prose) == 9, prose
    assert set(prose) == set(spec)
    for route, codes in prose.items():
        assert spec[route] == codes | COMMON_CODES, route


def test_the_comparison_fails_when_the_documents_disagree() -> None:
    text = PROSE.read_text(encoding="utf-8")
    spec = spec_routes(load_spec())
    dropped = prose_routes(text.replace("| `POST /_heartbeat` |", "| `POST /_beat` |"))
    assert set(dropped) != set(spec)
    recoded = prose_routes(text.replace("400 / 401 / 403 / 413 / 429", "400 / 401 / 403 / 413"))
    assert recoded[("POST", "/_alert")] | COMMON_CODES != spec[("POST", "/_alert")]


def test_the_prose_points_to_the_openapi_document() -> None:
    assert "contract.openapi.yaml" in PROSE.read_text(encoding="utf-8")


def test_the_document_is_valid_openapi_that_schemathesis_loads() -> None:
    from sync_ci.conformance_cases import load_contract, operations

    schema = load_contract(SPEC)
    labels = {operation.label for operation in operations(schema, read_only=False)}
    assert labels == {f"{method} {path}" for method, path in spec_routes(load_spec())}
    read_only = {operation.label for operation in operations(schema, read_only=True)}
    assert read_only and all(label.startswith("GET ") for label in read_only)


def test_limits_and_patterns_are_the_codes_own() -> None:
    spec = load_spec()
    paths = spec["paths"]
    assert paths["/_push"]["post"]["x-body-limit-bytes"] == contract.PUSH_LIMIT_BYTES
    assert paths["/_alert"]["post"]["x-body-limit-bytes"] == contract.ALERT_LIMIT_BYTES
    headers = spec["components"]["headers"]
    assert headers["CfRay"]["schema"]["pattern"] == contract.CF_RAY_RE.pattern.replace(
        "([A-Z]{3})", "[A-Z]{3}"
    )
    assert spec["components"]["schemas"]["Sha256"]["pattern"] == contract.SHA256_RE.pattern
    assert spec["components"]["parameters"]["RootHeader"]["name"] == contract.ROOT_HEADER
    assert set(spec["components"]["schemas"]["Alert"]["required"]) == set(contract.ALERT_FIELDS)


# --- the Python validators obey the document ------------------------------------------------------


ALERT = {
    "check": "doctor-failed",
    "message": "2 lints failed",
    "host": "laptop",
    "version": "0.1.0",
    "ts": "2025-01-01T00:00:00Z",
    "idempotency_key": "acme.doctor-failed.20250101T000000Z.ab12",
}


@pytest.mark.parametrize(
    ("field", "value"),
    [("message", "a\x1b[2Jb"), ("host", "line\nbreak"), ("check", "x\u202ey"), ("ts", "")],
)
def test_alerts_the_document_refuses_validate_alert_refuses(field: str, value: str) -> None:
    alert = {**ALERT, field: value}
    assert not validator(load_spec(), "Alert").is_valid(alert)
    with pytest.raises(ContractError):
        contract.validate_alert(alert)


def test_a_good_alert_and_a_built_catalog_are_valid_for_both() -> None:
    spec = load_spec()
    validator(spec, "Alert").validate(ALERT)
    assert contract.validate_alert(ALERT)
    catalog, _ = contract.build_catalog({"a.txt": b"a", "b/c.bin": b"\x00" * 9}, generation=4)
    validator(spec, "Catalog").validate(catalog.to_json())
    assert contract.parse_catalog(catalog.to_json()) == catalog
    broken = {**catalog.to_json(), "generation": -1}
    assert not validator(spec, "Catalog").is_valid(broken)
    with pytest.raises(ContractError):
        contract.parse_catalog(broken)


# --- the reference Worker's real answers obey the document -----------------------------------------


def check_answer(spec: dict[str, Any], method: str, path: str, answer: requests.Response) -> None:
    """Assert one real answer has a documented status, its required headers and its body schema."""
    declared = spec_routes(spec)[(method, path)]
    assert answer.status_code in declared, (method, path, answer.status_code, answer.text[:200])
    for name, pattern in required_headers(spec, method, path, answer.status_code).items():
        value = answer.headers.get(name)
        assert value is not None, f"{method} {path} {answer.status_code} lacks {name}"
        assert re.search(pattern, value), (name, value, pattern)
    if answer.headers.get("content-type", "").startswith("application/json"):
        schema = response_schema(spec, method, path, answer.status_code)
        jsonschema.Draft202012Validator(schema).validate(answer.json())


def test_the_reference_workers_answers_validate_against_the_document(
    sandbox_settings: Settings,
) -> None:
    spec = load_spec()
    base = sandbox_settings.worker_url
    ci_root = {contract.ROOT_HEADER: sandbox_settings.ci_prefix}
    tenant = {
        "x-sync-tenant": sandbox_settings.tenant_id,
        "authorization": f"Bearer {sandbox_settings.secrets.tenant_token}",
        **ci_root,
    }
    admin = {"authorization": f"Bearer {sandbox_settings.secrets.admin_token}"}
    catalog = requests.get(f"{base}/catalog", timeout=TIMEOUT_S)
    name = next(iter(catalog.json()["entries"].values()))["sha256"]
    key = f"conformance.docs.{sandbox_settings.sha[:12]}"
    alert = {**ALERT, "idempotency_key": key}
    calls: list[tuple[str, str, str, dict[str, str], bytes | None]] = [
        ("GET", "/_health", "/_health", {}, None),
        ("GET", "/_health", "/_health", {contract.ROOT_HEADER: "elsewhere/"}, None),
        ("GET", "/catalog", "/catalog", {}, None),
        ("GET", "/catalog", "/catalog", ci_root, None),
        ("GET", "/install", "/install", {}, None),
        ("GET", "/o/{sha256}", f"/o/{name}", {}, None),
        ("GET", "/o/{sha256}", f"/o/{'0' * 64}", {}, None),
        ("GET", "/o/{sha256}", "/o/NOT-HEX", {}, None),
        ("GET", "/_probe/kv/{nonce}", f"/_probe/kv/docs{key[-12:]}", {}, None),
        ("GET", "/_probe/kv/{nonce}", "/_probe/kv/short", {}, None),
        ("POST", "/_push", "/_push", tenant, b'{"state": 1}'),
        ("POST", "/_push", "/_push", ci_root, b"{}"),
        ("POST", "/_push", "/_push", tenant, b"[1]"),
        ("POST", "/_push", "/_push", tenant, b'{"tenant": "someone-else"}'),
        ("POST", "/_push", "/_push", tenant, b"{" + b" " * contract.PUSH_LIMIT_BYTES + b"}"),
        ("POST", "/_alert", "/_alert", tenant, json.dumps(alert).encode()),
        ("POST", "/_alert", "/_alert", tenant, json.dumps(alert).encode()),
        ("POST", "/_alert", "/_alert", tenant, json.dumps({**alert, "host": "a\x1bb"}).encode()),
        ("POST", "/_heartbeat", "/_heartbeat", tenant, b""),
        ("POST", "/_heartbeat", "/_heartbeat", tenant, b"x" * 1025),
        ("GET", "/_status", "/_status", {**admin, **ci_root}, None),
        ("GET", "/_status", "/_status", {}, None),
    ]
    seen: set[tuple[str, str, int]] = set()
    with requests.Session() as session:
        for method, route, path, headers, body in calls:
            answer = session.request(
                method, f"{base}{path}", headers=headers, data=body, timeout=TIMEOUT_S
            )
            check_answer(spec, method, route, answer)
            seen.add((method, route, answer.status_code))
    # The calls above reach every route and the statuses they were written to reach.
    assert {(m, r) for m, r, _ in seen} == set(spec_routes(spec))
    for expected in [
        ("GET", "/_health", 400),
        ("GET", "/o/{sha256}", 404),
        ("POST", "/_push", 401),
        ("POST", "/_push", 403),
        ("POST", "/_push", 413),
        ("POST", "/_alert", 202),
        ("POST", "/_alert", 200),
        ("POST", "/_heartbeat", 204),
        ("GET", "/_status", 401),
    ]:
        assert expected in seen, expected
