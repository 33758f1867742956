"""guards.validate_key (one regex match) accepts and refuses exactly what the segment rules say."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sync_ci import guards
from sync_ci.errors import GuardViolation


def reference_validate_key(key: str) -> str:
    """The rules spelled out one by one: the implementation validate_key replaced."""
    if not key or key.startswith("/") or "\\" in key:
        raise GuardViolation(f"refused key {key!r}: empty, absolute or with a backslash")
    body = key[:-1] if key.endswith("/") else key
    if any(part in ("", ".", "..") for part in body.split("/")):
        raise GuardViolation(f"refused key {key!r}: empty, '.' or '..' path segment")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise GuardViolation(f"refused key {key!r}: control character")
    return key


def _verdict(check: object, key: str) -> str:
    assert callable(check)
    try:
        assert check(key) == key
    except GuardViolation as exc:
        return f"refused: {exc}"
    return "accepted"


# The characters the rules turn on, plus ordinary and non-ASCII ones.
TRICKY = "a./\\\x00\n\x1f\x7f é"
keys = st.text(alphabet=st.sampled_from(TRICKY), max_size=12) | st.text(max_size=40)
segments = st.lists(
    st.sampled_from(["", ".", "..", "...", ".a", "a.", "..a", "x", "é", " ", "a\x7f", "b\\c"]),
    max_size=6,
)


@settings(max_examples=2000, deadline=None)
@given(keys)
@example("a/../")
@example("a/./b")
@example("../a")
@example("a/..")
@example("a//")
@example("/")
def test_same_verdict_and_message_as_the_rules_on_generated_keys(key: str) -> None:
    assert _verdict(guards.validate_key, key) == _verdict(reference_validate_key, key)


@settings(max_examples=2000, deadline=None)
@given(segments, st.booleans())
def test_same_verdict_on_keys_built_from_tricky_segments(parts: list[str], slash: bool) -> None:
    key = "/".join(parts) + ("/" if slash else "")
    assert _verdict(guards.validate_key, key) == _verdict(reference_validate_key, key)


def test_same_verdict_on_every_short_key_over_the_tricky_alphabet() -> None:
    for size in range(6):
        for chars in itertools.product("a./\\\x00\x7f", repeat=size):
            key = "".join(chars)
            assert _verdict(guards.validate_key, key) == _verdict(reference_validate_key, key), key


@pytest.mark.parametrize(
    "key", ["snappy-os-ci/abc1234/obj 0001+é.bin", "a/", "...", ".a/..b/c.", "x/y/z/"]
)
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert guards.validate_key(key) == key


def test_the_comparison_detects_a_looser_check() -> None:
    # A check that forgot the trailing-'..' case must show up as a differing verdict.
    def loose(key: str) -> str:
        if key.endswith("/.."):
            return key
        return reference_validate_key(key)

    assert _verdict(loose, "a/..") != _verdict(reference_validate_key, "a/..")
