"""The honesty check the gate tests use on a machine of any speed: it catches each misjudgement."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from sync_ci.gates.thresholds import resolve
from sync_ci.gates.verdict import evaluate_latency, evaluate_phase
from sync_ci.report import make_report
from tests.gates.test_evaluate import FIVE, burst, op, region
from tests.gates.verdicts import assert_honest, behaviour_verdicts, judge


def document(rows: list[Any]) -> dict[str, Any]:
    report = make_report(
        suite="gate.load",
        target="sandbox",
        mode="burst",
        sha="",
        started_at=datetime.now(UTC),
        duration_s=0,
        results=rows,
    )
    return report.to_json()


def test_fast_and_slow_conforming_runs_are_both_honest() -> None:
    fast = evaluate_phase(burst(op(1000), op(100)), resolve())
    assert assert_honest(document(fast), 0) == set()
    slow = evaluate_phase(burst(op(1000, 2500), op(100), spread_ms=1500), resolve())
    expected = {"load.burst.install.p95_ms", "load.burst.start_spread_ms"}
    assert assert_honest(document(slow), 1) == expected
    assert behaviour_verdicts(fast) == behaviour_verdicts(slow)


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(op(1000, status_5xx=1, ok=999), id="a-5xx"),
        pytest.param(op(1000, status_4xx=2, ok=998), id="4xx-errors"),
        pytest.param(op(1000, ok=990), id="missing-samples"),
    ],
)
def test_misbehaviour_is_never_excused_as_slowness(broken: Any) -> None:
    rows = evaluate_phase(burst(broken, op(100)), resolve())
    with pytest.raises(AssertionError):
        judge(rows)


def test_a_verdict_that_disagrees_with_its_numbers_is_caught() -> None:
    rows = [r.to_json() for r in evaluate_phase(burst(op(1000, 2500), op(100)), resolve())]
    lenient = copy.deepcopy(rows)
    row = next(r for r in lenient if r["id"] == "load.burst.install.p95_ms")
    row["status"] = "pass"
    with pytest.raises(AssertionError, match="says pass"):
        judge(lenient)
    strict = [r.to_json() for r in evaluate_phase(burst(op(1000), op(100)), resolve())]
    strict[0]["status"] = "fail"
    with pytest.raises(AssertionError, match="says fail"):
        judge(strict)


def test_a_loosened_threshold_is_caught() -> None:
    rows = [r.to_json() for r in evaluate_phase(burst(op(1000, 2500), op(100)), resolve())]
    row = next(r for r in rows if r["id"] == "load.burst.install.p95_ms")
    row["threshold"]["limit"], row["status"] = 3000, "pass"
    with pytest.raises(AssertionError, match="not the canonical limit"):
        judge(rows)


def test_the_exit_code_must_agree_with_the_rows() -> None:
    fast = document(evaluate_phase(burst(op(1000), op(100)), resolve()))
    slow = document(evaluate_phase(burst(op(1000, 2500), op(100)), resolve()))
    for doc, code in ((fast, 1), (slow, 0), (slow, 3), (fast, 3)):
        with pytest.raises(AssertionError, match="exit"):
            assert_honest(doc, code)
    unmeasured = {**fast, "extra": {"unmeasured": True, "reason": "down"}}
    with pytest.raises(AssertionError, match="could not measure"):
        assert_honest(unmeasured, 3)


def test_a_slow_region_is_speed_but_another_colo_is_not() -> None:
    regions = {n: region(n, c, 900 if n == "fra" else 80) for n, c in FIVE}
    assert judge(evaluate_latency(regions, resolve())) == {"latency.region.fra"}
    regions["sjc"] = region("sjc", "SJC", 80, ok=195, other_colos={"LAX": 5})
    with pytest.raises(AssertionError, match=r"latency\.region\.sjc"):
        judge(evaluate_latency(regions, resolve()))
    with pytest.raises(AssertionError, match=r"latency\.regions"):
        judge(evaluate_latency({n: region(n, c, 80) for n, c in FIVE[:4]}, resolve()))


def test_a_gate_document_records_when_its_run_began_not_when_it_ended() -> None:
    import time
    from datetime import timedelta

    from sync_ci.gates import verdict

    hour = timedelta(hours=1)
    judged = verdict.platforms_report([], {}, target="-", sha="", duration_s=hour.total_seconds())
    assert judged.started_at <= datetime.now(UTC) - hour + timedelta(seconds=1)
    down = verdict.unmeasured("gate.load", "t", "", time.monotonic() - 600, "load", "down")
    assert down.started_at <= datetime.now(UTC) - timedelta(seconds=599)
    both = verdict.combine([judged, down], target="t", sha="", duration_s=0.0)
    assert both.started_at == judged.started_at and both.unmeasured
    assert both.to_json()["extra"]["gates"]["gate.load"]["unmeasured"] is True
