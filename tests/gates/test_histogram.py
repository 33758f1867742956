"""Latency histograms: exact counts, merges equal to one histogram, rounding never in our favour."""

from __future__ import annotations

import json
import random

import pytest

from sync_ci.errors import UsageError
from sync_ci.gates import histogram


def test_encoded_histograms_merge_to_the_same_distribution() -> None:
    rng = random.Random(7)
    values = [rng.randint(100, 3_000_000) for _ in range(3000)]
    whole = histogram.new()
    parts = [histogram.new() for _ in range(3)]
    for index, value in enumerate(values):
        histogram.record_us(whole, value)
        histogram.record_us(parts[index % 3], value)
    # Each part travels as text (another process or machine), then merges.
    texts = [json.loads(json.dumps(histogram.encode(p))) for p in parts]
    merged = histogram.decode(histogram.merge_encoded(texts))
    assert histogram.summarize(merged) == histogram.summarize(whole)
    assert merged.get_total_count() == len(values)


def test_percentiles_are_never_rounded_down() -> None:
    values = [1_000 * v for v in range(1, 1001)]  # 1 ms .. 1000 ms
    hist = histogram.new()
    for value in values:
        histogram.record_us(hist, value)
    summary = histogram.summarize(hist)
    exact_p95_ms = 950.0
    assert summary.p95_ms >= exact_p95_ms
    assert summary.p95_ms <= exact_p95_ms * 1.0002  # four significant digits
    assert summary.max_ms >= 1000.0


def test_a_value_just_under_two_seconds_reads_back_at_or_above_it() -> None:
    hist = histogram.new()
    histogram.record_us(hist, 1_999_999)
    assert histogram.summarize(hist).p95_ms >= 1999.999


def test_empty_histogram_has_no_percentiles() -> None:
    summary = histogram.summarize(histogram.new())
    assert summary.count == 0
    assert summary.to_json()["p95_ms"] is None


def test_garbage_and_foreign_precision_are_refused() -> None:
    from hdrh.histogram import HdrHistogram

    with pytest.raises(UsageError):
        histogram.decode("not a histogram")
    coarse = HdrHistogram(1, histogram.HIGHEST_US, 2)
    coarse.record_value(5)
    with pytest.raises(UsageError, match="different range or precision"):
        histogram.decode(coarse.encode().decode())
