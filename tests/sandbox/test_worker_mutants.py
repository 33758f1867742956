"""The reference Worker's mutants and freshness knobs: refused where they must be, visible when on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from sync_ci import contract
from sync_ci.errors import UsageError
from sync_ci.sandbox.launcher import validate_mutant
from sync_ci.sandbox.mutants import MUTANTS
from sync_ci.sandbox.worker_config import CATALOG_TTL_S
from sync_ci.sandbox.worker_main import parse_options
from sync_ci.sandbox.worker_process import worker_arguments
from sync_ci.store import Store
from tests.sandbox.conftest import RefWorker
from tests.sandbox.test_worker_http import TIMEOUT, alert_body, get, post

REPO = Path(__file__).resolve().parents[2]


def test_an_unknown_mutant_is_a_usage_error(tmp_path: Path) -> None:
    ready = str(tmp_path / "r.json")
    with pytest.raises(UsageError, match="is not one of"):
        parse_options(["--ready-file", ready, "--mutant", "nonsense"])
    with pytest.raises(UsageError, match="is not one of"):
        validate_mutant("nonsense")
    assert parse_options(["--ready-file", ready, "--mutant", "status-open"]).mutant == "status-open"


def test_a_mutant_is_refused_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="loopback"):
        parse_options(
            ["--ready-file", str(tmp_path / "r.json"), "--host", "192.0.2.10", "--mutant", "no-413"]
        )


def test_the_launcher_passes_the_mutant_to_the_worker(tmp_path: Path) -> None:
    args = worker_arguments(tmp_path / "r.json", {}, {}, "region-down")
    assert args[-2:] == ["--mutant", "region-down"]
    assert "--mutant" not in worker_arguments(tmp_path / "r.json", {}, {})


def test_catalog_ttl_is_bounded_by_the_contract(tmp_path: Path) -> None:
    ready = str(tmp_path / "r.json")
    assert parse_options(["--ready-file", ready]).catalog_ttl_s == CATALOG_TTL_S
    assert parse_options(["--ready-file", ready, "--catalog-ttl-s", "60"]).catalog_ttl_s == 60
    with pytest.raises(UsageError, match=r"0\.\.60"):
        parse_options(["--ready-file", ready, "--catalog-ttl-s", "61"])


def test_sandbox_cli_refuses_an_unknown_mutant_in_one_line(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "sync_ci", "sandbox", "--mutant", "nonsense"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("sync-ci: error: --mutant 'nonsense' is not one of")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_health_declares_the_freshness_bound(ref_worker: RefWorker) -> None:
    health = get(ref_worker, "/_health").json()
    assert health["catalog_ttl_s"] == CATALOG_TTL_S
    assert get(ref_worker, "/_health").headers["date"]


def test_catalog_answers_the_stored_bytes(
    ref_worker: RefWorker, seed_store: Store, worker_root: str
) -> None:
    stored = b'{"schema":1,  "generation":4,"entries":{},"publisher":"release-bot"}'
    seed_store.put(contract.catalog_key(worker_root), stored, "application/json")
    answer = get(ref_worker, "/catalog", worker_root, colo="FRA")
    assert answer.status_code == 200 and answer.content == stored
    assert answer.headers["content-type"].startswith("application/json")


def test_a_bad_idempotency_key_is_400_before_a_tenant_mismatch_is_403(
    ref_worker: RefWorker, worker_root: str
) -> None:
    body = alert_body("bad/key", tenant="someone-else")
    answer = post(ref_worker, "/_alert", ref_worker.tenant_headers("acme", worker_root), json=body)
    assert answer.status_code == 400, answer.text


def test_a_mutant_worker_says_which_mutant_it_is(
    start_ref_worker: Callable[..., RefWorker],
) -> None:
    worker = start_ref_worker("--mutant", "no-cf-ray")
    assert worker.ready["mutant"] == "no-cf-ray"
    answer = requests.get(worker.url() + "/_health", timeout=TIMEOUT)
    assert answer.status_code == 200 and "cf-ray" not in answer.headers


def test_every_mutant_names_a_violation_a_suite_and_a_row() -> None:
    for name, mutant in MUTANTS.items():
        assert name == mutant.name and mutant.violation and mutant.suite and mutant.row
    assert json.dumps(sorted(MUTANTS))
