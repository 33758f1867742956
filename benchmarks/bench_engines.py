"""Engine benchmark: sustained open-model rate of the built-in engine and of Locust (--processes 2).

Starts one sandbox and drives GET /install on a fixed schedule (latency counted from the intended
send time, as the gate does) at a few offered rates, first with the built-in aiohttp engine in this
process, then with the Locust engine (master + 2 local workers), then measures the closed-loop
ceiling with `wrk` on the same endpoint. Prints, for each: requests/s achieved, client CPU and p95.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sync_ci.gates import histogram, load
from sync_ci.gates.http import read_only_policy
from sync_ci.gates.locust_engine import combine_load, run_locust
from sync_ci.gates.locust_plan import EngineJob
from sync_ci.gates.outcome import PhaseOutcome
from sync_ci.gates.scenario import LoadScenario
from sync_ci.sandbox.launcher import start_sandbox

# Installs only: every engine and wrk hit the same endpoint, and nothing is written (read-only).
SCENARIO = LoadScenario(installs=1000, pushes=0, tenants=1)
POLICY = read_only_policy()
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("SYNC_CI %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(95), e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One engine at one offered rate."""

    engine: str
    offered: float
    achieved: float
    p95_ms: float
    raw_p95_ms: float
    max_lag_ms: float
    cpu_s: float
    process_cpu_s: float
    requests: int
    failures: int

    def keeps_up(self) -> bool:
        """True when the engine delivered the offered rate without building a backlog."""
        return self.failures == 0 and self.achieved >= 0.95 * self.offered and self.p95_ms < 100


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _step(engine: str, phase: PhaseOutcome, process_cpu_s: float) -> Step:
    install = phase.ops["install"]
    corrected = histogram.summarize(histogram.decode(install.histogram))
    raw = histogram.summarize(histogram.decode(phase.raw["install"])) if phase.raw else corrected
    return Step(
        engine=engine,
        offered=phase.rate,
        achieved=install.ok / phase.wall_s if phase.wall_s else 0.0,
        p95_ms=corrected.p95_ms,
        raw_p95_ms=raw.p95_ms,
        max_lag_ms=phase.max_lag_ms,
        cpu_s=phase.cpu_s,
        process_cpu_s=process_cpu_s,
        requests=install.ok,
        failures=install.planned - install.ok,
    )


def run_builtin(url: str, rate: float, duration_s: float) -> Step:
    """The built-in engine's open model, in this process."""
    load.ensure_descriptors(4096)
    cpu0 = time.process_time()
    phase = asyncio.run(
        load.run_open_model(
            SCENARIO, "", url, policy=POLICY, rate=rate, duration_s=duration_s, timeout_s=30
        )
    )
    return _step("builtin (aiohttp, 1 process)", phase, time.process_time() - cpu0)


def run_locust_engine(url: str, rate: float, duration_s: float, workers: int) -> Step:
    """The Locust engine's open model: master + `workers` local worker processes."""
    job = EngineJob(
        gate="load",
        base_url=url,
        timeout_s=30,
        scenario=SCENARIO.to_json(),
        rate=rate,
        duration_s=duration_s,
        burst=False,
    )
    cpu0 = _children_cpu()
    outcome = run_locust(
        job, expect_workers=workers, local_workers=workers, expect_wait_s=30, policy=POLICY
    )
    phases = {p.phase: p for p in combine_load(outcome)}
    return _step(f"locust --processes {workers}", phases["open"], _children_cpu() - cpu0)


def run_wrk(wrk: str, url: str, duration_s: float, connections: int, workdir: Path) -> Step:
    """The closed-loop ceiling: wrk with 2 threads as fast as the Worker answers."""
    script = workdir / "p95.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    cpu0 = _children_cpu()
    done = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{duration_s:g}s", "-s", str(script), f"{url}/install"],
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
    )
    cpu = _children_cpu() - cpu0
    match = re.search(r"SYNC_CI (\d+) (\d+) (\d+) (\d+)", done.stdout)
    if not match:
        raise SystemExit(f"wrk printed no summary: {done.stdout[-300:]} {done.stderr[-300:]}")
    requests, duration_us, p95_us, errors = (int(g) for g in match.groups())
    return Step(
        engine=f"wrk -t2 -c{connections} (ceiling)",
        offered=0.0,
        achieved=requests / (duration_us / 1e6),
        p95_ms=p95_us / 1000,
        raw_p95_ms=p95_us / 1000,
        max_lag_ms=0.0,
        cpu_s=cpu,
        process_cpu_s=cpu,
        requests=requests,
        failures=errors,
    )


def render(steps: Sequence[Step]) -> str:
    """Render the steps as a plain table."""
    head = (
        f"{'engine':32}{'offered/s':>10}{'achieved/s':>11}{'p95 ms':>9}{'raw p95':>9}"
        f"{'max lag ms':>11}{'CPU s':>8}{'proc CPU s':>11}{'ms CPU/1k':>10}{'fails':>7}"
    )
    lines = [head]
    for s in steps:
        per_k = s.process_cpu_s * 1e6 / max(s.requests, 1)
        lines.append(
            f"{s.engine:32}{s.offered:>10.0f}{s.achieved:>11.0f}{s.p95_ms:>9.1f}{s.raw_p95_ms:>9.1f}"
            f"{s.max_lag_ms:>11.1f}{s.cpu_s:>8.2f}{s.process_cpu_s:>11.2f}{per_k:>10.0f}{s.failures:>7}"
        )
    return "\n".join(lines)


def sustained(steps: Sequence[Step], engine: str) -> float:
    """The highest offered rate the engine kept up with (0 when none)."""
    return max((s.offered for s in steps if s.engine == engine and s.keeps_up()), default=0.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Step each engine through the offered rates against one sandbox, then run wrk; print a table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_engines")
    parser.add_argument(
        "--rates", default="1000,2000,4000", help="offered requests/s, ascending, comma-separated"
    )
    parser.add_argument("--step-s", type=float, default=3.0, help="seconds per offered rate")
    parser.add_argument("--workers", type=int, default=2, help="Locust local worker processes")
    parser.add_argument("--connections", type=int, default=100, help="wrk connections")
    args = parser.parse_args([] if argv is None else argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    wrk = shutil.which("wrk")
    steps: list[Step] = []
    with start_sandbox() as sandbox, tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        url = sandbox.info.worker.url
        warm_up = load.run_open_model(SCENARIO, "", url, policy=POLICY, rate=200, duration_s=0.5)
        asyncio.run(warm_up)
        # An engine that fell behind at one rate only queues more at the next: stop stepping it.
        for rate in rates:
            steps.append(run_builtin(url, rate, args.step_s))
            if not steps[-1].keeps_up():
                break
        for rate in rates:
            steps.append(run_locust_engine(url, rate, args.step_s, args.workers))
            if not steps[-1].keeps_up():
                break
        if wrk:
            steps.append(run_wrk(wrk, url, args.step_s * len(rates), args.connections, Path(tmp)))
    print(
        f"open model, GET /install on the sandbox Worker, {args.step_s:g} s per offered rate; "
        "p95 counts from the intended send time (raw p95: from the actual send)"
    )
    print(render(steps))
    names = sorted({s.engine for s in steps if s.offered})
    for name in names:
        print(f"sustained (kept up, p95 < 100 ms): {name}: {sustained(steps, name):.0f}/s")
    if not wrk:
        print("wrk not found (apt-get install -y wrk); ceiling skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
