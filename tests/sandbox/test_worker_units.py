"""Pure parts of the reference Worker: KV cache, faults, status, roots and option parsing."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from sync_ci.errors import ContractError, UsageError
from sync_ci.sandbox import kv as kv_module
from sync_ci.sandbox.faults import apply_fault_update, parse_fault_assignments, parse_fault_value
from sync_ci.sandbox.kv import KVRead, RegionKV, miss_delay_ms
from sync_ci.sandbox.status_book import (
    SILENT_AFTER_S,
    CheckStats,
    TokenBucket,
    iso_time,
    parse_alert_rows,
    render_status_page,
    summarize_status,
)
from sync_ci.sandbox.worker_config import RegionSpec, WorkerConfig
from sync_ci.sandbox.worker_http import ApiError, Timing, select_root, server_timing
from sync_ci.sandbox.worker_main import parse_colos, parse_miss_ms, parse_options, write_ready_file

COLOS = ("SJC", "IAD")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_kv_miss_loads_once_then_hits_until_ttl() -> None:
    clock = FakeClock()
    cache = RegionKV("SJC", monotonic=clock)
    loads: list[int] = []

    async def load() -> tuple[Any, int] | None:
        loads.append(1)
        await asyncio.sleep(0.01)
        return "value", 5

    async def scenario() -> list[bool]:
        first = await asyncio.gather(
            *(cache.read("r/", "k", load, ttl_s=30, miss_ms=0) for _ in range(10))
        )
        hit = await cache.read("r/", "k", load, ttl_s=30, miss_ms=0)
        clock.now += 31
        expired = await cache.read("r/", "k", load, ttl_s=30, miss_ms=0)
        return [r.hit for r in first] + [hit.hit, expired.hit]

    hits = asyncio.run(scenario())
    assert hits == [False] * 10 + [True, False]
    assert len(loads) == 2


def test_kv_keys_are_per_root_and_absent_values_are_not_cached() -> None:
    cache = RegionKV("SJC")
    answers = iter([None, ("later", 5), ("other-root", 10)])

    async def load() -> tuple[Any, int] | None:
        return next(answers)

    async def scenario() -> list[Any]:
        absent = await cache.read("a/", "k", load, ttl_s=30, miss_ms=0)
        later = await cache.read("a/", "k", load, ttl_s=30, miss_ms=0)
        other = await cache.read("b/", "k", load, ttl_s=30, miss_ms=0)
        return [absent.value, later.value, other.value]

    assert asyncio.run(scenario()) == [None, "later", "other-root"]


def test_kv_errors_reach_every_waiter_and_are_not_cached() -> None:
    cache = RegionKV("SJC")
    calls: list[int] = []

    async def load() -> tuple[Any, int] | None:
        calls.append(1)
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise ContractError("broken")
        return "fixed", 5

    async def scenario() -> tuple[list[Any], Any]:
        results = await asyncio.gather(
            *(cache.read("r/", "k", load, ttl_s=30, miss_ms=0) for _ in range(3)),
            return_exceptions=True,
        )
        retry = await cache.read("r/", "k", load, ttl_s=30, miss_ms=0)
        return results, retry.value

    results, retry = asyncio.run(scenario())
    assert all(isinstance(r, ContractError) for r in results)
    assert retry == "fixed"


def test_kv_miss_latency_is_paid_on_a_miss_only() -> None:
    cache = RegionKV("SJC", rng=random.Random(1))

    async def load() -> tuple[Any, int] | None:
        return True, 1

    async def scenario() -> tuple[KVRead, KVRead]:
        miss = await cache.read("r/", "n", load, ttl_s=30, miss_ms=40)
        hit = await cache.read("r/", "n", load, ttl_s=30, miss_ms=40)
        return miss, hit

    miss, hit = asyncio.run(scenario())
    assert (miss.hit, hit.hit) == (False, True)
    assert miss.kv_ms >= 40  # a lower bound: the miss latency was paid, however loaded the machine


def test_kv_byte_budget_evicts_least_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv_module, "ENTRY_OVERHEAD_BYTES", 0)
    cache = RegionKV("SJC", max_bytes=100)
    cache.put("r/", "a", "A", 40, 60)
    cache.put("r/", "b", "B", 40, 60)
    assert cache.peek("r/", "a") == "A"  # a is now the most recently used
    cache.put("r/", "c", "C", 40, 60)
    assert (cache.peek("r/", "a"), cache.peek("r/", "b"), cache.peek("r/", "c")) == ("A", None, "C")
    assert cache.size_bytes == 80
    cache.put("r/", "huge", "H", 101, 60)
    assert cache.peek("r/", "huge") is None
    assert len(cache) == 2


def test_miss_delay_has_small_non_negative_jitter() -> None:
    rng = random.Random(7)
    delays = [miss_delay_ms(100, rng) for _ in range(200)]
    assert min(delays) >= 100
    assert max(delays) <= 105
    assert len(set(delays)) > 1
    assert miss_delay_ms(0, rng) == 0


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [("5xx_rate", "0.25", 0.25), ("latency_ms", 100, 100.0), ("kv_miss_ms.IAD", "0", 0.0)],
)
def test_fault_values_accepted(key: str, value: object, expected: float) -> None:
    assert parse_fault_value(key, value, COLOS) == expected


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("5xx_rate", "1.5"),
        ("5xx_rate", True),
        ("latency_ms", "-1"),
        ("latency_ms", "nan"),
        ("bucket_latency_ms", 60_001),
        ("kv_miss_ms.FRA", 5),
        ("kv_miss_ms", 5),
        ("typo", 1),
        ("latency_ms", [1]),
    ],
)
def test_fault_values_refused(key: str, value: object) -> None:
    with pytest.raises(UsageError):
        parse_fault_value(key, value, COLOS)


def test_fault_assignments_and_updates() -> None:
    faults = parse_fault_assignments(["5xx_rate=0.5", "latency_ms = 20"], COLOS)
    assert faults == {"5xx_rate": 0.5, "latency_ms": 20.0}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_fault_assignments(["5xx_rate"], COLOS)
    updated = apply_fault_update(faults, {"5xx_rate": None, "kv_miss_ms.SJC": 9}, COLOS)
    assert updated == {"latency_ms": 20.0, "kv_miss_ms.SJC": 9.0}
    assert apply_fault_update(updated, {"clear": True, "latency_ms": 1}, COLOS) == {
        "latency_ms": 1.0
    }
    assert faults == {"5xx_rate": 0.5, "latency_ms": 20.0}  # the input is never mutated
    with pytest.raises(UsageError):
        apply_fault_update(faults, {"bogus": None}, COLOS)


def test_token_bucket_allows_a_burst_then_refills() -> None:
    bucket = TokenBucket(tokens=3, updated_at=0.0)
    waits = [bucket.take(0.0, rate_per_s=0.5, burst=3) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(2.0)
    assert bucket.take(2.0, rate_per_s=0.5, burst=3) == 0.0


def test_alert_rows_are_validated_and_capped() -> None:
    assert parse_alert_rows([]) == []
    rows = parse_alert_rows([{"id": i, "v": "x" * 500, "nested": {"a": [1]}} for i in range(40)])
    assert len(rows) == 20
    assert rows[0] == {"id": 0, "v": "x" * 200, "nested": '{"a": [1]}'}
    # `rows: null` is not an array: found by conformance's negative-data check (it was a 202).
    for bad in (None, "text", [1, 2], [{"ok": 1}, "no"]):
        with pytest.raises(ContractError):
            parse_alert_rows(bad)


def test_status_summary_orders_checks_and_finds_silent_tenants() -> None:
    now = 1_700_000_000.0
    checks = {
        "old": CheckStats(
            count=1, tenants={"b"}, first_seen=now - 50, last_seen=now - 50, last_message="o"
        ),
        "new": CheckStats(
            count=3, tenants={"c", "a"}, first_seen=now - 90, last_seen=now - 1, last_message="n"
        ),
    }
    heartbeats = {"gone": now - SILENT_AFTER_S - 1, "edge": now - SILENT_AFTER_S, "fresh": now - 5}
    summary = summarize_status(checks, heartbeats, now)
    assert list(summary["checks"]) == ["new", "old"]
    assert summary["checks"]["new"]["tenants"] == ["a", "c"]
    assert summary["checks"]["new"]["tenant_count"] == 2
    assert summary["checks"]["new"]["first_seen"] == iso_time(now - 90)
    assert summary["alert_count"] == 4
    assert [t["tenant"] for t in summary["silent_tenants"]] == ["gone"]
    assert summary["reporting_tenants"] == ["edge", "fresh"]


def test_status_page_draws_the_book_with_the_one_renderer() -> None:
    # Writer then reader: the book's summary is what the field page's rows and pictures read.
    now = 1_700_000_000.0
    checks = {
        "<b>x</b>": CheckStats(
            count=2, tenants={"t"}, first_seen=now - 60, last_seen=now, last_message="a&b"
        )
    }
    heartbeats = {"gone": now - SILENT_AFTER_S - 3600, "here": now - 60}
    page = render_status_page({"root": "r/", **summarize_status(checks, heartbeats, now)}, now)
    assert "<title>Sync status</title>" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "a&amp;b" in page and "a&b" not in page
    assert 'id="passes"' not in page  # the Worker has no ci-loop history to draw
    assert page.index('id="alerts"') < page.index('id="silent"') < page.index('id="checks"')
    table = page[page.index('id="checks"') :]
    assert table.index("&lt;b&gt;x&lt;/b&gt;") < table.index("silent tenant gone")  # newest first
    assert table.count('data-status="fail"') == 2
    assert "reporting: here" in page
    empty = render_status_page(summarize_status({}, {}, now), now)
    assert "no alert in the last 7 days" in empty
    assert "0 silent for longer than 12 h" in empty
    assert "no alerts recorded" in empty


def test_select_root() -> None:
    regions = (RegionSpec(colo="SJC", miss_ms=1),)
    open_config = WorkerConfig(root="live/", ci_root="ci/", regions=regions, allow_root_header=True)
    closed = WorkerConfig(root="live/", ci_root="ci/", regions=regions)
    assert select_root(None, open_config) == "live/"
    assert select_root("live/", closed) == "live/"
    assert select_root("ci/abc1234/", open_config) == "ci/abc1234/"
    for bad in ("ci/", "ci/ABC1234/", "ci/abc1234/more/", "other/"):
        with pytest.raises(ApiError) as caught:
            select_root(bad, open_config)
        assert caught.value.status == 400
    with pytest.raises(ApiError):
        select_root("ci/abc1234/", closed)


def test_server_timing_names_only_what_happened() -> None:
    assert server_timing(Timing(), 1.234) == "total;dur=1.23"
    full = Timing(kv_ms=0.5, bucket_ms=3.0, bucket_used=True, fault_ms=10)
    assert (
        server_timing(full, 14) == "kv;dur=0.50, bucket;dur=3.00, fault;dur=10.00, total;dur=14.00"
    )


def test_worker_secrets_stay_out_of_the_repr() -> None:
    config = WorkerConfig(
        root="r/", ci_root="c/", regions=(), tenant_secret="s3cr3t", admin_token="t0k3n"
    )
    assert "s3cr3t" not in repr(config)
    assert "t0k3n" not in repr(config)


def test_parse_options_defaults(tmp_path: Path) -> None:
    options = parse_options(["--ready-file", str(tmp_path / "r.json")])
    assert options.colos == ("SJC", "IAD", "FRA", "SIN", "GRU")
    assert dict(options.miss_ms) == {"SJC": 30, "IAD": 40, "FRA": 60, "SIN": 90, "GRU": 120}
    assert options.write_prefixes == ("snappy-os/", "snappy-os-ci/")
    assert (options.allow_root_header, options.sandbox_control) == (False, False)
    custom = parse_options(
        [
            "--ready-file",
            "r",
            "--regions",
            "ams,SJC",
            "--kv-miss-ms",
            "AMS=5",
            "--fault",
            "5xx_rate=0.1",
            "latency_ms=3",
            "--write-prefix",
            "a/",
            "b/",
            "--write-prefix",
            "c/",
        ]
    )
    assert custom.colos == ("AMS", "SJC")
    assert dict(custom.miss_ms) == {"AMS": 5.0, "SJC": 30.0}
    assert dict(custom.faults) == {"5xx_rate": 0.1, "latency_ms": 3.0}
    assert custom.write_prefixes == ("a/", "b/", "c/")


@pytest.mark.parametrize(
    "args",
    [
        ["--fault", "bogus=1"],
        ["--fault", "5xx_rate=2"],
        ["--fault", "latency_ms"],
        ["--fault", "kv_miss_ms.ZZZ=5"],
        ["--regions", "SJC,XX"],
        ["--regions", "SJC,SJC"],
        ["--regions", ","],
        ["--kv-miss-ms", "AMS=5"],
        ["--kv-miss-ms", "SJC=-1"],
        ["--kv-miss-ms", "SJC"],
        ["--host", "192.0.2.1"],
        ["--host", "example.org"],
        ["--root", "/abs/"],
        ["--ci-root", "no-slash"],
        ["--write-prefix", "no-slash"],
        ["--write-prefix", "a/../b/"],
        ["--no-such-flag"],
        [],
    ],
)
def test_parse_options_refusals(args: list[str]) -> None:
    argv = ["--ready-file", "r.json", *args] if args else []
    with pytest.raises(UsageError):
        parse_options(argv)


def test_colo_and_miss_parsers() -> None:
    assert parse_colos(" sjc , fra ") == ("SJC", "FRA")
    assert parse_miss_ms("FRA=1.5", ("SJC", "FRA")) == {"SJC": 30.0, "FRA": 1.5}
    assert parse_miss_ms("", ("XYZ",)) == {"XYZ": 50.0}


def test_ready_file_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "ready.json"
    path.write_text("old")
    path.chmod(0o644)
    write_ready_file(path, {"pid": 1})
    assert path.read_text() == '{"pid": 1}\n'
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["ready.json"]
