"""Judge a gate's result for what is behaviour, on a machine of any speed.

A conforming sandbox on a loaded machine may be slow, so a test of a healthy run never asserts
that the gate passed. It asserts what is behaviour: every planned request measured, no 5xx, no
errors, no wrong answers, every row present; each speed row's verdict agrees with its observed
value against its canonical threshold (the gate judged honestly); and the exit code agrees with
the rows (0, or 1 only when every failing row is a speed row over its threshold).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sync_ci.gates.thresholds import Threshold, canonical
from sync_ci.report import Result

Row = Mapping[str, Any]
# The limits a slow machine can breach on a conforming target; every other limit is behaviour.
SPEED_THRESHOLDS = frozenset(
    {
        "load.install.p95_ms",
        "load.push.p95_ms",
        "load.start_spread_ms",
        "latency.region.p95_ms",
        "latency.region.p99_ms",
    }
)
COUNT_ROWS = ("5xx", "errors", "missing")


def canonical_threshold(data: Mapping[str, Any]) -> Threshold:
    """Return the threshold a row names, asserting it is the canonical one (never loosened)."""
    table = canonical()
    name = str(data["id"])
    assert name in table, f"row names an unknown threshold {name}"
    assert dict(data) == table[name].to_json(), f"{name} is not the canonical limit: {data}"
    return table[name]


def _as_rows(rows: Iterable[Row | Result]) -> list[Row]:
    return [r.to_json() if isinstance(r, Result) else r for r in rows]


def _speed_row(row: Row, threshold: Threshold, value: object) -> list[str]:
    assert isinstance(value, int | float), f"{row['id']}: no observed value ({value!r})"
    return [] if threshold.passes(float(value)) else [threshold.id]


def _load_latency_row(row: Row) -> list[str]:
    observed = row["observed"]
    planned = observed["planned"]
    assert planned > 0, f"{row['id']}: nothing planned"
    clean = {k: observed[k] for k in ("status_5xx", "status_4xx", "network", "other", "invalid")}
    assert clean == dict.fromkeys(clean, 0), f"{row['id']}: {clean} ({observed['first_error']})"
    assert observed["ok"] == observed["count"] == planned, f"{row['id']}: {observed}"
    return _speed_row(row, canonical_threshold(row["threshold"]), observed["p95_ms"])


def _region_row(row: Row) -> list[str]:
    observed, limits = row["observed"], row["threshold"]
    assert observed["planned"] > 0, f"{row['id']}: nothing planned"
    errors = {k: observed[k] for k in ("status_5xx", "status_4xx", "network", "warm", "other_colo")}
    assert errors == dict.fromkeys(errors, 0), f"{row['id']}: {errors}"
    assert observed["ok"] == observed["count"] == observed["planned"], f"{row['id']}: {observed}"
    for name in limits:
        canonical_threshold(limits[name])
    return [
        breach
        for name, key in (("latency.region.p95_ms", "p95_ms"), ("latency.region.p99_ms", "p99_ms"))
        for breach in _speed_row(row, canonical_threshold(limits[name]), observed[key])
    ]


def speed_breaches(row: Row) -> list[str]:
    """Assert a row shows no misbehaviour; return the speed thresholds its numbers breach."""
    name = str(row["id"])
    parts = name.split(".")
    if parts[0] == "load" and name.endswith(".p95_ms"):
        return _load_latency_row(row)
    if parts[0] == "load" and parts[-1] in COUNT_ROWS:
        canonical_threshold(row["threshold"])
        assert row["observed"]["value"] == 0, f"{name}: {row['detail']}"
    elif name == "load.burst.start_spread_ms":
        observed = row["observed"]["start_spread_ms"]
        return _speed_row(row, canonical_threshold(row["threshold"]), observed)
    elif name.startswith("latency.region."):
        return _region_row(row)
    elif name == "latency.overall":
        assert row["observed"]["count"] > 0, row["detail"]
    elif name == "latency.regions":
        canonical_threshold(row["threshold"])
    assert row["status"] == "pass", f"{name} {row['status']}: {row['detail']}"
    return []


def judge(rows: Iterable[Row | Result]) -> set[str]:
    """Assert every row is clean and each verdict agrees with its numbers; return failed rows."""
    failed: set[str] = set()
    for row in _as_rows(rows):
        breaches = speed_breaches(row)
        verdict = "fail" if breaches else "pass"
        assert row["status"] == verdict, f"{row['id']} says {row['status']}: {row['detail']}"
        for breach in breaches:
            assert f"breached {breach}" in row["detail"], f"{row['id']}: {row['detail']}"
        if breaches:
            failed.add(str(row["id"]))
    return failed


def assert_honest(doc: Mapping[str, Any], code: int) -> set[str]:
    """Assert a gate run on a conforming target was judged honestly; return its slow rows.

    On a loaded machine the load generator itself may be what bounded the run: that is honest when
    the run says so (exit 3, a `load.generator` row naming the cause and the fix, no speed row
    judged, nothing else failed), never a FAIL blamed on the target nor a PASS.
    """
    generator = next((r for r in doc["results"] if r["id"] == "load.generator"), None)
    if generator is not None and generator["status"] == "error":
        assert code == 3, f"exit {code} though the generator bounded the run"
        assert "could not measure" in generator["detail"] and "--processes" in generator["detail"]
        others = [r for r in doc["results"] if r is not generator]
        assert all(r["status"] in ("pass", "skip") for r in others), others
        return set()
    extra: Mapping[str, Any] = doc.get("extra", {})
    assert not extra.get("unmeasured"), f"could not measure: {extra.get('reason')}"
    slow = judge(doc["results"])
    assert code == (1 if slow else 0), f"exit {code} with slow rows {sorted(slow)}"
    assert doc["ok"] is (not slow)
    assert doc["counts"]["fail"] == len(slow) and doc["counts"]["error"] == 0
    return slow


def assert_speed_rows_honest(rows: Iterable[Row | Result]) -> None:
    """Assert each load speed row's verdict agrees with its own number, whatever else went wrong."""
    for row in _as_rows(rows):
        name = str(row["id"])
        if not (name.startswith("load.") and name.endswith(("p95_ms", "start_spread_ms"))):
            continue
        key = "start_spread_ms" if name.endswith("start_spread_ms") else "p95_ms"
        value = row["observed"][key]
        breached = value is None or not canonical_threshold(row["threshold"]).passes(float(value))
        assert row["status"] == ("fail" if breached else "pass"), f"{name}: {row['detail']}"


def behaviour_verdicts(rows: Iterable[Row | Result]) -> dict[str, str]:
    """Return the status of every row whose verdict does not depend on the machine's speed."""
    return {
        str(r["id"]): str(r["status"])
        for r in _as_rows(rows)
        if not str(r["id"]).endswith(("p95_ms", "p99_ms", "start_spread_ms"))
        and not str(r["id"]).startswith("latency.region.")
    }
