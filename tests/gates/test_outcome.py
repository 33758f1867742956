"""The gates' stored records: what `to_json` writes `from_json` reads back, and a broken one is named."""

from __future__ import annotations

import pytest

from sync_ci.errors import UsageError
from sync_ci.gates import histogram
from sync_ci.gates.outcome import OpStats, RegionOutcome, merge_ops, merge_regions


def _hist(*values_us: int) -> str:
    hist = histogram.new()
    for value in values_us:
        histogram.record_us(hist, value)
    return histogram.encode(hist)


def test_an_operation_record_round_trips_and_merges_exactly() -> None:
    one = OpStats(planned=10, ok=8, status_5xx=1, network=1, histogram=_hist(1000, 2000))
    two = OpStats(planned=5, ok=4, status_4xx=1, invalid=1, first_error="x", histogram=_hist(3000))
    for stats in (one, two):
        assert OpStats.from_json(stats.to_json()) == stats
    merged = merge_ops([one, two])
    assert (merged.planned, merged.ok, merged.status_5xx, merged.status_4xx) == (15, 12, 1, 1)
    assert (merged.network, merged.invalid, merged.first_error) == (1, 1, "x")
    assert histogram.summarize(histogram.decode(merged.histogram)).count == 3


def test_a_region_record_round_trips_and_merges_exactly() -> None:
    one = RegionOutcome(name="sjc", colo="SJC", planned=4, ok=3, warm=1, other_colos={"LAX": 1})
    two = RegionOutcome(name="sjc", colo="SJC", planned=2, ok=2, other_colos={"LAX": 2, "SEA": 1})
    for region in (one, two):
        assert RegionOutcome.from_json(region.to_json()) == region
    merged = merge_regions([one, two])["sjc"]
    assert (merged.planned, merged.ok, merged.warm) == (6, 5, 1)
    assert merged.other_colos == {"LAX": 3, "SEA": 1}


def test_an_older_record_without_the_optional_counters_still_reads() -> None:
    record = OpStats(planned=1, ok=1).to_json()
    del record["invalid"], record["first_error"]
    assert OpStats.from_json(record) == OpStats(planned=1, ok=1)


@pytest.mark.parametrize("missing", ["planned", "network", "histogram"])
def test_a_record_missing_a_counter_is_named(missing: str) -> None:
    record = OpStats(planned=1, ok=1).to_json()
    del record[missing]
    with pytest.raises(UsageError, match="malformed operation record"):
        OpStats.from_json(record)
    region = RegionOutcome(name="sjc", colo="SJC").to_json()
    del region[missing]
    with pytest.raises(UsageError, match="malformed region record"):
        RegionOutcome.from_json(region)


def test_a_record_with_a_wrong_type_is_named() -> None:
    record = RegionOutcome(name="sjc", colo="SJC").to_json()
    record["other_colos"] = ["LAX"]
    with pytest.raises(UsageError, match="malformed region record"):
        RegionOutcome.from_json(record)
