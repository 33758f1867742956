"""The aiohttp load engine against a tiny real Worker on 127.0.0.1.

Verdicts on a conforming Worker are judged for behaviour (tests.gates.verdicts), never for speed.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys

import pytest

from sync_ci.errors import GuardViolation
from sync_ci.gates import histogram, load, outcome, verdict
from sync_ci.gates.http import push_policy, read_only_policy
from sync_ci.gates.scenario import LoadScenario, install_request, plan_burst
from sync_ci.gates.thresholds import resolve
from tests.gates.conftest import TINY_SECRET, TinyWorker
from tests.gates.test_burst_saturation import stall_open_model
from tests.gates.verdicts import judge

CI_ROOT = "snappy-os-ci/0123abc/"
# A hang guard for the subprocesses below, which a loaded machine never reaches.
HANG_S = 300
PUSHES = push_policy(CI_ROOT)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_full_burst_is_measured_exactly(tiny_worker: TinyWorker) -> None:
    url = str(tiny_worker("--latency-ms", "20")["url"])
    job = load.plan_job(LoadScenario(), url, TINY_SECRET, policy=PUSHES)
    (phase,) = load.run_load(job)
    install, push = phase.ops["install"], phase.ops["push"]
    assert (install.planned, install.ok, push.planned, push.ok) == (1000, 1000, 100, 100)
    assert histogram.decode(install.histogram).get_total_count() == 1000
    assert phase.start_spread_ms > 0
    assert histogram.summarize(histogram.decode(install.histogram)).p50_ms >= 20
    # Every row present and clean; a latency row may fail only where its own p95 says so.
    rows = verdict.evaluate_phase(phase, resolve())
    assert {r.id for r in rows} == {
        f"load.burst.{name}"
        for name in ("install.p95_ms", "push.p95_ms", "5xx", "errors", "missing", "start_spread_ms")
    }
    judge(rows)


def test_5xx_are_counted_apart(tiny_worker: TinyWorker) -> None:
    url = str(tiny_worker("--5xx-every", "100")["url"])
    job = load.plan_job(LoadScenario(), url, TINY_SECRET, policy=PUSHES)
    (phase,) = load.run_load(job)
    total_5xx = sum(op.status_5xx for op in phase.ops.values())
    assert total_5xx == 11  # every 100th of 1,100 requests
    assert sum(op.errors for op in phase.ops.values()) == 0
    failed = {r.id for r in verdict.evaluate_phase(phase, resolve()) if r.status == "fail"}
    assert "load.burst.5xx" in failed


def test_bad_tokens_are_4xx_errors(tiny_worker: TinyWorker) -> None:
    url = str(tiny_worker()["url"])
    job = load.plan_job(LoadScenario(), url, "not-the-secret", policy=PUSHES)
    (phase,) = load.run_load(job)
    assert phase.ops["push"].status_4xx == 100
    assert phase.ops["push"].status_5xx == 0
    assert "401" in phase.ops["push"].first_error


def test_network_errors_are_counted_not_raised() -> None:
    plan = [install_request() for _ in range(20)]
    phase = asyncio.run(
        load.fire_burst(plan, closed_port_url(), policy=read_only_policy(), timeout_s=5)
    )
    assert phase.ops["install"].network == 20
    assert phase.ops["install"].ok == 0
    assert "install" in phase.ops["install"].first_error


def test_processes_merge_to_the_planned_counts(tiny_worker: TinyWorker) -> None:
    url = str(tiny_worker("--latency-ms", "10")["url"])
    job = load.plan_job(LoadScenario(), url, TINY_SECRET, policy=PUSHES)
    (phase,) = load.run_load(job, processes=2)
    assert phase.processes == 2
    assert (phase.ops["install"].ok, phase.ops["push"].ok) == (1000, 100)
    assert histogram.decode(phase.ops["install"].histogram).get_total_count() == 1000


def test_client_processes_wait_for_one_shared_start_instant() -> None:
    """`sleep_until` returns no earlier than the instant, and at once for one already past."""
    import time

    instant = time.monotonic_ns() + 20_000_000
    load.sleep_until(instant)
    assert time.monotonic_ns() >= instant
    load.sleep_until(instant - 1_000_000_000)  # in the past: returns without sleeping
    assert load.START_LEAD_NS > 0


def test_open_model_measures_from_the_intended_send_time(
    tiny_worker: TinyWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tiny_worker()["url"])
    # Stall the client's own loop for 300 ms: requests due meanwhile leave late, and that
    # wait must show in their latency (coordinated omission corrected), not vanish.
    stall_open_model(monkeypatch, 10, 0.3)

    async def run() -> outcome.PhaseOutcome:
        return await load.run_open_model(
            LoadScenario(), TINY_SECRET, url, policy=PUSHES, rate=200, duration_s=0.5, timeout_s=10
        )

    phase = asyncio.run(run())
    install = phase.ops["install"]
    assert install.planned + phase.ops["push"].planned == 100
    assert install.ok == install.planned
    corrected, raw = histogram.decode(install.histogram), histogram.decode(phase.raw["install"])
    assert corrected.get_total_count() == raw.get_total_count() == install.ok
    assert histogram.summarize(corrected).max_ms >= 250
    # Each sample's corrected latency adds its own lag to the raw one; the stalled ones lag much.
    assert corrected.get_mean_value() > raw.get_mean_value()
    assert phase.max_lag_ms >= 250


def test_read_only_target_refuses_the_pushes_before_sending() -> None:
    with pytest.raises(GuardViolation, match="read-only"):
        load.plan_job(LoadScenario(), closed_port_url(), "s", policy=read_only_policy())
    plan = plan_burst(LoadScenario(), "s")
    load.check_plan_allowed(plan, "http://127.0.0.1:1", PUSHES)


def test_too_few_descriptors_is_refused_with_exit_3() -> None:
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))\n"
        "from sync_ci.cli import run_handler\n"
        "from sync_ci.gates.load import ensure_descriptors\n"
        "import argparse\n"
        "sys.exit(run_handler(lambda a: ensure_descriptors(1164), argparse.Namespace()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_S, check=False
    )
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("sync-ci: error: this host allows 256 open files")
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1164, reason="this host's hard limit is too low"
)
def test_descriptors_are_raised_to_the_hard_limit() -> None:
    script = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from sync_ci.gates.load import ensure_descriptors\n"
        "print(ensure_descriptors(1164) >= 1164)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_S, check=False
    )
    assert done.stdout.strip() == "True", done.stderr


SMALL = LoadScenario(installs=40, pushes=10, tenants=10)


@pytest.mark.parametrize(
    ("flag", "operation", "why"),
    [
        pytest.param("--wrong-install", "install", "error body", id="install-200-error-body"),
        pytest.param("--wrong-push", "push", "push key None", id="push-201-wrong-shape"),
    ],
)
def test_a_wrong_answer_body_is_an_error_not_a_success(
    tiny_worker: TinyWorker, flag: str, operation: str, why: str
) -> None:
    url = str(tiny_worker(flag)["url"])
    (phase,) = load.run_load(load.plan_job(SMALL, url, TINY_SECRET, policy=PUSHES))
    op = phase.ops[operation]
    assert (op.ok, op.invalid) == (0, op.planned)
    assert why in op.first_error
    failed = {r.id for r in verdict.evaluate_phase(phase, resolve()) if r.status == "fail"}
    assert {"load.burst.errors", "load.burst.missing"} <= failed


def test_conforming_answers_are_all_valid(tiny_worker: TinyWorker) -> None:
    url = str(tiny_worker()["url"])
    (phase,) = load.run_load(load.plan_job(SMALL, url, TINY_SECRET, policy=PUSHES))
    assert [(op.ok, op.invalid) for op in phase.ops.values()] == [(40, 0), (10, 0)]
    errors = {r.id: r.status for r in verdict.evaluate_phase(phase, resolve())}
    assert errors["load.burst.errors"] == "pass"
