"""Load-generator benchmark: the gate's 1,100-request burst, measured by our engine and by `hey`.

Starts a sandbox whose Worker adds a fixed latency to every request, then alternates runs of the
gate engine (1,000 GET /install + 100 POST /_push fired together) and of `hey` (the same two
bursts as two concurrent hey processes), and prints p95 per operation, start spread and client
CPU for both, with the difference. Percentiles of both come from the same HdrHistogram code.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sync_ci.contract import ROOT_HEADER
from sync_ci.gates import histogram, load
from sync_ci.gates.http import push_policy
from sync_ci.gates.scenario import LoadScenario, plan_burst, push_request
from sync_ci.sandbox.launcher import start_sandbox

HEY_TIMEOUT_S = 120


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One burst as seen by one client."""

    install_p95_ms: float
    push_p95_ms: float
    spread_ms: float
    cpu_s: float
    failures: int


def _p95(values_us: Sequence[int]) -> float:
    hist = histogram.new()
    for value in values_us:
        histogram.record_us(hist, value)
    return histogram.summarize(hist).p95_ms


def run_gate(url: str, secret: str, ci_root: str, processes: int = 1) -> Run:
    """Fire the burst with the gate engine, in this process or spread over `processes`.

    The pushes go under a fresh `<ci_root><sha>/` of the sandbox, as the gate's own would.
    """
    load.ensure_descriptors(1100 + load.DESCRIPTOR_MARGIN)
    policy = push_policy(f"{ci_root}{secrets.token_hex(4)}/")
    if processes == 1:
        plan = plan_burst(LoadScenario(), secret)
        phase = asyncio.run(load.fire_burst(plan, url, policy=policy, timeout_s=60))
    else:
        job = load.plan_job(LoadScenario(), url, secret, policy=policy, timeout_s=60)
        phase = load.run_load(job, processes=processes)[0]
    install, push = phase.ops["install"], phase.ops["push"]
    return Run(
        install_p95_ms=histogram.summarize(histogram.decode(install.histogram)).p95_ms,
        push_p95_ms=histogram.summarize(histogram.decode(push.histogram)).p95_ms,
        spread_ms=phase.start_spread_ms,
        cpu_s=phase.cpu_s,
        failures=sum(op.planned - op.ok for op in (install, push)),
    )


def _parse_hey_csv(text: str) -> tuple[list[int], list[float], int]:
    """Return (latencies in us, start offsets in s, non-2xx count) from `hey -o csv`."""
    latencies, offsets, failures = [], [], 0
    for row in csv.DictReader(io.StringIO(text)):
        latencies.append(round(float(row["response-time"]) * 1e6))
        offsets.append(float(row["offset"]))
        if not row["status-code"].startswith("2"):
            failures += 1
    return latencies, offsets, failures


def run_hey(hey: str, url: str, secret: str, ci_root: str, workdir: Path) -> Run:
    """Fire the same burst with two concurrent hey processes (installs, pushes)."""
    push = push_request("gate-000", secret, LoadScenario().body_bytes, "hey")
    body = workdir / "push.json"
    body.write_bytes(push.body)
    # hey sends what it is given: name a CI root as the guarded session does for the gate.
    sent = {**push.headers, ROOT_HEADER: f"{ci_root}{secrets.token_hex(4)}/"}
    headers = [
        arg
        for name, value in sent.items()
        if name != "content-type"
        for arg in ("-H", f"{name}: {value}")
    ]
    commands = [
        [hey, "-n", "1000", "-c", "1000", "-t", "60", "-o", "csv", f"{url}/install"],
        [
            hey,
            "-n",
            "100",
            "-c",
            "100",
            "-t",
            "60",
            "-o",
            "csv",
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            str(body),
            *headers,
            f"{url}/_push",
        ],
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate(timeout=HEY_TIMEOUT_S)[0] for p in processes]
    launch_gap_s = time.perf_counter() - started  # informational; hey offsets are per process
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    del launch_gap_s
    install_us, install_offsets, install_failed = _parse_hey_csv(outputs[0])
    push_us, push_offsets, push_failed = _parse_hey_csv(outputs[1])
    offsets = install_offsets + push_offsets
    missing = (1000 - len(install_us)) + (100 - len(push_us))
    return Run(
        install_p95_ms=_p95(install_us),
        push_p95_ms=_p95(push_us),
        spread_ms=(max(offsets) - min(offsets)) * 1000 if offsets else float("inf"),
        cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        failures=install_failed + push_failed + missing,
    )


def _median(runs: Sequence[Run], name: str) -> str:
    values = [getattr(r, name) for r in runs]
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


def main(argv: Sequence[str] | None = None) -> int:
    """Run both clients `--runs` times each against one sandbox; print medians [min-max]."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_load")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=int, default=50, help="fixed latency the Worker adds")
    args = parser.parse_args([] if argv is None else argv)
    hey = shutil.which("hey")
    with (
        start_sandbox(faults={"latency_ms": str(args.latency_ms)}) as sandbox,
        tempfile.TemporaryDirectory(prefix="bench-load-") as workdir,
    ):
        url, secret = sandbox.info.worker.url, sandbox.info.tenant_secret
        ci_root = sandbox.info.ci_root
        run_gate(url, secret, ci_root)  # warm the sandbox's catalog cache and imports
        ours: list[Run] = []
        spread: list[Run] = []
        theirs: list[Run] = []
        for _ in range(args.runs):
            ours.append(run_gate(url, secret, ci_root))
            spread.append(run_gate(url, secret, ci_root, processes=2))
            if hey:
                theirs.append(run_hey(hey, url, secret, ci_root, Path(workdir)))
    print(
        f"burst: 1,000 GET /install + 100 POST /_push (10 KB) against a Worker adding "
        f"{args.latency_ms} ms; median [min-max] of {args.runs} runs each"
    )
    print(
        f"{'':22}{'install p95 ms':>24}{'push p95 ms':>24}{'start spread ms':>24}{'client CPU s':>24}"
    )
    fields = ("install_p95_ms", "push_p95_ms", "spread_ms", "cpu_s")
    print(f"{'gate engine':22}" + "".join(f"{_median(ours, f):>24}" for f in fields))
    print(f"{'gate --processes 2':22}" + "".join(f"{_median(spread, f):>24}" for f in fields))
    failures = sum(r.failures for r in ours + spread)
    if not theirs:
        print("hey not found (apt-get install -y hey); reference skipped")
        return 1 if failures else 0
    print(f"{'hey (2 processes)':22}" + "".join(f"{_median(theirs, f):>24}" for f in fields))
    diff_install = statistics.median(r.install_p95_ms for r in ours) - statistics.median(
        r.install_p95_ms for r in theirs
    )
    diff_push = statistics.median(r.push_p95_ms for r in ours) - statistics.median(
        r.push_p95_ms for r in theirs
    )
    print(f"p95 difference gate - hey: install {diff_install:+.1f} ms, push {diff_push:+.1f} ms")
    failures += sum(r.failures for r in theirs)
    if failures:
        print(f"{failures} requests failed or went missing; the figures above are not comparable")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
