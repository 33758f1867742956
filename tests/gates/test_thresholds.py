"""The canonical thresholds: strict comparisons, and flags that may only tighten."""

from __future__ import annotations

import pytest

from sync_ci.errors import UsageError
from sync_ci.gates import thresholds


def test_canonical_table_holds_the_launch_limits() -> None:
    table = thresholds.canonical()
    assert table["load.install.p95_ms"].limit == 2000
    assert table["load.push.p95_ms"].limit == 5000
    assert table["load.5xx"].limit == 0
    assert table["latency.region.p95_ms"].limit == 500
    assert table["latency.region.p99_ms"].limit == 1500
    assert table["latency.regions"].limit == 5
    assert len(table) == len(thresholds.CANONICAL)


def test_a_value_at_the_limit_fails() -> None:
    table = thresholds.canonical()
    install = table["load.install.p95_ms"]
    assert install.passes(1999.999)
    assert not install.passes(2000.0)
    assert not table["load.5xx"].passes(1)
    assert table["load.5xx"].passes(0)
    assert not table["latency.regions"].passes(4)
    assert table["latency.regions"].passes(5)


def test_flags_may_tighten() -> None:
    table = thresholds.resolve(
        thresholds.parse_overrides(["load.install.p95_ms=1500", "latency.regions=6"])
    )
    assert table["load.install.p95_ms"].limit == 1500
    assert table["latency.regions"].limit == 6
    assert table["load.push.p95_ms"].limit == 5000


@pytest.mark.parametrize(
    "item",
    [
        "load.install.p95_ms=2000.5",
        "load.5xx=1",
        "latency.regions=4",
        "latency.region.other_colo_fraction=0.5",
    ],
)
def test_flags_may_not_loosen(item: str) -> None:
    with pytest.raises(UsageError, match="cannot be loosened"):
        thresholds.resolve(thresholds.parse_overrides([item]))


@pytest.mark.parametrize("item", ["load.install.p95_ms", "nope=1", "load.5xx=abc"])
def test_malformed_overrides_are_usage_errors(item: str) -> None:
    with pytest.raises(UsageError):
        thresholds.parse_overrides([item])


def test_scenario_sizes_may_grow_but_not_shrink() -> None:
    assert thresholds.check_count("installs", 2000) == 2000
    with pytest.raises(UsageError, match="never shrunk"):
        thresholds.check_count("installs", 999)
    with pytest.raises(UsageError):
        thresholds.check_count("samples", 50)
