"""A saturated load generator says "could not measure" (exit 3); a slow server still fails (exit 1).

Detection is proven both ways: the client is slowed on purpose (its send hook, or its loop stalled)
and the gate must answer 3 naming the cause and the fix; the same run unslowed must not.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from sync_ci.cli import main
from sync_ci.gates import burst, burst_open, burst_verdict, histogram, load, verdict
from sync_ci.gates.http import push_policy
from sync_ci.gates.outcome import BURST, OPEN, OpStats, PhaseOutcome
from sync_ci.gates.scenario import LoadScenario
from sync_ci.gates.thresholds import resolve
from sync_ci.report import exit_code
from tests.gates.conftest import TINY_SECRET, TinyWorker
from tests.gates.verdicts import assert_honest

CI_ROOT = "snappy-os-ci/0123abc/"
CAUSE = "could not measure: the load generator was the bottleneck"


def document(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def lag_of(*values_ms: float) -> str:
    hist = histogram.new()
    for value in values_ms:
        histogram.record_us(hist, int(value * 1000))
    return histogram.encode(hist)


def phase(name: str, *, spread_ms: float = 5.0, lag: str = "", rate: float = 0.0) -> PhaseOutcome:
    return PhaseOutcome(
        phase=name,
        ops={"install": OpStats(planned=1, ok=1, histogram=lag_of(60))},
        start_first_ns=1_000_000_000,
        start_last_ns=1_000_000_000 + int(spread_ms * 1e6),
        lag=lag,
        rate=rate,
        sent_rate=rate / 3,
    )


def test_a_burst_sent_over_the_spread_limit_is_the_generator_s_limit() -> None:
    table = resolve()
    assert burst_verdict.generator_limit(phase(BURST, spread_ms=20), table) == ""
    why = burst_verdict.generator_limit(phase(BURST, spread_ms=1500), table)
    assert why.startswith("the load generator was the bottleneck") and "1500 ms" in why


def test_an_open_model_lagging_its_schedule_names_the_rate_it_could_offer() -> None:
    table = resolve()
    on_time = phase(OPEN, lag=lag_of(*[1.0] * 99, 400.0), rate=3000)
    assert burst_verdict.generator_limit(on_time, table) == ""  # one hiccup is not saturation
    late = phase(OPEN, lag=lag_of(*[300.0] * 50, *[1.0] * 50), rate=3000)
    why = burst_verdict.generator_limit(late, table)
    assert "300 ms (p95) after their intended time" in why
    assert "highest rate it offered on this machine was 1000/s of the 3000/s asked" in why


def judged(phases: list[PhaseOutcome]) -> tuple[int, dict[str, Any]]:
    table = resolve()
    report = verdict.load_report(
        phases, table, LoadScenario(), target="t", sha="0123abc", duration_s=1.0
    )
    report = burst_verdict.judge_generator(report, phases, table, time.monotonic())
    return int(exit_code(report)), report.to_json()


def stall_open_model(monkeypatch: pytest.MonkeyPatch, at_send: int, stall_s: float) -> None:
    """Stop the client's loop for `stall_s` at its `at_send`-th send: requests due meanwhile
    leave late."""
    calls = [0]

    def send(transport: asyncio.Transport, data: bytes) -> None:
        calls[0] += 1
        if calls[0] == at_send:
            time.sleep(stall_s)
        transport.write(data)

    monkeypatch.setattr(burst_open, "send", send)


def test_a_stalled_client_loop_is_exit_3_not_a_server_breach(
    tiny_worker: TinyWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tiny_worker()["url"])

    async def run(stall_s: float) -> PhaseOutcome:
        if stall_s:
            stall_open_model(monkeypatch, 5, stall_s)
        else:
            monkeypatch.undo()
        return await load.run_open_model(
            LoadScenario(),
            TINY_SECRET,
            url,
            policy=push_policy(CI_ROOT),
            rate=200,
            duration_s=0.5,
            timeout_s=30,
        )

    code, doc = judged([asyncio.run(run(0.8))])
    assert code == 3
    assert doc["results"][0]["id"] == "load.generator"
    assert doc["results"][0]["detail"].startswith(CAUSE)
    assert "--processes N" in doc["results"][0]["detail"]
    speed = [r for r in doc["results"] if r["id"].endswith("p95_ms")]
    assert speed and {r["status"] for r in speed} == {"skip"}  # never blamed on the server
    code, doc = judged([asyncio.run(run(0.0))])
    assert "load.generator" not in {r["id"] for r in doc["results"]}


def slowed_send(delay_s: float) -> Any:
    def send(transport: asyncio.Transport, data: bytes) -> None:
        time.sleep(delay_s)
        transport.write(data)

    return send


@pytest.mark.parametrize(
    ("processes", "delay_s"), [pytest.param("1", 0.0015, id="1"), pytest.param("2", 0.003, id="2")]
)
def test_a_client_too_slow_to_send_the_burst_is_exit_3_naming_the_fix(
    gate_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    processes: str,
    delay_s: float,
) -> None:
    # Forked client processes inherit the slowed hook: proof they run this process's code as is.
    monkeypatch.setattr(burst, "send", slowed_send(delay_s))
    out = tmp_path / "saturated.json"
    code = main(["gate", "load", "-q", "--processes", processes, "--json", str(out)])
    printed = capsys.readouterr()
    assert code == 3, printed.out + printed.err
    doc = document(out)
    assert doc["extra"]["unmeasured"] is True
    generator = doc["results"][0]
    assert generator["id"] == "load.generator" and generator["status"] == "error"
    assert generator["detail"].startswith(CAUSE)
    assert f"its {processes} process(es) took" in generator["detail"]
    assert "--processes N" in generator["detail"] and "--engine locust" in generator["detail"]
    assert CAUSE in printed.out + printed.err
    statuses = {r["id"]: r["status"] for r in doc["results"]}
    assert statuses["load.burst.start_spread_ms"] == "skip"
    assert statuses["load.burst.install.p95_ms"] == "skip"
    assert statuses["load.burst.errors"] == "pass"  # every answer still counted and checked


def test_a_healthy_burst_on_the_sandbox_is_measured_not_unmeasured(
    gate_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "healthy.json"
    code = main(["gate", "load", "-q", "--json", str(out)])
    doc = document(out)
    # The generator kept up, so every row is judged on its numbers: a pass here, unless this
    # loaded machine makes the sandbox Worker itself slower than a threshold (then exit 1, that
    # row alone; tests.gates.verdicts), never exit 3.
    slow = assert_honest(doc, code)
    assert "load.generator" not in {r["id"] for r in doc["results"]}
    assert slow <= {"load.burst.install.p95_ms", "load.burst.push.p95_ms"}


def test_a_slow_server_fails_and_is_not_blamed_on_the_client(
    gate_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "slow.json"
    assert main(["gate", "load", "-q", "--fault", "latency_ms=2200", "--json", str(out)]) == 1
    doc = document(out)
    assert not doc["extra"].get("unmeasured")
    statuses = {r["id"]: r["status"] for r in doc["results"]}
    assert "load.generator" not in statuses
    assert statuses["load.burst.install.p95_ms"] == "fail"
    assert statuses["load.burst.start_spread_ms"] == "pass"


def test_a_saturated_client_still_fails_a_server_that_answers_5xx(
    gate_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 5xx is the target's whatever the client's speed: exit 1, with only the speed rows unjudged.
    monkeypatch.setattr(burst, "send", slowed_send(0.0015))
    out = tmp_path / "saturated-5xx.json"
    assert main(["gate", "load", "-q", "--fault", "5xx_rate=0.01", "--json", str(out)]) == 1
    doc = document(out)
    assert not doc["extra"].get("unmeasured")
    statuses = {r["id"]: r["status"] for r in doc["results"]}
    assert statuses["load.generator"] == "skip"
    assert statuses["load.burst.5xx"] == "fail"
    assert statuses["load.burst.install.p95_ms"] == statuses["load.burst.start_spread_ms"] == "skip"
    assert doc["results"][0]["detail"].startswith("speed not judged: the load generator was")
