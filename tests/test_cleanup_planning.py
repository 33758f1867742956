"""Cleanup planning judges each listed key once and keeps every safety check."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from sync_ci import cleanup, guards
from sync_ci.store import UploadInfo, VersionInfo

CI_ROOT = "snappy-os-ci/"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
WEEK = timedelta(days=7)
OLD_SHA, YOUNG_SHA = "a" * 40, "b" * 40


def _version(key: str, age: timedelta, version_id: str = "", latest: bool = True) -> VersionInfo:
    return VersionInfo(
        key=key, version_id=version_id, size=3, last_modified=NOW - age, is_latest=latest
    )


def _listing() -> cleanup.Listing:
    old, young = f"{CI_ROOT}{OLD_SHA}/", f"{CI_ROOT}{YOUNG_SHA}/"
    return cleanup.Listing(
        versions=(
            _version(f"{old}a.bin", 2 * WEEK, "v2"),
            _version(f"{old}a.bin", 3 * WEEK, "v1", latest=False),
            _version(f"{old}dir/../escape", 2 * WEEK),
            _version(f"{old}b\x07bell", 2 * WEEK),
            _version(f"{young}c.bin", timedelta(hours=1)),
            _version(f"{CI_ROOT}not-a-sha/d.bin", 2 * WEEK),
            _version(f"{CI_ROOT}loose.bin", 2 * WEEK),
        ),
        uploads=(UploadInfo(key=f"{old}part.bin", upload_id="u1", initiated=NOW - 2 * WEEK),),
        versioned=True,
    )


def test_each_old_key_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: Counter[str] = Counter()
    original = guards.validate_key

    def counting(key: str) -> str:
        seen[key] += 1
        return original(key)

    monkeypatch.setattr(guards, "validate_key", counting)
    cleanup.plan_cleanup(_listing(), NOW, WEEK, CI_ROOT)
    planned = {key: count for key, count in seen.items() if key.startswith(f"{CI_ROOT}{OLD_SHA}/")}
    assert planned == {
        f"{CI_ROOT}{OLD_SHA}/a.bin": 1,
        f"{CI_ROOT}{OLD_SHA}/dir/../escape": 1,
        f"{CI_ROOT}{OLD_SHA}/b\x07bell": 1,
        f"{CI_ROOT}{OLD_SHA}/part.bin": 1,
    }


def test_unsafe_keys_stay_out_of_the_deletion_and_are_named() -> None:
    plan = cleanup.plan_cleanup(_listing(), NOW, WEEK, CI_ROOT)
    cleanup.assert_plan_safe(plan)
    by_name = {p.name: p for p in plan.prefixes}
    old = by_name[OLD_SHA]
    assert old.action == "delete"
    assert [(d.key, d.version_id) for d in old.doomed] == [
        (f"{CI_ROOT}{OLD_SHA}/a.bin", "v2"),
        (f"{CI_ROOT}{OLD_SHA}/a.bin", "v1"),
    ]
    assert old.unsafe_keys == (f"{CI_ROOT}{OLD_SHA}/b\x07bell", f"{CI_ROOT}{OLD_SHA}/dir/../escape")
    assert [u.key for u in old.uploads] == [f"{CI_ROOT}{OLD_SHA}/part.bin"]
    assert by_name[YOUNG_SHA].action == "keep" and by_name[YOUNG_SHA].doomed == ()
    assert by_name["not-a-sha"].kind == "other" and by_name["not-a-sha"].action == "leave"
    loose = by_name["(loose objects)"]
    assert loose.kind == "loose" and loose.unsafe_keys == (f"{CI_ROOT}loose.bin",)
    assert [p.kind for p in plan.prefixes] == ["ci", "ci", "other", "loose"]


def test_a_key_outside_the_root_refuses_the_whole_plan() -> None:
    listing = cleanup.Listing(versions=(_version("snappy-os/catalog.json", 2 * WEEK),))
    with pytest.raises(cleanup.PlanRefused, match="outside the CI root"):
        cleanup.plan_cleanup(listing, NOW, WEEK, CI_ROOT)
