"""Pure verdicts of the load and latency gates: strict limits, errors apart, missing samples fail."""

from __future__ import annotations

from collections.abc import Sequence

from sync_ci.gates import histogram
from sync_ci.gates.outcome import OpStats, PhaseOutcome, RegionOutcome, merge_phase, merge_regions
from sync_ci.gates.thresholds import resolve
from sync_ci.gates.verdict import evaluate_latency, evaluate_phase


def encoded(values_ms: Sequence[float]) -> str:
    hist = histogram.new()
    for value in values_ms:
        histogram.record_us(hist, int(value * 1000))
    return histogram.encode(hist)


def op(
    planned: int,
    latency_ms: float = 100.0,
    *,
    ok: int | None = None,
    status_5xx: int = 0,
    status_4xx: int = 0,
    network: int = 0,
) -> OpStats:
    ok = planned if ok is None else ok
    answered = ok + status_5xx + status_4xx
    return OpStats(
        planned=planned,
        ok=ok,
        status_5xx=status_5xx,
        status_4xx=status_4xx,
        network=network,
        histogram=encoded([latency_ms] * answered),
    )


def burst(install: OpStats, push: OpStats, spread_ms: float = 100.0) -> PhaseOutcome:
    return PhaseOutcome(
        phase="burst",
        ops={"install": install, "push": push},
        start_first_ns=1_000_000_000,
        start_last_ns=1_000_000_000 + int(spread_ms * 1e6),
    )


def statuses(rows: Sequence[object]) -> dict[str, str]:
    return {r.id: r.status for r in rows}  # type: ignore[attr-defined]


def test_a_clean_burst_passes() -> None:
    rows = evaluate_phase(burst(op(1000), op(100)), resolve())
    assert set(statuses(rows).values()) == {"pass"}
    assert {r.id for r in rows} >= {
        "load.burst.install.p95_ms",
        "load.burst.push.p95_ms",
        "load.burst.5xx",
        "load.burst.errors",
        "load.burst.missing",
        "load.burst.start_spread_ms",
    }


def test_p95_at_the_limit_fails_and_names_it() -> None:
    rows = evaluate_phase(burst(op(1000, latency_ms=2000.0), op(100)), resolve())
    row = next(r for r in rows if r.id == "load.burst.install.p95_ms")
    assert row.status == "fail"
    assert "load.install.p95_ms" in row.detail
    assert row.observed["p95_ms"] >= 2000.0


def test_one_5xx_fails_on_its_own_row() -> None:
    rows = evaluate_phase(burst(op(1000, ok=999, status_5xx=1), op(100)), resolve())
    result = statuses(rows)
    assert result["load.burst.5xx"] == "fail"
    assert result["load.burst.errors"] == "pass"
    assert result["load.burst.missing"] == "fail"


def test_4xx_and_network_errors_are_counted_apart_from_5xx() -> None:
    install = op(1000, ok=997, status_4xx=1, network=2)
    rows = evaluate_phase(burst(install, op(100)), resolve())
    errors = next(r for r in rows if r.id == "load.burst.errors")
    assert errors.status == "fail"
    assert errors.observed["value"] == 3
    by_op = errors.observed["by_operation"]["install"]
    assert (by_op["4xx"], by_op["network"], by_op["5xx"]) == (1, 2, 0)
    assert statuses(rows)["load.burst.5xx"] == "pass"


def test_a_missing_sample_fails_even_without_errors() -> None:
    rows = evaluate_phase(burst(op(1000, ok=999), op(100)), resolve())
    assert statuses(rows)["load.burst.missing"] == "fail"


def test_no_answers_at_all_fails_every_latency_row() -> None:
    empty = OpStats(planned=100, network=100, histogram=histogram.encode(histogram.new()))
    rows = evaluate_phase(burst(op(1000), empty), resolve())
    assert statuses(rows)["load.burst.push.p95_ms"] == "fail"


def test_a_spread_out_burst_is_not_a_burst() -> None:
    rows = evaluate_phase(burst(op(1000), op(100), spread_ms=1500), resolve())
    assert statuses(rows)["load.burst.start_spread_ms"] == "fail"


def test_tightened_threshold_is_applied() -> None:
    rows = evaluate_phase(
        burst(op(1000, latency_ms=300), op(100)), resolve({"load.install.p95_ms": 250})
    )
    assert statuses(rows)["load.burst.install.p95_ms"] == "fail"


def test_merge_sums_exactly_and_keeps_the_spread() -> None:
    a = burst(op(500, latency_ms=100), op(50, latency_ms=100), spread_ms=50)
    b = PhaseOutcome(
        phase="burst",
        ops={"install": op(500, latency_ms=3000), "push": op(50)},
        start_first_ns=1_080_000_000,
        start_last_ns=1_120_000_000,
    )
    same_machine = merge_phase([a, b], same_clock=True)
    assert same_machine.ops["install"].planned == 1000
    assert same_machine.start_spread_ms == 120.0
    other_machines = merge_phase(
        [PhaseOutcome.from_json(a.to_json()), PhaseOutcome.from_json(b.to_json())], same_clock=False
    )
    assert other_machines.start_spread_ms == 50.0
    rows = evaluate_phase(other_machines, resolve())
    # Half the installs took 3 s, so the merged p95 is 3 s: the slow machine cannot hide.
    assert statuses(rows)["load.burst.install.p95_ms"] == "fail"


def test_merge_short_of_the_scenario_fails_as_missing() -> None:
    part = burst(op(500), op(50))
    rows = evaluate_phase(part, resolve(), required={"install": 1000, "push": 100})
    missing = next(r for r in rows if r.id == "load.burst.missing")
    assert missing.status == "fail"
    assert missing.observed["value"] == 550


def region(
    name: str,
    colo: str,
    latency_ms: float,
    *,
    ok: int = 200,
    other_colos: dict[str, int] | None = None,
) -> RegionOutcome:
    return RegionOutcome(
        name=name,
        colo=colo,
        planned=200,
        ok=ok,
        histogram=encoded([latency_ms] * ok),
        other_colos=other_colos or {},
    )


FIVE = [("sjc", "SJC"), ("iad", "IAD"), ("fra", "FRA"), ("sin", "SIN"), ("gru", "GRU")]


def test_five_fast_regions_pass() -> None:
    rows = evaluate_latency({n: region(n, c, 80) for n, c in FIVE}, resolve())
    assert set(statuses(rows).values()) == {"pass"}


def test_a_slow_region_fails_and_is_named() -> None:
    regions = {n: region(n, c, 900 if n == "fra" else 80) for n, c in FIVE}
    rows = evaluate_latency(regions, resolve())
    failed = [r for r in rows if r.status == "fail"]
    assert [r.id for r in failed] == ["latency.region.fra"]
    assert "latency.region.p95_ms" in failed[0].detail


def test_p99_alone_can_fail_a_region() -> None:
    hist = encoded([100.0] * 197 + [1600.0] * 3)
    slow_tail = RegionOutcome(name="gru", colo="GRU", planned=200, ok=200, histogram=hist)
    rows = evaluate_latency(
        {**{n: region(n, c, 80) for n, c in FIVE[:4]}, "gru": slow_tail}, resolve()
    )
    row = next(r for r in rows if r.id == "latency.region.gru")
    assert row.status == "fail"
    assert "p99" in row.detail and "p95" not in row.detail


def test_other_colo_answers_are_excluded_and_too_many_fail() -> None:
    few = region("sjc", "SJC", 80, ok=195, other_colos={"LAX": 5})
    many = region("iad", "IAD", 80, ok=150, other_colos={"EWR": 50})
    rows = evaluate_latency({"sjc": few, "iad": many}, resolve())
    result = {r.id: r for r in rows}
    assert result["latency.region.sjc"].status == "pass"
    assert result["latency.region.sjc"].observed["count"] == 195
    assert result["latency.region.iad"].status == "fail"
    assert "EWR x50" in result["latency.region.iad"].detail


def test_fewer_than_five_regions_fail() -> None:
    rows = evaluate_latency({n: region(n, c, 80) for n, c in FIVE[:4]}, resolve())
    assert statuses(rows)["latency.regions"] == "fail"


def test_unreachable_region_fails_and_does_not_count_as_measured() -> None:
    regions = {n: region(n, c, 80) for n, c in FIVE}
    regions["sin"] = RegionOutcome(name="sin", colo="SIN", planned=200, unreachable="refused")
    result = statuses(evaluate_latency(regions, resolve()))
    assert result["latency.region.sin"] == "fail"
    assert result["latency.regions"] == "fail"


def test_region_results_merge_by_name() -> None:
    parts = [region(n, c, 80) for n, c in FIVE[:3]] + [region(n, c, 80) for n, c in FIVE[2:]]
    merged = merge_regions(RegionOutcome.from_json(p.to_json()) for p in parts)
    assert sorted(merged) == sorted(n for n, _ in FIVE)
    assert merged["fra"].ok == 400
    assert histogram.decode(merged["fra"].histogram).get_total_count() == 400
