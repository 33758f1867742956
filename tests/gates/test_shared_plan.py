"""The pieces both engines share, as plain values: the Locust deal, the open-model schedule, the
probe classification."""

from __future__ import annotations

import pytest

from sync_ci.errors import UsageError
from sync_ci.gates.locust_plan import EngineJob, WorkerShare, deal
from sync_ci.gates.outcome import NO_COLO, RegionTally
from sync_ci.gates.scenario import INSTALL, PUSH, LatencyScenario, LoadScenario, open_schedule


def test_a_load_job_is_dealt_in_parts_with_the_whole_burst_in_flight() -> None:
    job = EngineJob(
        gate="load", base_url="http://w", timeout_s=5, scenario=LoadScenario().to_json()
    )
    shares, uncovered = deal(job, ["a", "b", "c"], {"a": "", "b": "", "c": ""})
    assert uncovered == {}
    assert [shares[w].part for w in "abc"] == [0, 1, 2]
    assert {shares[w].parts for w in "abc"} == {3}
    assert {shares[w].users for w in "abc"} == {367}  # ceil(1100 / 3)
    assert WorkerShare.from_json(shares["b"].to_json()) == shares["b"]


def test_a_latency_job_deals_each_region_to_its_tagged_workers_only() -> None:
    regions = [{"name": n, "url": f"http://{n}", "colo": n.upper()} for n in ("sjc", "fra", "sin")]
    job = EngineJob(
        gate="latency",
        base_url="http://sjc",
        timeout_s=5,
        scenario=LatencyScenario(samples=200, concurrency=8).to_json(),
        regions=regions,
    )
    shares, uncovered = deal(job, ["w1", "w2", "w3"], {"w1": "sjc", "w2": "sjc", "w3": "fra"})
    assert shares["w1"].samples == {"sjc": 100} and shares["w2"].samples == {"sjc": 100}
    assert shares["w3"].samples == {"fra": 200}
    # The bound on probes in flight holds per region, however many workers share it.
    assert shares["w1"].limits["sjc"] + shares["w2"].limits["sjc"] == 8
    assert list(uncovered) == ["sin"]
    with pytest.raises(UsageError, match="do not name: gru"):
        deal(job, ["w1"], {"w1": "gru"})


def test_the_open_schedule_keeps_the_rate_the_ratio_and_fresh_pushes() -> None:
    schedule = open_schedule(LoadScenario(), "secret", rate=220, duration_s=0.5)
    assert schedule.planned() == {INSTALL: 100, PUSH: 10}
    sent = list(schedule.requests())
    offsets = [offset for offset, _ in sent]
    assert offsets[:3] == [0, int(1e9 / 220), int(2e9 / 220)]
    assert offsets == sorted(offsets) and len(sent) == 110
    pushes = [request for _, request in sent if request.operation == PUSH]
    assert len({request.body for request in pushes}) == 10
    assert len({request.headers["x-sync-tenant"] for request in pushes}) == 10
    with pytest.raises(UsageError, match="both be positive"):
        open_schedule(LoadScenario(), "secret", rate=0, duration_s=1)


def test_one_probe_classification_counts_each_kind_of_answer_apart() -> None:
    tally = RegionTally("fra", "fra", planned=6)
    tally.record(200, 2_000_000, "FRA", "miss", "")
    tally.record(200, 3_000_000, "AMS", "miss", "")
    tally.record(200, 1_000_000, "FRA", "hit", "")
    tally.record(503, 1_000_000, "FRA", "miss", "")
    tally.record(404, 1_000_000, "FRA", "miss", "")
    tally.record(0, 0, NO_COLO, "", "ConnectionResetError: reset")
    outcome = tally.outcome()
    assert (outcome.ok, outcome.warm, outcome.status_5xx, outcome.status_4xx) == (1, 1, 1, 1)
    assert outcome.network == 1 and outcome.other_colos == {"AMS": 1}
    assert outcome.colo == "FRA" and tally.answered == 6
    assert outcome.first_error == "a never-used key was answered from a warm cache"
