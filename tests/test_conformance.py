"""`sync-ci conformance`: the conforming reference Worker passes, each schema-visible mutant fails.

Requests go to real Workers on 127.0.0.1 (the session sandbox, or a sandbox of the test's own
whose Worker commits one mutant); small --max-examples keep the runs short.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sync_ci import contract, guards
from sync_ci.config import Settings, load_settings
from sync_ci.conformance import (
    CATCHES_MUTANTS,
    SPEC_PATH,
    Credentials,
    line_fields,
    load_contract,
    open_run,
    request_headers,
    run_conformance,
    secured_by,
    send,
    wrong_credentials,
)
from sync_ci.errors import ExitCode, GuardViolation, SyncCIError, UnreachableError
from sync_ci.report import Report, exit_code
from sync_ci.sandbox.attach import attach
from sync_ci.sandbox.launcher import Sandbox, start_sandbox, write_ready_file
from sync_ci.sandbox.worker_app import MUTANTS
from sync_ci.sandbox.workerd import check_runtime
from sync_ci.store import Store, StoreEndpoint, open_store
from tests.conftest import STORE_KIND, sandbox_env_for
from tests.test_mutants import mutant_sandbox

REPO = Path(__file__).resolve().parents[1]
CREDS = Credentials(tenant_id="acme", tenant_token="t" * 64, admin_token="a" * 32)
# Which check of which operation catches each mutant ("@GRU": the one-region mutants' region).
CATCHING_CHECK = {
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


def failing_ids(report: Report) -> list[str]:
    """Ids of the rows that failed or errored."""
    return [r.id for r in report.failing()]


# --- pure ------------------------------------------------------------------------------------------


def test_writes_carry_the_ci_root_and_reads_the_read_root_whatever_was_generated() -> None:
    generated = {contract.ROOT_HEADER: "snappy-os-ci/0000000/", "x-other": "1"}
    write = request_headers(
        "POST", generated, secured="tenant", credentials=CREDS, read_root="", write_root="ci/ab/"
    )
    assert write == {
        "x-other": "1",
        contract.ROOT_HEADER: "ci/ab/",
        "x-sync-tenant": "acme",
        "authorization": f"Bearer {'t' * 64}",
    }
    read = request_headers(
        "GET", generated, secured="admin", credentials=CREDS, read_root="", write_root="ci/ab/"
    )
    assert contract.ROOT_HEADER not in read and read["authorization"] == f"Bearer {'a' * 32}"
    # A read generated with an invalid root header keeps it; a write never does.
    bad = {contract.ROOT_HEADER: "../elsewhere"}
    kept = request_headers(
        "GET",
        bad,
        secured="",
        credentials=CREDS,
        read_root="",
        write_root="ci/ab/",
        keep_invalid_root=True,
    )
    assert kept[contract.ROOT_HEADER] == "../elsewhere"
    write = request_headers(
        "POST",
        bad,
        secured="",
        credentials=CREDS,
        read_root="",
        write_root="ci/ab/",
        keep_invalid_root=True,
    )
    assert write[contract.ROOT_HEADER] == "ci/ab/"
    # An empty value never reaches the Worker as generated: the run's own root goes instead.
    empty = request_headers(
        "GET",
        {contract.ROOT_HEADER: ""},
        secured="",
        credentials=CREDS,
        read_root="ci/ab/",
        write_root="ci/ab/",
        keep_invalid_root=True,
    )
    assert empty[contract.ROOT_HEADER] == "ci/ab/"
    # A negative case may bring no header mapping at all.
    assert request_headers(
        "GET", None, secured="", credentials=CREDS, read_root="r/", write_root="w/"
    ) == {contract.ROOT_HEADER: "r/"}


def test_wrong_credentials_keep_a_valid_tenant_with_a_wrong_token() -> None:
    probes = dict(wrong_credentials("tenant", CREDS))
    assert probes["no credentials"] == {}
    wrong = probes["a wrong token for a valid tenant"]
    assert wrong["x-sync-tenant"] == "acme" and "t" * 64 not in wrong["authorization"]
    assert "a" * 32 not in str(wrong_credentials("admin", CREDS))


def test_the_document_says_who_may_call_what_and_which_fields_are_lines() -> None:
    schema = load_contract(SPEC_PATH)
    by_label = {op.label: op for r in schema.get_all_operations() if (op := r.ok())}
    assert secured_by(by_label["POST /_push"].definition.raw) == "tenant"
    assert secured_by(by_label["GET /_status"].definition.raw) == "admin"
    assert secured_by(by_label["GET /install"].definition.raw) == ""
    alert = by_label["POST /_alert"].definition.raw
    assert line_fields(alert, schema.raw_schema) == ("check", "host", "message", "ts", "version")


def test_the_catalogue_names_only_known_mutants() -> None:
    assert set(CATCHES_MUTANTS) <= set(MUTANTS)
    assert set(CATCHING_CHECK) == set(CATCHES_MUTANTS)


# --- against the conforming reference Worker --------------------------------------------------------


def bucket_keys(sandbox: Sandbox) -> set[str]:
    """Every key in the sandbox bucket (read through a read-only client)."""
    endpoint = StoreEndpoint(
        bucket=sandbox.info.store.bucket,
        endpoint_url=sandbox.info.store.endpoint_url,
        region_name="us-east-1",
        access_key_id=sandbox.info.store.access_key_id,
        secret_access_key=sandbox.info.store.secret_access_key,
    )
    store: Store = open_store(endpoint, guards.read_only_policy())
    return {item.key for item in store.list("")}


@pytest.mark.slow
def test_the_reference_worker_conforms_and_writes_only_under_the_ci_prefix(
    sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    before = bucket_keys(sandbox)
    report = run_conformance(sandbox_settings, max_examples=4, seed=11)
    assert report.ok, [(r.id, r.detail) for r in report.failing()]
    assert report.extra["seed"] == 11 and report.extra["cases"] > 50
    ids = {r.id for r in report.results}
    for label in ("POST /_push", "POST /_alert", "POST /_heartbeat", "GET /_status"):
        assert f"conformance:{label}" in ids
    pushes = next(r for r in report.results if r.id == "conformance:POST /_push")
    assert pushes.observed["statuses"].get("201"), pushes.detail  # real credentials were used
    written = bucket_keys(sandbox) - before
    assert written, "the pushes and alerts wrote their copies"
    assert all(key.startswith(sandbox_settings.ci_prefix) for key in written), written


@pytest.mark.slow
def test_on_live_only_get_operations_are_sent(sandbox_settings: Settings) -> None:
    live = sandbox_settings.with_values(target="live")
    report = run_conformance(live, max_examples=2, seed=5)
    assert report.ok and report.mode == "read-only"
    labels = [r.id for r in report.results]
    assert labels and not any("POST" in label for label in labels), labels


def test_on_live_the_guarded_session_still_refuses_a_write(sandbox_settings: Settings) -> None:
    live = sandbox_settings.with_values(target="live")
    schema = load_contract(SPEC_PATH)
    push = next(op for r in schema.get_all_operations() if (op := r.ok()).label == "POST /_push")
    with open_run(live, max_examples=1, budget_s=30.0, seed=1) as (run, _client):
        assert run.write_root == ""
        case = push.Case(body={"state": 1}, media_type="application/json")
        with pytest.raises(GuardViolation, match=r"read-only|refused"):
            send(run, case, run.base_url)


def test_a_budget_spent_before_any_case_could_not_measure(sandbox_settings: Settings) -> None:
    report = run_conformance(sandbox_settings, max_examples=2, budget_s=1e-9, seed=1)
    assert exit_code(report) == ExitCode.UNMEASURED
    assert {r.status for r in report.results} == {"skip"}
    assert all("budget spent" in r.detail for r in report.results)


@pytest.mark.slow
def test_on_ci_every_write_goes_under_the_ci_prefix(
    sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    ci = sandbox_settings.with_values(target="ci", preview_url="")
    before = bucket_keys(sandbox)
    # A reference Worker of its own over the CI prefix, as the PR workflow gets without a preview.
    with attach(ci, ci_worker=True) as attached:
        report = run_conformance(attached, max_examples=3, seed=9)
    assert report.ok, [(r.id, r.detail) for r in report.failing()]
    written = bucket_keys(sandbox) - before
    assert written and all(key.startswith(ci.ci_prefix) for key in written), written


@pytest.mark.slow
def test_the_workerd_worker_conforms(tmp_path: Path) -> None:
    try:
        check_runtime("workerd")
    except SyncCIError as exc:
        pytest.skip(f"workerd is not installed here: {exc}")
    with start_sandbox(store=STORE_KIND, runtime="workerd", workdir=tmp_path / "sb") as running:
        ready = write_ready_file(running.info, tmp_path / "ready.json")
        with attach(load_settings(env=sandbox_env_for(ready, tmp_path / "home"))) as settings:
            report = run_conformance(settings, max_examples=3, seed=7)
    assert report.ok, [(r.id, r.detail) for r in report.failing()]


def test_an_unreachable_worker_could_not_be_measured(sandbox_settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gone = sandbox_settings.with_values(worker_url=f"http://127.0.0.1:{port}", regions=())
    with pytest.raises(UnreachableError):
        run_conformance(gone, max_examples=1, seed=1)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `sync-ci conformance` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "sync_ci", "conformance", *args],
        capture_output=True,
        text=True,
        env={**env, "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
        cwd=env["HOME"],
        timeout=600,
    )


@pytest.mark.slow
def test_the_command_prints_its_seed_and_writes_the_result_document(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "conformance.json"
    done = run_cli(sandbox_env, "--max-examples", "2", "--seed", "42", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "seed 42" in done.stderr and "Traceback" not in done.stderr
    document = json.loads(out.read_text())
    assert document["suite"] == "conformance" and document["ok"] is True
    assert document["extra"]["seed"] == 42
    assert sandbox_env_secret_free(done.stdout + done.stderr + out.read_text(), sandbox_env)


def sandbox_env_secret_free(text: str, env: dict[str, str]) -> bool:
    """No secret of the sandbox appears in `text`."""
    ready = json.loads(Path(env["SYNC_CI_SANDBOX"]).read_text())
    secrets = [ready["tenant_secret"], ready["admin_token"], ready["store"]["secret_access_key"]]
    secrets.append(contract.tenant_token(ready["tenant_secret"], ready["tenant_id"]))
    return not any(secret in text for secret in secrets)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-examples", "0"], "--max-examples 0 must be at least 1"),
        (["--budget", "-1"], "--budget -1 must be a positive number"),
        (["--spec", "/nonexistent/contract.yaml"], "no OpenAPI document at /nonexistent"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    sandbox_env: dict[str, str], args: list[str], needle: str
) -> None:
    done = run_cli(sandbox_env, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sync-ci: error: ") and needle in lines[0]


# --- each schema-visible mutant is caught by conformance alone --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", CATCHES_MUTANTS)
def test_each_schema_visible_mutant_is_caught(name: str, tmp_path: Path) -> None:
    operation, check = CATCHING_CHECK[name]
    with mutant_sandbox(tmp_path, name) as (settings, _env):
        report = run_conformance(settings, max_examples=3, seed=7)
    assert not report.ok
    finding = f"conformance:{operation}:{check}"
    assert finding in failing_ids(report), failing_ids(report)
    row = next(r for r in report.results if r.id == finding)
    assert row.observed["request"].startswith("curl ") and "reproduce: curl" in row.detail
    shown = json.dumps(report.to_json())
    for secret in (settings.secrets.tenant_token, settings.secrets.admin_token):
        assert secret not in shown


@pytest.mark.slow
def test_a_finding_reproduces_with_its_request(tmp_path: Path) -> None:
    with mutant_sandbox(tmp_path, "status-open") as (settings, _env):
        report = run_conformance(settings, max_examples=2, seed=3)
        row = next(r for r in report.results if r.id == "conformance:GET /_status:ignored_auth")
        command = shlex.split(str(row.observed["request"]))
        reproduced = subprocess.run(
            [*command, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    # The mutant answers the credential-free request; a conforming Worker refuses it.
    assert reproduced.stdout == "200", reproduced
