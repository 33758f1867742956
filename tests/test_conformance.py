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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sync_ci import contract, guards
from sync_ci.attachment import SUITE, open_target
from sync_ci.config import Settings, load_settings
from sync_ci.conformance import SPEC_PATH, run_conformance, run_smoke_phase
from sync_ci.conformance_cases import exercise, load_contract
from sync_ci.conformance_phase import smoke_seed, summarize_phase
from sync_ci.conformance_probes import (
    CATCHES_MUTANTS,
    PROBE_CHECKS,
    SCHEMA_CHECKS,
    line_fields,
    secured_by,
    wrong_credentials,
)
from sync_ci.conformance_run import (
    Credentials,
    Run,
    open_run,
    request_headers,
    send,
    summarize_run,
)
from sync_ci.errors import ExitCode, GuardViolation, SyncCIError, UnreachableError
from sync_ci.report import Report, Result, exit_code, make_report
from sync_ci.sandbox.launcher import Sandbox, start_sandbox, write_ready_file
from sync_ci.sandbox.mutants import MUTANTS
from sync_ci.sandbox.workerd import check_runtime
from sync_ci.smoke import READ_ONLY_PHASES, WRITE_PHASES, run_one, run_phases
from sync_ci.smoke_run import open_run as open_smoke
from sync_ci.store import Store, StoreEndpoint, open_store
from tests.conftest import STORE_KIND, sandbox_env_for
from tests.test_mutants import documented_conformance, mutant_sandbox

REPO = Path(__file__).resolve().parents[1]
CREDS = Credentials(tenant_id="acme", tenant_token="t" * 64, admin_token="a" * 32)


def failing_ids(report: Report) -> list[str]:
    """Ids of the rows that failed or errored."""
    return [r.id for r in report.failing()]


# --- pure ------------------------------------------------------------------------------------------


def headers_of(
    method: str,
    generated: object,
    *,
    secured: str = "",
    read_root: str = "",
    write_root: str = "ci/ab/",
    keep_invalid_root: bool = False,
) -> dict[str, Any]:
    """The headers a case generated with `generated` is sent with, under CREDS."""
    return request_headers(
        method,
        generated,
        secured=secured,
        credentials=CREDS,
        read_root=read_root,
        write_root=write_root,
        keep_invalid_root=keep_invalid_root,
    )


def test_writes_carry_the_ci_root_and_reads_the_read_root_whatever_was_generated() -> None:
    generated = {contract.ROOT_HEADER: "snappy-os-ci/0000000/", "x-other": "1"}
    assert headers_of("POST", generated, secured="tenant") == {
        "x-other": "1",
        contract.ROOT_HEADER: "ci/ab/",
        "x-sync-tenant": "acme",
        "authorization": f"Bearer {'t' * 64}",
    }
    read = headers_of("GET", generated, secured="admin")
    assert contract.ROOT_HEADER not in read and read["authorization"] == f"Bearer {'a' * 32}"
    # A read generated with an invalid root header keeps it; a write never does.
    bad = {contract.ROOT_HEADER: "../elsewhere"}
    kept = headers_of("GET", bad, keep_invalid_root=True)
    assert kept[contract.ROOT_HEADER] == "../elsewhere"
    assert headers_of("POST", bad, keep_invalid_root=True)[contract.ROOT_HEADER] == "ci/ab/"
    # An empty value never reaches the Worker as generated: the run's own root goes instead.
    empty = headers_of(
        "GET", {contract.ROOT_HEADER: ""}, read_root="ci/ab/", keep_invalid_root=True
    )
    assert empty[contract.ROOT_HEADER] == "ci/ab/"
    # A negative case may bring no header mapping at all.
    assert headers_of("GET", None, read_root="r/", write_root="w/") == {contract.ROOT_HEADER: "r/"}


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


def test_the_catalogue_names_only_known_mutants_and_the_doc_column_is_catches_mutants() -> None:
    assert set(CATCHES_MUTANTS) <= set(MUTANTS)
    # docs/mutants.md's "conformance alone" column says exactly what the mutant tests below prove.
    assert documented_conformance() == dict(CATCHES_MUTANTS)
    labels = {op.label for r in load_contract(SPEC_PATH).get_all_operations() if (op := r.ok())}
    for operation, check in CATCHES_MUTANTS.values():
        assert operation.split(" @")[0] in labels and check in (*SCHEMA_CHECKS, *PROBE_CHECKS)


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


@contextmanager
def writes_only_under(sandbox: Sandbox, prefix: str) -> Iterator[set[str]]:
    """Yield the set of keys written meanwhile (filled on exit): some, and each under `prefix`."""
    before = bucket_keys(sandbox)
    written: set[str] = set()
    yield written
    written.update(bucket_keys(sandbox) - before)
    assert written and all(key.startswith(prefix) for key in written), written


@pytest.mark.slow
def test_the_reference_worker_conforms_and_writes_only_under_the_ci_prefix(
    sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    with writes_only_under(sandbox, sandbox_settings.ci_prefix):  # the pushes' and alerts' copies
        report = run_conformance(sandbox_settings, max_examples=4, seed=11)
    assert report.ok, [(r.id, r.detail) for r in report.failing()]
    assert report.extra["seed"] == 11 and report.extra["cases"] > 50
    ids = {r.id for r in report.results}
    for label in ("POST /_push", "POST /_alert", "POST /_heartbeat", "GET /_status"):
        assert f"conformance:{label}" in ids
    pushes = next(r for r in report.results if r.id == "conformance:POST /_push")
    assert pushes.observed["statuses"].get("201"), pushes.detail  # real credentials were used


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
    # A reference Worker of its own over the CI prefix, as the PR workflow gets without a preview.
    with writes_only_under(sandbox, ci.ci_prefix), open_target(ci, SUITE) as attached:
        report = run_conformance(attached, max_examples=3, seed=9)
    assert report.ok, [(r.id, r.detail) for r in report.failing()]


@pytest.mark.slow
def test_the_workerd_worker_conforms(tmp_path: Path) -> None:
    try:
        check_runtime("workerd")
    except SyncCIError as exc:
        pytest.skip(f"workerd is not installed here: {exc}")
    with start_sandbox(store=STORE_KIND, runtime="workerd", workdir=tmp_path / "sb") as running:
        ready = write_ready_file(running.info, tmp_path / "ready.json")
        env = sandbox_env_for(ready, tmp_path / "home")
        with open_target(load_settings(env=env), SUITE) as settings:
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
    # Hypothesis keeps its database and constants cache under ./.hypothesis unless told not to.
    assert not (Path(sandbox_env["HOME"]) / ".hypothesis").exists()
    # Its derived Unicode tables are kept for the next run (seconds of CPU each time otherwise),
    # in the user's cache dir; no example database is kept there, so no run replays another's.
    base = Path(sandbox_env.get("XDG_CACHE_HOME") or Path(sandbox_env["HOME"]) / ".cache")
    cache = base / "sync-ci" / "hypothesis"
    assert list(cache.glob("unicode_data/*/codec-*.json.gz")), sorted(cache.rglob("*"))
    assert not (cache / "examples").exists()


def sandbox_env_secret_free(text: str, env: dict[str, str]) -> bool:
    """No secret of the sandbox appears in `text`."""
    ready = json.loads(Path(env["SYNC_CI_SANDBOX"]).read_text())
    secrets = [ready["tenant_secret"], ready["admin_token"], ready["store"]["secret_access_key"]]
    secrets.append(contract.tenant_token(ready["tenant_secret"], ready["tenant_id"]))
    return not any(secret in text for secret in secrets)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-examples", "0"], "--max-examples: 0 is out of range"),
        (["--budget", "-1"], "--budget: -1 is out of range"),
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


TYPED_LIMITS: dict[str, tuple[dict[str, Any], str]] = {
    "--max-examples": ({"max_examples": 0}, "0"),
    "--budget": ({"budget_s": 0.0}, "0"),
    "--seed": ({"seed": 2**64}, str(2**64)),
}


@pytest.mark.parametrize("flag", TYPED_LIMITS)
def test_a_typed_call_out_of_range_is_argparses_line_before_anything_attaches(
    flag: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An invoke task's value is checked by the option's own range, before settings or a target."""
    from sync_ci import cli
    from sync_ci.conformance import command
    from sync_ci.options import report_outputs

    values, text = TYPED_LIMITS[flag]
    assert cli.main(["conformance", flag, text]) == 2
    expected = capsys.readouterr().err.strip()
    # Settings that cannot load: the range is refused first, so nothing was resolved or started.
    missing = str(tmp_path / "missing.toml")
    code = cli.call(
        lambda: command(target="ci", config=missing, outputs=report_outputs(), **values)
    )
    got = capsys.readouterr().err.strip()
    assert code == 2 and got.startswith("sync-ci: error: argument ")
    assert got == expected  # argparse's very line, "(see `sync-ci conformance --help`)" and all


# --- each schema-visible mutant is caught by conformance alone --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CATCHES_MUTANTS))
def test_each_schema_visible_mutant_is_caught(name: str, tmp_path: Path) -> None:
    operation, check = CATCHES_MUTANTS[name]
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


# --- the write smoke's conformance phase ------------------------------------------------------------


def test_the_phase_is_the_write_smokes_last_and_not_in_the_read_only_smoke() -> None:
    assert WRITE_PHASES[-1] == "conformance" and WRITE_PHASES.count("conformance") == 1
    assert "conformance" not in READ_ONLY_PHASES


def test_the_smokes_seed_is_derived_from_the_commit() -> None:
    assert smoke_seed("a" * 40) == smoke_seed("a" * 40)
    assert smoke_seed("a" * 40) != smoke_seed("b" * 40)
    assert 0 <= smoke_seed("0123abc") < 2**32


def phase_report(findings: int, *, notes: tuple[str, ...] = (), cases: int = 40) -> Report:
    """A conformance report of the shape run_conformance builds, with `findings` findings."""
    rows = [Result(id="conformance:GET /_status", title="generated requests", status="pass")]
    for n in range(findings):
        request = (
            f"curl -X GET -H 'authorization: Bearer {'0' * 8}' http://127.0.0.1:1/_status?n={n}"
        )
        rows.append(
            Result(
                id=f"conformance:GET /_status:check{n}",
                title=f"check{n} on GET /_status",
                status="fail",
                detail=f"answered 200, not 401 (status 200); reproduce: {request}",
                observed={"check": f"check{n}", "operation": "GET /_status", "request": request},
            )
        )
    return make_report(
        suite="conformance",
        target="sandbox",
        mode="write",
        sha="abc1234",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration_s=1.0,
        results=rows,
        unmeasured=cases == 0,
        extra={"seed": 7, "cases": cases, "max_examples": 3, "notes": list(notes)},
    )


def test_the_phase_verdict_names_each_finding_with_its_request_and_the_seed() -> None:
    rerun = "rerun: sync-ci conformance --target sandbox --seed 7 --max-examples 3"
    failed = summarize_phase(phase_report(5))
    assert failed.status == "fail" and failed.observed["seed"] == 7
    assert failed.detail.startswith("seed 7, 40 generated cases, 5 finding(s): check0 on GET")
    assert "reproduce: curl -X GET" in failed.detail and "?n=2" in failed.detail
    assert "?n=3" not in failed.detail and "; 2 more; " in failed.detail
    assert failed.detail.endswith(rerun)
    cut = (
        "GET /a: budget spent before its negative cases ran",
        "links: budget spent before its negative cases ran",
    )
    passed = summarize_phase(phase_report(0, notes=cut))
    assert passed.status == "pass" and passed.detail.startswith("seed 7: 40 generated cases")
    assert "not sent: budget spent before its negative cases ran (GET /a, links)" in passed.detail
    unmeasured = summarize_phase(phase_report(0, cases=0))
    assert unmeasured.status == "skip" and "before any case was sent" in unmeasured.detail


class FlakyOperation:
    """A real operation whose strategy fails its second draw only: Hypothesis's replay of that
    case then passes, so Hypothesis itself raises FlakyFailure (generation that depends on
    outside state, as a link target drawn from an earlier answer does)."""

    def __init__(self, real: Any, error: Exception | None = None) -> None:
        self.real = real
        self.draws = 0
        self.error = error or RuntimeError("drawn from state that has moved on")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def as_strategy(self, **kwargs: Any) -> Any:
        def once(case: Any) -> Any:
            self.draws += 1
            if self.draws == 2:
                raise self.error
            return case

        return self.real.as_strategy(**kwargs).map(once)


def test_a_case_hypothesis_cannot_replay_is_a_note_and_the_run_goes_on(
    sandbox_settings: Settings,
) -> None:
    from schemathesis import GenerationMode

    def valid_cases(run: Run, operation: Any) -> None:
        exercise(
            run,
            operation,
            mode=GenerationMode.POSITIVE,
            base_url=run.base_url,
            where="",
            max_examples=3,
        )

    schema = load_contract(SPEC_PATH)
    by_label = {op.label: op for r in schema.get_all_operations() if (op := r.ok())}
    flaky = FlakyOperation(by_label["GET /_health"])
    with open_run(sandbox_settings, max_examples=3, budget_s=600.0, seed=5) as (run, _client):
        for operation in (flaky, by_label["GET /install"]):
            valid_cases(run, operation)
    assert flaky.draws >= 3, "the failing draw was replayed"
    health, install = run.tallies[("", "GET /_health")], run.tallies[("", "GET /install")]
    assert health.cases >= 1 and "Hypothesis stopped early (FlakyFailure" in health.skipped
    assert install.cases >= 1 and not install.skipped and not run.findings
    rows = {r.id: r for r in summarize_run(run)}
    assert rows["conformance:GET /_health"].status == "pass"
    assert "Hypothesis stopped early" in rows["conformance:GET /_health"].detail
    # What the same Flaky wraps of our own (a guard's refusal) is never turned into a note.
    refused = FlakyOperation(
        by_label["GET /install"], GuardViolation("refused: not under the root")
    )
    with (
        open_run(sandbox_settings, max_examples=3, budget_s=600.0, seed=5) as (run, _client),
        pytest.raises(GuardViolation, match="not under the root"),
    ):
        valid_cases(run, refused)


def test_a_spent_budget_still_sends_the_phases_first_case(sandbox_settings: Settings) -> None:
    # A machine so loaded that importing and loading the document spent the budget: the phase
    # still measures one case (so a conforming Worker passes), then stops.
    verdict = run_smoke_phase(sandbox_settings, budget_s=1e-9)
    assert verdict.status == "pass", verdict.detail
    assert verdict.observed["cases"] == 1 and "not sent: budget spent" in verdict.detail
    full = run_conformance(sandbox_settings, max_examples=1, budget_s=1e-9, seed=1)
    assert full.extra["cases"] == 0, "the full run keeps no floor"


def test_without_schemathesis_the_phase_is_a_skipped_row(
    sandbox_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "schemathesis", None)  # find_spec: not installed
    with open_smoke(sandbox_settings, mode="write") as smoke_run:
        row, cells = run_one(smoke_run, "conformance")
    assert (row.id, row.status, cells) == ("phase:conformance", "skip", [])
    assert "schemathesis is not installed" in row.detail


@pytest.mark.slow
def test_the_smokes_phase_fails_on_a_mutant_with_the_request_and_keeps_the_first_failing_row(
    tmp_path: Path,
) -> None:
    with (
        mutant_sandbox(tmp_path, "status-open") as (settings, _env),
        open_smoke(settings, mode="write") as smoke_run,
    ):
        # A budget no loaded machine reaches: the test judges findings, not speed.
        smoke_run.conformance_budget_s = 600.0
        rows, _cells = run_phases(smoke_run)
    failing = [r for r in rows if r.status in ("fail", "error")]
    assert failing[0].id == MUTANTS["status-open"].row, failing
    phase = next(r for r in rows if r.id == "phase:conformance")
    assert phase.status == "fail", phase.detail
    assert phase.detail.startswith(f"seed {smoke_seed(settings.sha)}, ")
    assert "ignored_auth on GET /_status: answered 200" in phase.detail
    assert "reproduce: curl " in phase.detail and "rerun: sync-ci conformance" in phase.detail
    assert settings.secrets.admin_token not in phase.detail


@pytest.mark.slow
def test_the_smokes_phase_on_ci_passes_and_writes_only_under_the_ci_prefix(
    sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    ci = sandbox_settings.with_values(target="ci", preview_url="")
    with (
        writes_only_under(sandbox, ci.ci_prefix) as written,
        open_target(ci, SUITE) as attached,
        open_smoke(attached, mode="write") as smoke_run,
    ):
        smoke_run.conformance_budget_s = 600.0
        seeded = [run_one(smoke_run, name)[0] for name in ("preflight", "seed")]
        row, _cells = run_one(smoke_run, "conformance")
    assert [r.status for r in seeded] == ["pass", "pass"], seeded
    assert row.status == "pass", row.detail
    assert row.observed["cases"] > 0 and row.observed["seed"] == smoke_seed(ci.sha)
    tenants = [k for k in written if "/tenants/" in k or "/_alerts/" in k]
    assert tenants, "the phase's generated pushes and alerts landed, under the CI prefix"


# --- the JavaScript Worker is held to the same conformance catalogue --------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CATCHES_MUTANTS))
def test_each_schema_visible_mutant_is_caught_on_workerd_too(name: str, tmp_path: Path) -> None:
    try:
        check_runtime("workerd")
    except SyncCIError as exc:
        pytest.skip(f"workerd is not installed here: {exc}")
    operation, check = CATCHES_MUTANTS[name]
    with start_sandbox(
        store=STORE_KIND, mutant=name, runtime="workerd", workdir=tmp_path / "sb"
    ) as running:
        ready = write_ready_file(running.info, tmp_path / "ready.json")
        env = sandbox_env_for(ready, tmp_path / "home")
        with open_target(load_settings(env=env), SUITE) as settings:
            report = run_conformance(settings, max_examples=3, seed=7)
    assert f"conformance:{operation}:{check}" in failing_ids(report), failing_ids(report)
