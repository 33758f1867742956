"""The one UTC timestamp form: written by clock.utc_stamp, read back by clock.parse_utc_stamp."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from sync_ci.clock import epoch_stamp, parse_utc_stamp, utc_stamp


def test_any_zone_is_written_in_utc_and_read_back() -> None:
    at = datetime(2026, 11, 27, 7, 30, 5, 999_000, tzinfo=timezone(timedelta(hours=1, minutes=30)))
    assert utc_stamp(at) == "2026-11-27T06:00:05Z"
    assert parse_utc_stamp(utc_stamp(at)) == at.replace(microsecond=0)


def test_a_naive_time_is_taken_as_utc_and_epochs_agree() -> None:
    assert utc_stamp(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    assert epoch_stamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()) == (
        "2026-01-02T03:04:05Z"
    )


@pytest.mark.parametrize("text", ["2026-01-02 03:04:05", "2026-01-02T03:04:05+00:00", ""])
def test_other_forms_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="does not match format"):
        parse_utc_stamp(text)
