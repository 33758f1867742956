"""Cleanup: the pure plan, then real deletions on the test store (moto, or SeaweedFS)."""

from __future__ import annotations

import json
import math
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sync_ci import cleanup, cli, guards
from sync_ci.errors import GuardViolation, UsageError
from sync_ci.store import (
    DeleteFailure,
    Store,
    StoreEndpoint,
    UploadInfo,
    VersionInfo,
    count_requests,
    open_store,
    parse_timestamp_fast,
)

CI = "snappy-os-ci/"
LIVE = "snappy-os/"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
SHA_OLD = "a" * 40
SHA_YOUNG = "b" * 12
SHA_OLD2 = "c0ffee1"


def sha() -> str:
    return secrets.token_hex(20)


def version(key: str, age: timedelta, **kw: Any) -> VersionInfo:
    return VersionInfo(
        key=key,
        version_id=kw.pop("version_id", "null"),
        size=kw.pop("size", 10),
        last_modified=NOW - age,
        **kw,
    )


# --- pure tier ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", WEEK),
        ("2w", timedelta(days=14)),
        ("1d", timedelta(days=1)),
        (" 7D ", WEEK),
        ("3650d", timedelta(days=3650)),
        ("521w", timedelta(weeks=521)),
    ],
)
def test_parse_older_than_accepts_days_and_weeks(text: str, expected: timedelta) -> None:
    assert cleanup.parse_older_than(text) == expected
    assert cleanup.parse_older_than(text, allow_short=True) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("36h", timedelta(hours=36)), ("1h", timedelta(hours=1))]
)
def test_hours_need_allow_short(text: str, expected: timedelta) -> None:
    with pytest.raises(UsageError, match="hours need --allow-short"):
        cleanup.parse_older_than(text)
    assert cleanup.parse_older_than(text, allow_short=True) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1m", "could mean minutes or months"),
        ("90m", "could mean minutes or months"),
        ("30s", "in seconds, under the 1 h minimum"),
        ("59min", "in minutes, under the 1 h minimum"),
        ("7", "has no unit"),
        ("3y", "unknown unit 'y'"),
        ("0d", "not a positive duration"),
        ("0h", "not a positive duration"),
        ("-1d", "not a positive whole number"),
        ("", "not a positive whole number"),
        ("1.5d", "not a positive whole number"),
        ("7 days", "unknown unit 'days'"),
        ("d", "not a positive whole number"),
        ("3651d", "longer than 3650 days"),
        ("99999999999d", "longer than 3650 days"),
        ("9" * 5000 + "d", "longer than 3650 days"),
    ],
)
def test_parse_older_than_refuses_short_ambiguous_huge_and_junk(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as caught:
        cleanup.parse_older_than(text, allow_short=True)
    assert len(str(caught.value)) < 200


def test_parse_now_reads_iso_and_defaults_to_utc() -> None:
    assert cleanup.parse_now("2026-03-01T12:00:00Z") == NOW
    assert cleanup.parse_now("2026-03-01T12:00:00") == NOW
    assert cleanup.parse_now("2026-03-01T14:00:00+02:00") == NOW
    with pytest.raises(UsageError, match="ISO-8601"):
        cleanup.parse_now("yesterday")


def test_plan_ages_by_newest_entry_and_scopes_to_hex_prefixes() -> None:
    listing = cleanup.Listing(
        versions=(
            version(f"{CI}{SHA_OLD}/a", timedelta(days=9)),
            version(f"{CI}{SHA_OLD}/b c+é", timedelta(days=8), size=5),
            # Young because one object is fresh: a prefix still being written stays.
            version(f"{CI}{SHA_YOUNG}/old", timedelta(days=30)),
            version(f"{CI}{SHA_YOUNG}/new", timedelta(hours=1)),
            version(f"{CI}not-a-sha/x", timedelta(days=30)),
            version(f"{CI}ABCDEF1/x", timedelta(days=30)),
            version(f"{CI}abc123/x", timedelta(days=30)),
            version(f"{CI}{'d' * 41}/x", timedelta(days=30)),
            version(f"{CI}loose.txt", timedelta(days=30)),
            version(f"{CI}{SHA_OLD2}", timedelta(days=30)),
        ),
        uploads=(
            UploadInfo(
                key=f"{CI}{SHA_OLD}/big", upload_id="u1", initiated=NOW - timedelta(days=10)
            ),
        ),
    )
    plan = cleanup.plan_cleanup(listing, NOW, WEEK, CI)
    by_name = {p.name: p for p in plan.prefixes}
    old = by_name[SHA_OLD]
    assert (old.action, old.objects, old.bytes, len(old.uploads)) == ("delete", 2, 15, 1)
    assert old.age_s == pytest.approx(timedelta(days=8).total_seconds())
    assert {d.key for d in old.doomed} == {f"{CI}{SHA_OLD}/a", f"{CI}{SHA_OLD}/b c+é"}
    assert by_name[SHA_YOUNG].action == "keep"
    assert by_name[SHA_YOUNG].doomed == ()
    for name in ("not-a-sha", "ABCDEF1", "abc123", "d" * 41):
        assert by_name[name].action == "leave", name
        assert by_name[name].kind == "other"
    loose = by_name["(loose objects)"]
    assert (loose.kind, loose.action, loose.objects) == ("loose", "leave", 2)
    assert plan.delete_count == 2
    assert plan.bytes_before == 10 * 9 + 5
    cleanup.assert_plan_safe(plan)


def test_plan_counts_delete_markers_and_uploads_in_the_age() -> None:
    listing = cleanup.Listing(
        versions=(
            version(f"{CI}{SHA_OLD}/a", timedelta(days=20), version_id="v1", is_latest=False),
            version(
                f"{CI}{SHA_OLD}/a",
                timedelta(days=1),
                version_id="m1",
                is_delete_marker=True,
                size=0,
            ),
            version(f"{CI}{SHA_OLD2}/a", timedelta(days=20)),
        ),
        uploads=(
            UploadInfo(
                key=f"{CI}{SHA_OLD2}/part", upload_id="u", initiated=NOW - timedelta(hours=2)
            ),
        ),
    )
    plan = cleanup.plan_cleanup(listing, NOW, WEEK, CI)
    assert [(p.name, p.action) for p in plan.prefixes] == [(SHA_OLD, "keep"), (SHA_OLD2, "keep")]
    plan = cleanup.plan_cleanup(listing, NOW, timedelta(hours=1), CI)
    assert {p.name: p.action for p in plan.prefixes} == {SHA_OLD: "delete", SHA_OLD2: "delete"}
    marker_prefix = next(p for p in plan.prefixes if p.name == SHA_OLD)
    assert {(d.version_id, d.current) for d in marker_prefix.doomed} == {
        ("v1", False),
        ("m1", False),
    }
    assert marker_prefix.objects == 0


def test_plan_leaves_keys_the_guard_would_refuse() -> None:
    listing = cleanup.Listing(
        versions=(
            version(f"{CI}{SHA_OLD}/", timedelta(days=9)),
            version(f"{CI}{SHA_OLD}/a//b", timedelta(days=9)),
            version(f"{CI}{SHA_OLD}/ok", timedelta(days=9)),
        )
    )
    plan = cleanup.plan_cleanup(listing, NOW, WEEK, CI)
    (item,) = plan.prefixes
    assert [d.key for d in item.doomed] == [f"{CI}{SHA_OLD}/ok"]
    assert set(item.unsafe_keys) == {f"{CI}{SHA_OLD}/", f"{CI}{SHA_OLD}/a//b"}


def test_plan_refuses_a_listing_outside_the_ci_root() -> None:
    listing = cleanup.Listing(versions=(version(f"{LIVE}catalog.json", timedelta(days=30)),))
    with pytest.raises(cleanup.PlanRefused, match="outside the CI root"):
        cleanup.plan_cleanup(listing, NOW, WEEK, CI)


def test_assert_plan_safe_refuses_a_prefix_that_is_not_a_full_ci_prefix() -> None:
    bad = cleanup.PrefixPlan(
        prefix=LIVE,
        name="x",
        kind="ci",
        action="delete",
        age_s=1e9,
        objects=1,
        versions=1,
        bytes=1,
        doomed=(cleanup.Doomed(key=f"{LIVE}catalog.json", version_id="null", size=1),),
    )
    plan = cleanup.Plan(ci_root=CI, now=NOW, older_than=WEEK, prefixes=(bad,))
    with pytest.raises(cleanup.PlanRefused, match="refusing the whole run"):
        cleanup.assert_plan_safe(plan)
    sneaky = cleanup.PrefixPlan(
        prefix=f"{CI}{SHA_OLD}/",
        name=SHA_OLD,
        kind="ci",
        action="delete",
        age_s=1e9,
        objects=1,
        versions=1,
        bytes=1,
        doomed=(cleanup.Doomed(key=f"{CI}{SHA_OLD2}/x", version_id="null", size=1),),
    )
    with pytest.raises(cleanup.PlanRefused, match="not inside"):
        cleanup.assert_plan_safe(
            cleanup.Plan(ci_root=CI, now=NOW, older_than=WEEK, prefixes=(sneaky,))
        )


@pytest.mark.parametrize(
    ("ci_root", "live_root"),
    [("", LIVE), ("snappy-os/", LIVE), ("snappy-os/ci/", LIVE), ("ci", LIVE)],
)
def test_check_roots_refuses_empty_or_overlapping_roots(ci_root: str, live_root: str) -> None:
    with pytest.raises(cleanup.PlanRefused):
        cleanup.check_roots(ci_root, live_root)


def test_batches_never_exceed_one_thousand_and_cross_prefixes() -> None:
    versions = [version(f"{CI}{SHA_OLD}/k{i}", WEEK * 2) for i in range(1500)]
    versions += [version(f"{CI}{SHA_OLD2}/k{i}", WEEK * 2) for i in range(1000)]
    plan = cleanup.plan_cleanup(cleanup.Listing(versions=tuple(versions)), NOW, WEEK, CI)
    assert [len(b) for b in cleanup.make_batches(plan)] == [1000, 1000, 500]
    with pytest.raises(ValueError, match="batch size"):
        cleanup.make_batches(plan, 1001)
    cleanup.check_max_delete(plan, 2500)
    with pytest.raises(cleanup.PlanRefused, match="more than --max-delete 2499"):
        cleanup.check_max_delete(plan, 2499)


def test_delete_batch_retries_transient_key_errors_with_backoff_and_keeps_permanent_ones() -> None:
    calls: list[list[str]] = []
    sleeps: list[float] = []

    def send(items: Sequence[tuple[str, str]]) -> list[DeleteFailure]:
        calls.append([key for key, _ in items])
        failures = (
            [DeleteFailure(key="held", version_id="null", code="AccessDenied")]
            if "held" in calls[-1]
            else []
        )
        if len(calls) < 3 and "slow" in calls[-1]:
            failures.append(DeleteFailure(key="slow", version_id="null", code="SlowDown"))
        return failures

    batch = [cleanup.Doomed(key=k, version_id="null", size=1) for k in ("a", "held", "slow")]
    failures, unreachable = cleanup.delete_batch(send, batch, sleep=sleeps.append)
    assert calls == [["a", "held", "slow"], ["slow"], ["slow"]]
    assert [(f.key, f.code) for f in failures] == [("held", "AccessDenied")]
    assert not unreachable
    assert len(sleeps) == 2
    assert sleeps[1] > sleeps[0] * 1.3


def test_delete_batch_reports_keys_that_never_succeed() -> None:
    def send(items: Sequence[tuple[str, str]]) -> list[DeleteFailure]:
        return [DeleteFailure(key=k, version_id=v, code="InternalError") for k, v in items]

    batch = [cleanup.Doomed(key="x", version_id="null", size=1)]
    failures, _ = cleanup.delete_batch(send, batch, attempts=3, sleep=lambda _: None)
    assert [(f.key, f.code) for f in failures] == [("x", "InternalError")]


def test_merge_lifecycle_keeps_other_rules_and_updates_its_own() -> None:
    other = {
        "ID": "logs",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 30},
    }
    rule = cleanup.lifecycle_rule(CI, 7, versioned=False)
    merged = cleanup.merge_lifecycle([other], rule)
    assert merged == [other, rule]
    newer = cleanup.lifecycle_rule(CI, 2, versioned=True)
    again = cleanup.merge_lifecycle(merged, newer)
    assert again == [other, newer]
    assert again[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 2}
    assert cleanup.retention_days(timedelta(hours=36)) == 2
    assert cleanup.retention_days(timedelta(minutes=5)) == 1
    with pytest.raises(cleanup.PlanRefused):
        cleanup.lifecycle_rule("", 7, versioned=False)


def test_formatting_helpers() -> None:
    assert cleanup.format_age(8 * 86400 + 2 * 3600 + 5) == "8d 02h"
    assert cleanup.format_age(3 * 3600 + 60 * 4) == "3h 04m"
    assert cleanup.format_age(42) == "42s"
    assert cleanup.format_age(-1) == "in the future"
    assert cleanup.format_bytes(512) == "512 B"
    assert cleanup.format_bytes(1536) == "1.5 KiB"


def test_progress_draws_only_when_enabled(tmp_path: Path) -> None:
    path = tmp_path / "progress.txt"
    with path.open("w") as stream:
        cleanup.Progress(stream).update("listing", force=True)
        shown = cleanup.Progress(stream, enabled=True)
        shown.update("deleting: 1/2", force=True)
        shown.close()
    text = path.read_bytes().decode()
    assert "listing" not in text
    assert "deleting: 1/2" in text
    assert text.endswith("\r\x1b[K")


def test_failed_entries_match_by_version_or_by_whole_key() -> None:
    batch = [
        cleanup.Doomed(key="a", version_id="v1", size=1),
        cleanup.Doomed(key="a", version_id="v2", size=1),
        cleanup.Doomed(key="b", version_id="v3", size=1),
        cleanup.Doomed(key="c", version_id="", size=1),
    ]
    failures = [
        DeleteFailure(key="a", version_id="v2", code="AccessDenied"),
        DeleteFailure(key="c", version_id="", code="AccessDenied"),
    ]
    assert cleanup.failed_entries([batch], failures) == {("a", "v2"), ("c", "")}
    assert cleanup.failed_entries([batch], [DeleteFailure(key="a", version_id="", code="X")]) == {
        ("a", "v1"),
        ("a", "v2"),
    }


def test_fast_timestamps_match_botocore() -> None:
    assert parse_timestamp_fast("2026-03-01T12:00:00.000Z") == NOW
    assert parse_timestamp_fast("Sun, 01 Mar 2026 12:00:00 GMT") == NOW
    assert parse_timestamp_fast("2026-03-01T12:00:00.000Z").utcoffset() == timedelta(0)


def test_cleanup_is_a_registered_subcommand() -> None:
    args = cli.build_parser().parse_args(["cleanup", "--dry-run", "--older-than", "36h"])
    assert args.func.__module__ == cleanup.command.__module__
    assert (args.dry_run, args.older_than, args.max_delete) == (True, "36h", None)


# --- storage tier: helpers ---------------------------------------------------------------------


def put_all(store: Store, keys: Iterable[str], body: bytes = b"x") -> None:
    keys = list(keys)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda key: store.put(key, body), keys))


def keys_under(store: Store, prefix: str) -> list[str]:
    return sorted(item.key for item in store.list(prefix))


def snapshot(store: Store, prefix: str) -> list[tuple[str, int, str, bytes]]:
    """Every object under `prefix`, byte for byte."""
    rows = []
    for item in store.list(prefix):
        body = store.get(item.key)
        assert body is not None
        rows.append((item.key, item.size, item.etag, body))
    return sorted(rows)


def newest(store: Store, prefix: str) -> datetime:
    return max(item.last_modified for item in store.list(prefix))


def cleanup_store(endpoint: StoreEndpoint, bucket: str | None = None) -> Store:
    """The deleting client, built the way `command` builds it."""
    target = bucket or endpoint.bucket
    return open_store(
        StoreEndpoint(
            bucket=target,
            endpoint_url=endpoint.endpoint_url,
            region_name=endpoint.region_name,
            access_key_id=endpoint.access_key_id,
            secret_access_key=endpoint.secret_access_key,
        ),
        guards.cleanup_policy(target, CI),
        fast_timestamps=True,
    )


@pytest.fixture
def cli_env(
    store_endpoint: StoreEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> StoreEndpoint:
    """Point `sync-ci cleanup --target ci` at this test's bucket through the environment."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "SYNC_CI_CONFIG",
        "SYNC_CI_SECRETS_FILE",
        "SYNC_CI_SANDBOX",
        "GITHUB_ACTIONS",
        "GITHUB_STEP_SUMMARY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SYNC_CI_BUCKET", store_endpoint.bucket)
    monkeypatch.setenv("SYNC_CI_ENDPOINT_URL", store_endpoint.endpoint_url)
    monkeypatch.setenv("SYNC_CI_ACCESS_KEY_ID", store_endpoint.access_key_id)
    monkeypatch.setenv("SYNC_CI_SECRET_ACCESS_KEY", store_endpoint.secret_access_key)
    monkeypatch.setenv("SYNC_CI_SHA", sha())
    monkeypatch.setenv("SYNC_CI_CI_ROOT", CI)
    monkeypatch.setenv("SYNC_CI_LIVE_ROOT", LIVE)
    return store_endpoint


def run_cli(*argv: str) -> int:
    return cli.main(["cleanup", "--target", "ci", *argv])


def later(days: int = 8) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


# --- storage tier: deletions on a real server ---------------------------------------------------


@pytest.mark.strict_store
@pytest.mark.slow
def test_cleanup_deletes_old_prefixes_in_batches_and_nothing_else(
    admin_store: Store, store_endpoint: StoreEndpoint
) -> None:
    big, exact, young = sha(), sha()[:12], sha()[:7]
    odd_names = [f"{CI}{big}/dir with space/ünïcødé+plus {i}.bin" for i in range(5)]
    old_keys = [f"{CI}{big}/o{i:04d}" for i in range(1045)] + odd_names
    old_keys += [f"{CI}{exact}/o{i:04d}" for i in range(1000)]
    bystanders = [f"{CI}not-a-sha/x", f"{CI}NOTHEX1/y", f"{CI}loose-object", f"{CI}{big}"]
    production = [
        f"{LIVE}catalog.json",
        f"{LIVE}objects/{'e' * 64}",
        f"{LIVE}{big}/same-sha-elsewhere",
    ]
    put_all(admin_store, old_keys + bystanders)
    for key in production:
        admin_store.put(key, f"production bytes of {key}".encode())
    upload_old = admin_store.client.create_multipart_upload(
        Bucket=admin_store.bucket, Key=f"{CI}{exact}/part"
    )
    # The cleanup dates a prefix by its newest object or upload: on a loaded machine the old
    # upload can start over a second after the last old object, so it sets the cutoff too.
    cutoff = max(
        newest(admin_store, CI), *(u.initiated for u in admin_store.list_multipart_uploads(CI))
    )
    while datetime.now(UTC) < cutoff + timedelta(seconds=2.2):
        time.sleep(0.1)
    young_keys = [f"{CI}{young}/fresh {i}+é" for i in range(3)]
    put_all(admin_store, young_keys)
    upload_young = admin_store.client.create_multipart_upload(
        Bucket=admin_store.bucket, Key=f"{CI}{young}/part"
    )
    production_before = snapshot(admin_store, LIVE)
    now = cutoff + WEEK + timedelta(seconds=1)

    store = cleanup_store(store_endpoint)
    requests = count_requests(store)
    run = cleanup.run_cleanup(store, ci_root=CI, now=now, older_than=WEEK, live_root=LIVE)

    listed = len(old_keys) + len(bystanders) + len(young_keys)
    assert run.outcome is not None
    assert run.outcome.failures == ()
    assert run.outcome.deleted == len(old_keys)
    assert run.outcome.aborted == 1
    assert keys_under(admin_store, f"{CI}{big}/") == []
    assert keys_under(admin_store, f"{CI}{exact}/") == []
    assert keys_under(admin_store, f"{CI}{young}/") == sorted(young_keys)
    for key in bystanders:
        assert admin_store.head(key) is not None, key
    assert snapshot(admin_store, LIVE) == production_before
    uploads = {u.upload_id for u in admin_store.list_multipart_uploads(CI)}
    assert upload_young["UploadId"] in uploads
    assert upload_old["UploadId"] not in uploads

    assert dict(requests) == {
        "GetBucketVersioning": 1,
        "ListObjectsV2": math.ceil(listed / 1000),
        "ListMultipartUploads": 1,
        "DeleteObjects": math.ceil(len(old_keys) / 1000),
        "AbortMultipartUpload": 1,
    }
    numbers = cleanup.totals(run)
    assert numbers["bytes_before"] == listed
    assert numbers["bytes_after"] == listed - len(old_keys)
    assert numbers["objects_after"] == len(bystanders) + len(young_keys)
    rows = {r.id: r for r in cleanup.summarize_run(run)}
    assert rows[big].title == "deleted"
    assert "1050 objects" in rows[big].detail
    assert rows[young].title.startswith("kept")
    assert rows["not-a-sha"].status == "skip"
    assert rows["NOTHEX1"].status == "skip"
    assert f"{CI}loose-object" in rows["(loose objects)"].detail


@pytest.mark.strict_store
def test_cleanup_removes_every_version_and_delete_marker(
    admin_store: Store, store_endpoint: StoreEndpoint
) -> None:
    admin_store.client.put_bucket_versioning(
        Bucket=admin_store.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    old = sha()
    for round_ in range(2):
        put_all(admin_store, [f"{CI}{old}/k{i}" for i in range(3)], body=b"v%d" % round_)
    admin_store.client.delete_object(Bucket=admin_store.bucket, Key=f"{CI}{old}/k0")
    admin_store.put(f"{LIVE}catalog.json", b"{}")
    admin_store.put(f"{LIVE}catalog.json", b'{"schema": 1}')
    live_versions = sorted((v.key, v.version_id) for v in admin_store.list_versions(LIVE))
    assert len(list(admin_store.list_versions(f"{CI}{old}/"))) == 7

    store = cleanup_store(store_endpoint)
    requests = count_requests(store)
    run = cleanup.run_cleanup(
        store,
        ci_root=CI,
        now=datetime.now(UTC) + timedelta(days=8),
        older_than=WEEK,
        live_root=LIVE,
    )
    assert run.outcome is not None
    assert run.outcome.deleted == 7
    assert list(admin_store.list_versions(f"{CI}{old}/")) == []
    assert requests["ListObjectVersions"] == 1
    assert "ListObjectsV2" not in requests
    assert sorted((v.key, v.version_id) for v in admin_store.list_versions(LIVE)) == live_versions


@pytest.mark.strict_store
def test_dry_run_through_the_cli_deletes_nothing_and_reports(
    cli_env: StoreEndpoint, admin_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = sha()
    put_all(admin_store, [f"{CI}{old}/a", f"{CI}{old}/b", f"{LIVE}keep"])
    before = snapshot(admin_store, "")
    out = tmp_path / "report.json"
    assert run_cli("--dry-run", "--now", later(), "--json", str(out)) == 0
    assert snapshot(admin_store, "") == before
    document = json.loads(out.read_text())
    assert document["suite"] == "cleanup"
    assert document["mode"] == "dry-run"
    row = next(r for r in document["results"] if r["id"] == old)
    assert row["title"] == "would delete"
    assert row["observed"]["objects"] == 2
    assert document["extra"]["keys_planned"] == 2
    assert document["extra"]["keys_deleted"] == 0
    assert "would delete" in capsys.readouterr().out


@pytest.mark.strict_store
def test_cli_deletes_and_reports_bytes_before_and_after(
    cli_env: StoreEndpoint, admin_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = sha()
    put_all(admin_store, [f"{CI}{old}/a", f"{CI}{old}/b"], body=b"12345")
    out = tmp_path / "report.json"
    assert (
        run_cli("--now", later(), "--json", str(out), "--older-than", "36h", "--allow-short") == 0
    )
    assert keys_under(admin_store, CI) == []
    extra = json.loads(out.read_text())["extra"]
    assert (extra["bytes_before"], extra["bytes_after"], extra["keys_deleted"]) == (10, 0, 2)
    assert extra["requests"]["DeleteObjects"] == 1
    assert "10 B -> 0 B" in capsys.readouterr().out


@pytest.mark.strict_store
def test_max_delete_refuses_before_deleting_anything(
    cli_env: StoreEndpoint, admin_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = [f"{CI}{sha()}/k{i}" for i in range(3)]
    put_all(admin_store, keys)
    assert run_cli("--now", later(), "--max-delete", "2") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "more than --max-delete 2" in err[0]
    assert keys_under(admin_store, CI) == sorted(keys)


@pytest.mark.parametrize("value", ["0d", "-1d", "soon", "1m", "30s", "36h", "99999999999d"])
def test_bad_older_than_is_one_line_and_exit_2(
    cli_env: StoreEndpoint, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(f"--older-than={value}") == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("sync-ci: error: --older-than")
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.strict_store
def test_legal_hold_is_a_partial_failure_naming_the_key(
    cli_env: StoreEndpoint,
    admin_store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = f"lock-{secrets.token_hex(6)}"
    admin_store.client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    locked = Store(admin_store.client, bucket)
    old = sha()
    free = [f"{CI}{old}/free {i}" for i in range(4)]
    held = f"{CI}{old}/held+é"
    put_all(locked, [*free, held])
    locked.client.put_object_legal_hold(Bucket=bucket, Key=held, LegalHold={"Status": "ON"})
    monkeypatch.setenv("SYNC_CI_BUCKET", bucket)
    try:
        assert run_cli("--now", later()) == 1
        out = capsys.readouterr().out
        assert held in out
        assert "AccessDenied" in out
        assert keys_under(locked, CI) == [held]
    finally:
        locked.client.put_object_legal_hold(Bucket=bucket, Key=held, LegalHold={"Status": "OFF"})


@pytest.mark.slow
def test_unreachable_store_exits_3_and_deletes_nothing(
    cli_env: StoreEndpoint,
    admin_store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = f"{CI}{sha()}/k"
    admin_store.put(key, b"x")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("SYNC_CI_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    assert run_cli("--now", later()) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "unreachable" in err[0]
    assert admin_store.head(key) is not None


@pytest.mark.strict_store
def test_lifecycle_install_merges_with_existing_rules(
    cli_env: StoreEndpoint, admin_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    other = {
        "ID": "logs-expiry",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 30},
    }
    admin_store.client.put_bucket_lifecycle_configuration(
        Bucket=admin_store.bucket,
        LifecycleConfiguration={"Rules": [other]},  # type: ignore[list-item]
    )
    assert run_cli("--install-lifecycle", "--older-than", "36h", "--allow-short") == 0
    assert run_cli("--install-lifecycle", "--older-than", "7d") == 0
    rules = {r["ID"]: r for r in admin_store.lifecycle_rules()}
    assert set(rules) == {"logs-expiry", cleanup.LIFECYCLE_RULE_ID}
    assert rules["logs-expiry"]["Expiration"] == {"Days": 30}
    ours = rules[cleanup.LIFECYCLE_RULE_ID]
    assert ours["Filter"] == {"Prefix": CI}
    assert ours["Expiration"] == {"Days": 7}
    assert ours["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    capsys.readouterr()
    assert run_cli("--show-lifecycle") == 0
    shown = capsys.readouterr().out
    assert "logs-expiry" in shown
    assert cleanup.LIFECYCLE_RULE_ID in shown
    assert "expire after 7 d" in shown


def test_cleanup_client_cannot_delete_outside_the_ci_prefixes(
    admin_store: Store, store_endpoint: StoreEndpoint
) -> None:
    admin_store.put(f"{LIVE}catalog.json", b"{}")
    store = cleanup_store(store_endpoint)
    for key in (f"{LIVE}catalog.json", f"{CI}not-a-sha/x", f"{CI}loose"):
        with pytest.raises(GuardViolation):
            store.delete_versions([(key, "null")])
    with pytest.raises(GuardViolation):
        store.put_lifecycle_rules([cleanup.lifecycle_rule(CI, 7, versioned=False)])
    assert admin_store.get(f"{LIVE}catalog.json") == b"{}"


def test_live_target_refuses_to_delete(
    cli_env: StoreEndpoint, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYNC_CI_WORKER_URL", "http://127.0.0.1:9")
    assert cli.main(["cleanup", "--target", "live"]) == 2
    assert "read-only" in capsys.readouterr().err


@pytest.mark.strict_store
def test_sandbox_target_with_an_explicit_loopback_store_runs_without_attaching(
    cli_env: StoreEndpoint, admin_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    old = sha()
    admin_store.put(f"{CI}{old}/a", b"x")
    assert cli.main(["cleanup", "--target", "sandbox", "--dry-run", "--now", later()]) == 0
    assert "would delete" in capsys.readouterr().out
    assert admin_store.head(f"{CI}{old}/a") is not None


def test_sandbox_target_refuses_a_remote_store(
    cli_env: StoreEndpoint, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYNC_CI_ENDPOINT_URL", "http://192.0.2.1:9000")
    assert cli.main(["cleanup", "--target", "sandbox"]) == 2
    assert "loopback" in capsys.readouterr().err
