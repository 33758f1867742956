"""The scenario is defined once: counts, 10 KB bodies, 100 tenants with valid tokens, unique keys."""

from __future__ import annotations

import json
import re
from collections import Counter

from sync_ci import contract
from sync_ci.gates import scenario

NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


def test_burst_plan_matches_the_seed() -> None:
    plan = scenario.plan_burst(scenario.LoadScenario(), "s3cret")
    ops = Counter(r.operation for r in plan)
    assert ops == {"install": 1000, "push": 100}
    pushes = [r for r in plan if r.operation == "push"]
    tenants = {r.headers["x-sync-tenant"] for r in pushes}
    assert len(tenants) == 100
    for request in pushes:
        tenant = request.headers["x-sync-tenant"]
        assert contract.TENANT_RE.fullmatch(tenant)
        token = request.headers["authorization"].removeprefix("Bearer ")
        assert contract.token_matches("s3cret", tenant, token)
        assert len(request.body) == 10 * 1024
        assert json.loads(request.body)["tenant"] == tenant
        assert (request.method, request.path) == ("POST", "/_push")
    assert all((r.method, r.path, r.body) == ("GET", "/install", b"") for r in plan[:1000])


def test_split_deals_every_request_once() -> None:
    plan = scenario.plan_burst(scenario.LoadScenario(), "s")
    parts = scenario.split(plan, 3)
    assert sum(len(p) for p in parts) == len(plan)
    assert sum(1 for p in parts for r in p if r.operation == "push") == 100


def test_open_model_keeps_the_install_push_ratio() -> None:
    stream = scenario.open_model_operations(scenario.LoadScenario())
    drawn = Counter(next(stream) for _ in range(1100))
    assert drawn == {"install": 1000, "push": 100}


def test_probe_keys_are_unique_and_valid() -> None:
    first = scenario.probe_nonces("fra", 200)
    second = scenario.probe_nonces("fra", 200)
    assert len(set(first) | set(second)) == 400
    assert all(NONCE_RE.fullmatch(n) for n in first)
    assert scenario.probe_path(first[0]).startswith("/_probe/kv/")


def test_answer_problem_checks_shapes_cheaply_and_a_sample_in_full() -> None:
    import hashlib
    import json

    from sync_ci.gates.scenario import answer_problem, install_request, push_request

    manifest = {"schema": 1, "generation": 3, "entries": {}, "object_base": "/o/"}
    install = install_request()
    assert answer_problem(install, 200, json.dumps(manifest).encode()) == ""
    assert "expected 200" in answer_problem(install, 203, json.dumps(manifest).encode())
    assert "error body" in answer_problem(install, 200, b'{"error": "down"}')
    assert "not a JSON object" in answer_problem(install, 200, b"<html>oops</html>")
    broken = json.dumps({**manifest, "entries": {"a": {"sha256": "x", "size": 1}}}).encode()
    assert answer_problem(install, 200, broken) == ""  # the cheap check looks at the shape only
    assert "no valid sha256" in answer_problem(install, 200, broken, full=True)

    root = "snappy-os-ci/0123abc/"
    push = push_request("gate-001", "s", 200, "n")
    digest = hashlib.sha256(push.body).hexdigest()
    good = {"key": f"{root}tenants/gate-001/state.json", "sha256": digest}
    assert answer_problem(push, 201, json.dumps(good).encode(), root=root) == ""
    elsewhere = {**good, "key": "snappy-os/tenants/gate-001/state.json"}
    assert "expected 'snappy-os-ci/" in answer_problem(
        push, 201, json.dumps(elsewhere).encode(), root=root
    )
    assert "sha256" in answer_problem(
        push, 201, json.dumps({**good, "sha256": "0" * 64}).encode(), root=root
    )
