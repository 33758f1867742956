"""Smoke benchmark: the wall and CPU of `nox -R -s smoke_sync` and of the sandbox start inside it.

Runs the nox session as CI does (reusing its venv, so installs are not timed) and, in this process,
the ephemeral sandbox's start and stop alone; prints medians, the CPU the children spent, the load
average beside them (two shared cores make wall time follow the load), and the ratio to the target.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 4.0  # the whole `nox -R -s smoke_sync`
SMOKE_TIMEOUT_S = 600


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_smoke(nox: Sequence[str]) -> tuple[float, float, int]:
    """Run the smoke session once; return (wall s, CPU s of every process it ran, exit code)."""
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    done = subprocess.run(
        [*nox, "-R", "-s", "smoke_sync"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    return time.perf_counter() - started, _children_cpu_s() - cpu_before, done.returncode


def measure_sandbox_start() -> tuple[float, float]:
    """Start and stop the ephemeral sandbox in this process; return (start s, stop s)."""
    from sync_ci.sandbox.launcher import start_sandbox

    started = time.perf_counter()
    sandbox = start_sandbox()
    up = time.perf_counter() - started
    started = time.perf_counter()
    sandbox.stop()
    return up, time.perf_counter() - started


def _nox_command() -> list[str]:
    found = shutil.which("nox")
    return [found] if found else [sys.executable, "-m", "nox"]


def main(argv: Sequence[str] | None = None) -> int:
    """Time the smoke session and the sandbox start; exit 1 if a run fails or misses the target."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_smoke")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args([] if argv is None else argv)
    nox = _nox_command()
    starts, stops, walls, cpus = [], [], [], []
    for _ in range(args.runs):
        up, down = measure_sandbox_start()
        starts.append(up)
        stops.append(down)
        wall, cpu, code = measure_smoke(nox)
        if code != 0:
            print(f"nox -R -s smoke_sync exited {code}: the run is not healthy", file=sys.stderr)
            return 1
        walls.append(wall)
        cpus.append(cpu)
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average (1/5/15 min) {load} on {os.cpu_count()} cores")
    print(
        f"sandbox start median {statistics.median(starts):.2f} s "
        f"(min {min(starts):.2f}), stop median {statistics.median(stops):.2f} s"
    )
    wall = statistics.median(walls)
    print(
        f"nox -R -s smoke_sync: wall median {wall:.2f} s (min {min(walls):.2f}), "
        f"CPU median {statistics.median(cpus):.2f} s over {args.runs} runs"
    )
    print(
        f"smoke wall / target: {wall / TARGET_S:.2f} (target {TARGET_S:g} s): "
        f"{'met' if wall <= TARGET_S else 'MISSED'}"
    )
    return 0 if wall <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
