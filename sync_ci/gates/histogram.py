"""Latency histograms in microseconds (HdrHistogram), encoded so results merge exactly anywhere."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sync_ci.errors import UsageError
from sync_ci.extras import require_extra

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 600_000_000  # 10 minutes: above any request timeout a gate allows
# Four significant digits: every value is stored within 0.01%, and percentiles are read back
# as the upper edge of their bucket, so rounding can only make a result look worse, never better.
SIGNIFICANT_DIGITS = 4


def new() -> HdrHistogram:
    """Return an empty histogram with the project's fixed range and precision."""
    require_extra("hdrh", "gates", needed_by="the gates' latency histogram")
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_us(histogram: HdrHistogram, value_us: int) -> None:
    """Record one latency, clamped into the trackable range."""
    histogram.record_value(min(max(int(value_us), LOWEST_US), HIGHEST_US))


def encode(histogram: HdrHistogram) -> str:
    """Return the compressed, base64 HdrHistogram encoding (portable across languages)."""
    raw: bytes = histogram.encode()
    return raw.decode("ascii")


def decode(text: str) -> HdrHistogram:
    """Decode an encoding made by `encode`, refusing anything that is not one."""
    require_extra("hdrh", "gates", needed_by="the gates' latency histogram")
    from hdrh.histogram import HdrHistogram

    try:
        decoded: HdrHistogram = HdrHistogram.decode(text.encode("ascii"))
    except Exception as exc:  # hdrh raises bare ValueError/zlib/struct errors on bad input
        raise UsageError(f"not an encoded latency histogram ({type(exc).__name__})") from None
    if (
        decoded.lowest_trackable_value != LOWEST_US
        or decoded.highest_trackable_value != HIGHEST_US
        or decoded.significant_figures != SIGNIFICANT_DIGITS
    ):
        # Merging a coarser histogram into ours would silently lose precision.
        raise UsageError(
            "histogram uses a different range or precision "
            f"({decoded.lowest_trackable_value}..{decoded.highest_trackable_value}, "
            f"{decoded.significant_figures} digits); re-run with this version of sync-ci"
        )
    return decoded


def merge(histograms: Iterable[HdrHistogram]) -> HdrHistogram:
    """Return a new histogram holding every sample of `histograms`."""
    total = new()
    for histogram in histograms:
        total.add(histogram)
    return total


def merge_encoded(texts: Iterable[str]) -> str:
    """Merge encoded histograms into one encoding."""
    return encode(merge(decode(text) for text in texts))


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencySummary:
    """Count and percentiles of one histogram, in milliseconds (upper bucket edges)."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    def to_json(self) -> dict[str, Any]:
        """Render for a result row's `observed` field."""

        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "count": self.count,
            "p50_ms": finite(self.p50_ms),
            "p95_ms": finite(self.p95_ms),
            "p99_ms": finite(self.p99_ms),
            "max_ms": finite(self.max_ms),
        }


def summarize(histogram: HdrHistogram) -> LatencySummary:
    """Summarize a histogram; an empty one has count 0 and infinite percentiles (fails any limit)."""
    count = int(histogram.get_total_count())
    if count == 0:
        inf = float("inf")
        return LatencySummary(count=0, p50_ms=inf, p95_ms=inf, p99_ms=inf, max_ms=inf)

    def at(percentile: float) -> float:
        return int(histogram.get_value_at_percentile(percentile)) / 1000.0

    return LatencySummary(
        count=count,
        p50_ms=at(50),
        p95_ms=at(95),
        p99_ms=at(99),
        max_ms=int(histogram.get_max_value()) / 1000.0,
    )
