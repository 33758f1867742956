"""`sync-ci gate ...` end to end against the sandbox: judged honestly when good, fails on faults.

The sandbox conforms, but this machine may be loaded: a healthy run must measure everything with no
errors and judge each speed row by its numbers (tests.gates.verdicts), not necessarily pass.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from sync_ci import __version__, guards
from sync_ci.cli import main
from sync_ci.config import Settings
from sync_ci.store import endpoint_from_settings, open_store
from tests.gates.casts import write_passing_casts
from tests.gates.verdicts import assert_honest, judge


def document(path: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def rows(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    results: list[dict[str, object]] = doc["results"]  # type: ignore[assignment]
    return {str(r["id"]): r for r in results}


def test_load_gate_passes_on_the_sandbox(
    gate_env: dict[str, str], sandbox_settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "load.json"
    code = main(["gate", "load", "-q", "--json", str(out)])
    # Every push named this run's CI prefix: 100 tenants' states there, none in the live root.
    store = open_store(endpoint_from_settings(sandbox_settings), guards.read_only_policy())
    keys = [o.key for o in store.list(f"{sandbox_settings.ci_prefix}tenants/")]
    assert len(keys) == 100 and all(k.endswith("/state.json") for k in keys)
    live = [o.key for o in store.list(f"{sandbox_settings.live_root}tenants/gate-")]
    assert live == []
    doc = document(out)
    assert_honest(doc, code)
    assert doc["suite"] == "gate.load"
    install = rows(doc)["load.burst.install.p95_ms"]["observed"]
    assert install["count"] == 1000 and install["ok"] == 1000  # type: ignore[index]
    assert rows(doc)["load.burst.push.p95_ms"]["observed"]["ok"] == 100  # type: ignore[index]
    phases = doc["extra"]["phases"]  # type: ignore[index]
    assert phases["burst"]["ops"]["install"]["histogram"]


def test_load_gate_fails_on_5xx_and_names_it(
    gate_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gate", "load", "-q", "--fault", "5xx_rate=0.01"]) == 1
    out = capsys.readouterr().out
    assert "load.burst.5xx" in out and "breached load.5xx" in out


def test_load_gate_fails_on_added_latency(
    gate_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gate", "load", "-q", "--fault", "latency_ms=2500"]) == 1
    out = capsys.readouterr().out
    assert "breached load.install.p95_ms < 2000 ms" in out


def test_faults_are_lifted_and_processes_and_open_model_run(
    gate_env: dict[str, str], tmp_path: Path
) -> None:
    assert main(["gate", "load", "-q", "--fault", "5xx_rate=1"]) == 1
    out = tmp_path / "open.json"
    args = ["--processes", "2", "--rate", "200", "--duration", "0.5", "--json", str(out)]
    code = main(["gate", "load", "-q", *args])
    assert_honest(document(out), code)
    results = rows(document(out))
    assert results["load.burst.start_spread_ms"]["observed"]["processes"] == 2  # type: ignore[index]
    open_install: Any = results["load.open.install.p95_ms"]
    open_push: Any = results["load.open.push.p95_ms"]
    assert "from intended send time" in str(open_install["detail"])
    assert open_install["observed"]["planned"] + open_push["observed"]["planned"] == 100


def test_loosening_is_refused_before_anything_runs(
    gate_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gate", "load", "--threshold", "load.push.p95_ms=6000"]) == 2
    assert main(["gate", "latency", "--samples", "10"]) == 2
    assert main(["gate", "load", "--rate", "100"]) == 2
    err = capsys.readouterr().err
    assert "cannot be loosened" in err and "never shrunk" in err


@pytest.fixture
def dead_sandbox(gate_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ready file whose Worker listens nowhere (the sandbox is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ready = json.loads(Path(gate_env["SYNC_CI_SANDBOX"]).read_text(encoding="utf-8"))
    ready["worker"]["url"] = f"http://127.0.0.1:{port}"
    for region in ready["worker"]["regions"]:
        region["url"] = f"http://127.0.0.1:{port}"
    dead = tmp_path / "dead.json"
    dead.write_text(json.dumps(ready), encoding="utf-8")
    dead.chmod(0o600)
    monkeypatch.setenv("SYNC_CI_SANDBOX", str(dead))
    return dead


def test_target_down_is_exit_3(dead_sandbox: Path, tmp_path: Path) -> None:
    out = tmp_path / "down.json"
    assert main(["gate", "load", "-q", "--json", str(out)]) == 3
    assert document(out)["extra"]["unmeasured"] is True  # type: ignore[index]
    assert main(["gate", "latency", "-q"]) == 3


def test_load_results_merge_across_machines(gate_env: dict[str, str], tmp_path: Path) -> None:
    a, b, merged = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "m.json"
    for path in (a, b):
        code = main(["gate", "load", "-q", "--json", str(path)])
        assert_honest(document(path), code)
    code = main(["gate", "load", "-q", "--merge", str(a), str(b), "--json", str(merged)])
    assert_honest(document(merged), code)
    install = rows(document(merged))["load.burst.install.p95_ms"]["observed"]
    assert install["count"] == 2000 and install["planned"] == 2000  # type: ignore[index]
    # A merge whose parts fall short of the scenario fails as missing samples.
    part = document(a)
    part["extra"]["phases"]["burst"]["ops"]["install"]["planned"] = 400  # type: ignore[index]
    part["extra"]["phases"]["burst"]["ops"]["install"]["ok"] = 400  # type: ignore[index]
    short = tmp_path / "short.json"
    short.write_text(json.dumps(part), encoding="utf-8")
    short_out = tmp_path / "short-merged.json"
    assert main(["gate", "load", "-q", "--merge", str(short), "--json", str(short_out)]) == 1
    missing: Any = rows(document(short_out))["load.burst.missing"]["observed"]
    assert missing["value"] == 600
    assert main(["gate", "load", "-q", "--merge", str(tmp_path / "none.json")]) == 2


def test_latency_gate_passes_and_merges(gate_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "lat.json"
    code = main(["gate", "latency", "-q", "--json", str(out)])
    doc = document(out)
    assert_honest(doc, code)
    regions = doc["extra"]["regions"]  # type: ignore[index]
    assert len(regions) == 5
    assert all(r["ok"] == 200 and r["other_colos"] == {} for r in regions.values())
    # Split into two machines' files (3 + 2 regions): each alone fails, together they pass.
    names = sorted(regions)
    halves = []
    for index, chosen in enumerate((names[:3], names[3:])):
        part = json.loads(json.dumps(doc))
        part["extra"]["regions"] = {n: regions[n] for n in chosen}
        part["started_at"] = f"2026-01-0{index + 1}T06:00:00Z"  # the machines began apart
        path = tmp_path / f"half{index}.json"
        path.write_text(json.dumps(part), encoding="utf-8")
        halves.append(str(path))
    half = tmp_path / "half-merged.json"
    assert main(["gate", "latency", "-q", "--merge", halves[0], "--json", str(half)]) == 1
    assert rows(document(half))["latency.regions"]["status"] == "fail"
    # Merged exactly, the two halves give back the whole run's rows and its verdict.
    whole = tmp_path / "whole.json"
    assert main(["gate", "latency", "-q", "--merge", *halves, "--json", str(whole)]) == code
    merged_rows = rows(document(whole))
    assert {i: (r["status"], r["observed"]) for i, r in merged_rows.items()} == {
        i: (r["status"], r["observed"]) for i, r in rows(doc).items()
    }
    # The merged run began when its earliest part did, not when the merge ran.
    assert document(whole)["started_at"] == "2026-01-01T06:00:00Z"


def test_latency_gate_names_the_slow_region(
    gate_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "slow.json"
    args = ["gate", "latency", "-q", "--fault", "kv_miss_ms.FRA=600", "--concurrency", "50"]
    assert main([*args, "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "latency.region.fra" in printed and "breached latency.region.p95_ms" in printed
    # FRA's every cold read waited out the injected 600 ms; the other regions were judged on
    # their own numbers (on a loaded machine they may be slow too, but never for FRA's fault).
    results = rows(document(out))
    fra: Any = results.pop("latency.region.fra")
    assert fra["status"] == "fail" and fra["observed"]["p50_ms"] >= 600
    assert "breached latency.region.p95_ms" in str(fra["detail"])
    judge(results.values())


@pytest.mark.slow
def test_gate_all_runs_the_three(
    gate_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    casts = write_passing_casts(tmp_path / "casts", __version__)
    out = tmp_path / "all.json"
    code = main(["gate", "all", "--casts", str(casts), "--json", str(out)])
    printed = capsys.readouterr().out
    for row in ("load.burst.install.p95_ms", "latency.region.gru", "platforms.macos"):
        assert row in printed
    assert document(out)["suite"] == "gate.all"
    assert_honest(document(out), code)
    shutil.copy(casts / "ubuntu.cast", casts / "macos.cast")
    broken = tmp_path / "broken.json"
    assert main(["gate", "all", "-q", "--casts", str(casts), "--json", str(broken)]) == 1
    assert "platforms.macos" in capsys.readouterr().out
    assert rows(document(broken))["platforms.macos"]["status"] == "fail"
