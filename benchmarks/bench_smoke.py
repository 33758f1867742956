"""Smoke benchmark: the wall and CPU of `nox -R -s smoke_sync`, and what of it is not sync-ci's.

Runs the nox session as CI does (reusing its venv, so installs are not timed, with `--json` so the
phases' own times are known) and, in this process, the ephemeral sandbox's start and stop alone.
Beside the wall it prints, from the same run, the parts sync-ci does not choose:

- the freshness wait: the freshness phase publishes a new generation and must see every region
  serve it; the reference Worker keeps a catalog for its declared `catalog_ttl_s` (3 s), so that
  phase lasts about as long as the TTL whatever the client does;
- the conformance phase: Schemathesis generating and judging its cases against the Worker (its
  import alone is printed as a floor too);
- the sandbox's dependency floor: the CPU of importing what its children and this process must
  import (moto's server, aiohttp's web, boto3), spread over the machine's cores.

What is left after those is the smoke's own cost, printed with its share of the wall. Two shared
cores make wall time follow the load, so the load average is printed beside every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 4.0  # the whole `nox -R -s smoke_sync`
SMOKE_TIMEOUT_S = 600
IMPORT_TIMEOUT_S = 120
# What the sandbox's start must import: the store's child, the Worker's child, this process.
SANDBOX_IMPORTS = ("import moto.server", "import aiohttp.web", "import boto3")
CONFORMANCE_IMPORT = "import schemathesis, hypothesis"
# The floors are measured with the smoke session's own interpreter (the bench session's lacks
# Schemathesis); the first `nox -R -s smoke_sync` of the run has made it.
SMOKE_PYTHON = REPO / ".nox" / "smoke_sync" / "bin" / "python"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class SmokeRun:
    """One `nox -R -s smoke_sync`: its wall, the CPU of every process it ran, its phases' times."""

    wall_s: float
    cpu_s: float
    code: int
    phases_s: float  # the sum of the phases' own durations, as the result document has them
    freshness_s: float  # the freshness phase alone
    conformance_s: float  # the conformance phase alone (0 when it was skipped)


def measure_smoke(nox: Sequence[str]) -> SmokeRun:
    """Run the smoke session once, with `--json`, and read its phases' times back."""
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        result = Path(tmp) / "smoke.json"
        cpu_before = _children_cpu_s()
        started = time.perf_counter()
        done = subprocess.run(
            [*nox, "-R", "-s", "smoke_sync", "--", "--json", str(result), "-q"],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=SMOKE_TIMEOUT_S,
            check=False,
        )
        wall, cpu = time.perf_counter() - started, _children_cpu_s() - cpu_before
        phases, freshness, conformance = phase_times(result)
    return SmokeRun(wall, cpu, done.returncode, phases, freshness, conformance)


def phase_times(result: Path) -> tuple[float, float, float]:
    """(every phase's duration summed, the freshness phase's, the conformance phase's)."""
    try:
        document = json.loads(result.read_text(encoding="utf-8"))
        rows = document["results"]
        durations = {str(row["id"]): float(row["duration_s"]) for row in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return float("nan"), float("nan"), float("nan")
    return (
        sum(durations.values()),
        durations.get("phase:freshness", 0.0),
        durations.get("phase:conformance", 0.0),
    )


def measure_sandbox_start() -> tuple[float, float]:
    """Start and stop the ephemeral sandbox in this process; return (start s, stop s)."""
    from sync_ci.sandbox.launcher import start_sandbox

    started = time.perf_counter()
    sandbox = start_sandbox()
    up = time.perf_counter() - started
    started = time.perf_counter()
    sandbox.stop()
    return up, time.perf_counter() - started


def import_cpu_s(statement: str) -> float:
    """The CPU a fresh interpreter spends on `statement` (interpreter start-up included)."""
    before = _children_cpu_s()
    python = SMOKE_PYTHON if SMOKE_PYTHON.exists() else Path(sys.executable)
    subprocess.run(
        [str(python), "-c", statement],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=IMPORT_TIMEOUT_S,
        check=True,
    )
    return _children_cpu_s() - before


def _nox_command() -> list[str]:
    found = shutil.which("nox")
    return [found] if found else [sys.executable, "-m", "nox"]


def _load() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    """Time the smoke session and the sandbox start; exit 1 if a run fails or misses the target."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_smoke")
    parser.add_argument("--runs", type=int, default=3, help="smoke runs to take the median of")
    args = parser.parse_args([] if argv is None else argv)
    nox = _nox_command()
    starts, stops, runs = [], [], []
    for _ in range(args.runs):
        up, down = measure_sandbox_start()
        starts.append(up)
        stops.append(down)
        run = measure_smoke(nox)
        if run.code != 0:
            print(
                f"nox -R -s smoke_sync exited {run.code}: the run is not healthy", file=sys.stderr
            )
            return 1
        runs.append(run)
    floors = {
        statement: min(import_cpu_s(statement) for _ in range(2)) for statement in SANDBOX_IMPORTS
    }
    cores = os.cpu_count() or 1
    dependency_floor = sum(floors.values()) / cores
    print(f"load average (1/5/15 min) {_load()} on {cores} cores")
    print(
        f"sandbox start median {statistics.median(starts):.2f} s "
        f"(min {min(starts):.2f}), stop median {statistics.median(stops):.2f} s"
    )
    wall = statistics.median(run.wall_s for run in runs)
    phases = statistics.median(run.phases_s for run in runs)
    freshness = statistics.median(run.freshness_s for run in runs)
    conformance = statistics.median(run.conformance_s for run in runs)
    conformance_import = min(import_cpu_s(CONFORMANCE_IMPORT) for _ in range(2))
    print(
        f"nox -R -s smoke_sync: wall median {wall:.2f} s (min {min(r.wall_s for r in runs):.2f}), "
        f"CPU median {statistics.median(r.cpu_s for r in runs):.2f} s over {args.runs} runs; "
        f"its phases {phases:.2f} s"
    )
    for statement, cpu in floors.items():
        print(f"  floor: python -c {statement!r}: {cpu:.2f} s CPU")
    print(f"  floor: python -c {CONFORMANCE_IMPORT!r}: {conformance_import:.2f} s CPU")
    own = wall - freshness - conformance - dependency_floor
    print(
        f"of the wall: freshness phase {freshness:.2f} s (the Worker's declared catalog TTL), "
        f"conformance phase {conformance:.2f} s (Schemathesis; its import {conformance_import:.2f} s), "
        f"sandbox dependency imports {dependency_floor:.2f} s (their CPU over {cores} cores), "
        f"the rest {own:.2f} s ({own / wall:.0%})"
    )
    print(
        f"smoke wall / target: {wall / TARGET_S:.2f} (target {TARGET_S:g} s): "
        f"{'met' if wall <= TARGET_S else 'MISSED'}"
    )
    return 0 if wall <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
