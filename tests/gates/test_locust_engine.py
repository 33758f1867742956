"""The Locust engine: pure planning, and exact parity with the built-in engine on a tiny real Worker."""

from __future__ import annotations

import argparse

import pytest

from sync_ci.errors import UsageError
from sync_ci.gates import histogram, load
from sync_ci.gates.latency import probe_regions
from sync_ci.gates.locust_engine import (
    EngineOutcome,
    WorkerReport,
    combine_latency,
    combine_load,
    run_locust,
)
from sync_ci.gates.locust_plan import (
    EngineJob,
    assign_regions,
    burst_users_per_worker,
    region_samples,
    share,
)
from sync_ci.gates.options import check_engine_options
from sync_ci.gates.outcome import PhaseOutcome, RegionOutcome
from sync_ci.gates.scenario import LatencyScenario, LoadScenario
from sync_ci.gates.thresholds import resolve
from sync_ci.gates.verdict import evaluate_phase
from tests.gates.conftest import TINY_SECRET, TinyWorker
from tests.gates.test_load_engine import PUSHES
from tests.gates.verdicts import assert_speed_rows_honest, behaviour_verdicts

# The gate's own per-request bound, and a wait for workers that only a hung start would reach.
REQUEST_TIMEOUT_S = load.DEFAULT_TIMEOUT_S
GATHER_S = 300.0


def test_shares_deal_every_unit_once() -> None:
    assert [share(1100, 3, i) for i in range(3)] == [367, 367, 366]
    assert sum(share(200, 7, i) for i in range(7)) == 200
    assert burst_users_per_worker(1100, 3) == 367
    assert burst_users_per_worker(0, 2) == 1
    with pytest.raises(UsageError):
        share(10, 2, 2)


def test_tagged_workers_take_their_region_and_untagged_ones_the_rest() -> None:
    regions = ["sjc", "iad", "fra"]
    assignment, uncovered = assign_regions(regions, {"w1": "SJC", "w2": "", "w3": "iad"})
    assert assignment == {"w1": ["sjc"], "w2": ["fra"], "w3": ["iad"]}
    assert uncovered == []
    assignment, uncovered = assign_regions(regions, {"w1": "sjc"})
    assert assignment == {"w1": ["sjc"]} and uncovered == ["iad", "fra"]
    with pytest.raises(UsageError, match="mars"):
        assign_regions(regions, {"w1": "mars"})


def test_region_shares_keep_the_per_region_totals() -> None:
    assignment = {"a": ["sjc", "iad"], "b": ["sjc"]}
    samples = region_samples(200, assignment)
    assert samples == {"a": {"sjc": 100, "iad": 200}, "b": {"sjc": 100}}
    limits = region_samples(1, assignment, floor=1)
    assert limits == {"a": {"sjc": 1, "iad": 1}, "b": {"sjc": 1}}


def options(**values: object) -> argparse.Namespace:
    defaults: dict[str, object] = {
        "engine": "locust",
        "master": False,
        "worker": False,
        "master_host": "",
        "expect_workers": 1,
        "expect_workers_max_wait": 60.0,
        "master_port": 5557,
        "master_bind_port": 5557,
    }
    return argparse.Namespace(**{**defaults, **values})


def test_engine_options_are_checked() -> None:
    assert check_engine_options(options()) is True
    assert check_engine_options(options(engine="builtin")) is False
    bad = (
        options(engine="builtin", master=True),
        options(master=True, worker=True, master_host="h"),
        options(worker=True),
        options(expect_workers=0),
        options(expect_workers_max_wait=0),
        options(master_bind_port=70000),
    )
    for args in bad:
        with pytest.raises(UsageError):
            check_engine_options(args)


def test_unnamed_regions_are_unreachable_after_the_merge() -> None:
    part = RegionOutcome(name="sjc", colo="SJC", planned=10, ok=10, histogram="")
    outcome = EngineOutcome(
        gate="latency",
        workers=[WorkerReport(id="w1", samples=10, result={"regions": [part.to_json()]})],
        uncovered={"fra": "no Locust worker tagged with region fra"},
    )
    merged = combine_latency(
        outcome, [{"name": "sjc", "colo": "SJC"}, {"name": "fra", "colo": "fra"}], 10
    )
    assert merged["sjc"].ok == 10
    assert merged["fra"].colo == "FRA" and "no Locust worker" in merged["fra"].unreachable


def small_burst(
    url: str, scenario: LoadScenario, secret: str
) -> tuple[list[PhaseOutcome], EngineOutcome]:
    job = EngineJob(
        gate="load", base_url=url, timeout_s=REQUEST_TIMEOUT_S, scenario=scenario.to_json()
    )
    outcome = run_locust(
        job,
        expect_workers=2,
        local_workers=2,
        tenant_secret=secret,
        policy=PUSHES,
        expect_wait_s=GATHER_S,
    )
    return combine_load(outcome), outcome


def test_counts_match_the_builtin_engine_exactly(tiny_worker: TinyWorker) -> None:
    url = str(tiny_worker("--5xx-every", "10")["url"])
    scenario = LoadScenario(installs=60, pushes=20, tenants=20)
    (phase,), outcome = small_burst(url, scenario, "not-the-secret")
    install, push = phase.ops["install"], phase.ops["push"]
    assert (install.planned, push.planned) == (60, 20)
    # Every 10th request is a 503 (8 of 80); every push that got through has a bad token (401).
    assert install.status_5xx + push.status_5xx == 8
    assert push.status_4xx == 20 - push.status_5xx
    # Which error arrives first depends on timing: a 503 from the fault or the 401 of a bad token.
    assert any(code in push.first_error for code in ("401", "503")), push.first_error
    assert install.ok == 60 - install.status_5xx and install.network == 0
    assert sum(w.samples for w in outcome.workers) == 80
    assert sorted(w.samples for w in outcome.workers) == [40, 40]
    assert phase.processes == 2 and phase.start_spread_ms > 0
    assert histogram.decode(install.histogram).get_total_count() == 60
    builtin = load.run_load(
        load.plan_job(scenario, url, "not-the-secret", policy=PUSHES, timeout_s=REQUEST_TIMEOUT_S)
    )[0]
    assert sum(op.status_5xx for op in builtin.ops.values()) == 8
    for name in ("install", "push"):
        mine, theirs = phase.ops[name], builtin.ops[name]
        assert mine.planned == theirs.planned
        assert mine.ok + mine.status_5xx + mine.errors == mine.planned
        assert theirs.ok + theirs.status_5xx + theirs.errors == theirs.planned
    mine_rows = evaluate_phase(phase, resolve())
    theirs_rows = evaluate_phase(builtin, resolve())
    verdict = behaviour_verdicts(mine_rows)
    assert verdict == behaviour_verdicts(theirs_rows)
    assert verdict["load.burst.5xx"] == "fail" and verdict["load.burst.errors"] == "fail"
    # Latency verdicts follow each engine's own numbers (this machine's speed decides those).
    assert_speed_rows_honest(mine_rows)
    assert_speed_rows_honest(theirs_rows)


def test_network_errors_are_counted_apart(tiny_worker: TinyWorker) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    (phase,), _ = small_burst(closed, LoadScenario(installs=10, pushes=2, tenants=2), TINY_SECRET)
    assert phase.ops["install"].network == 10 and phase.ops["push"].network == 2
    assert phase.ops["install"].status_5xx == 0 and phase.ops["install"].ok == 0
    assert phase.ops["install"].first_error.startswith("install: ")


def test_probes_classify_colos_like_the_builtin_probe(tiny_worker: TinyWorker) -> None:
    import asyncio

    from sync_ci.config import Region

    started = tiny_worker("--region", "near:IAD:5", "--region", "far:FRA:5:SJC")
    urls: dict[str, str] = started["regions"]  # type: ignore[assignment]
    regions = [
        {"name": "near", "url": urls["near"], "colo": "IAD"},
        {"name": "far", "url": urls["far"], "colo": "FRA"},
    ]
    scenario = LatencyScenario(samples=30, concurrency=4)
    job = EngineJob(
        gate="latency",
        base_url=urls["near"],
        timeout_s=REQUEST_TIMEOUT_S,
        scenario=scenario.to_json(),
        regions=regions,
    )
    outcome = run_locust(job, expect_workers=1, local_workers=1, expect_wait_s=GATHER_S)
    mine = combine_latency(outcome, regions, scenario.samples)
    theirs = asyncio.run(
        probe_regions(
            [Region(name=r["name"], url=r["url"], colo=r["colo"]) for r in regions], scenario
        )
    )
    assert mine["near"].ok == theirs["near"].ok == 30
    assert mine["far"].other_colos == theirs["far"].other_colos == {"SJC": 30}
    assert histogram.decode(mine["near"].histogram).get_total_count() == 30
    assert histogram.summarize(histogram.decode(mine["near"].histogram)).p50_ms >= 5
