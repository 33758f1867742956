"""The one KEY=VALUE parser, and the options that take KEY=VALUE items going through it."""

from __future__ import annotations

import pytest

from sync_ci.assignments import parse_assignments
from sync_ci.errors import UsageError
from sync_ci.gates import thresholds
from sync_ci.sandbox.faults import parse_fault_assignments
from sync_ci.sandbox.worker_main import parse_miss_ms


def test_items_split_on_the_first_equals_sign_trimmed_later_keys_winning() -> None:
    items = [" a = 1 ", "b=x=y", "a=2"]
    assert parse_assignments(items, "--set") == {"a": "2", "b": "x=y"}


@pytest.mark.parametrize("item", ["novalue", "=1", "key=", " = "])
def test_a_malformed_item_names_the_flag_the_form_and_the_example(item: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_assignments([item], "--cast", form="PLATFORM=PATH", example="wsl2=w.cast")
    assert str(caught.value) == f"--cast {item!r} is not PLATFORM=PATH (e.g. --cast wsl2=w.cast)"


@pytest.mark.parametrize(
    ("parse", "flag"),
    [
        (lambda items: parse_fault_assignments(items, ("SJC",)), "--fault"),
        (thresholds.parse_overrides, "--threshold"),
        (lambda items: parse_miss_ms(",".join(items), ("SJC",)), "--kv-miss-ms"),
    ],
    ids=["fault", "threshold", "kv-miss-ms"],
)
def test_every_option_taking_assignments_words_a_missing_equals_sign_the_same(
    parse: object, flag: str
) -> None:
    assert callable(parse)
    with pytest.raises(UsageError, match=rf"^{flag} 'oops' is not [A-Z]+=[A-Z]+"):
        parse(["oops"])


def test_each_caller_still_judges_its_own_keys_and_values() -> None:
    with pytest.raises(UsageError, match="unknown fault 'nope'"):
        parse_fault_assignments(["nope=1"], ("SJC",))
    with pytest.raises(UsageError, match="ID must be one of"):
        thresholds.parse_overrides(["nope=1"])
    with pytest.raises(UsageError, match="want COLO=MS with COLO one of SJC"):
        parse_miss_ms("FRA=1", ("SJC",))
    assert parse_miss_ms(" sjc = 7 ", ("SJC",)) == {"SJC": 7.0}
