"""Python Worker vs workerd Worker: sandbox start and a full write smoke, interleaved, one run.

Each round starts a fresh sandbox per runtime (store, seeded root, Worker ready), runs the write
smoke against it and stops it; the two runtimes alternate so machine load hits both alike.
Prints median and max per runtime and the workerd/python ratio; `--load` also runs the load
gate's burst (`sync-ci gate load`) in every round against each runtime and prints its verdict,
install and push p95, 5xx and errors per round, with the load average the round started under.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sync_ci.attachment import SUITE, open_target
from sync_ci.config import load_settings
from sync_ci.errors import SettingsError
from sync_ci.sandbox.launcher import start_sandbox, write_ready_file
from sync_ci.sandbox.workerd import RUNTIMES, Runtime, check_runtime
from sync_ci.smoke import run_smoke

REPO = Path(__file__).resolve().parents[1]
LOAD_ROWS = ("install.p95_ms", "push.p95_ms", "5xx", "errors")


def sandbox_env(runtime: Runtime, workdir: Path, ready: Path) -> dict[str, str]:
    """The environment that attaches a command to the sandbox `ready` names."""
    (workdir / "empty.toml").touch()
    return {
        "HOME": str(workdir),
        "SYNC_CI_CONFIG": str(workdir / "empty.toml"),
        "SYNC_CI_SANDBOX": str(ready),
        "SYNC_CI_TARGET": "sandbox",
        "SYNC_CI_STATE_DIR": str(workdir / "state"),
        "SYNC_CI_MIRROR_DIR": str(workdir / f"mirror-{runtime}"),
    }


def one_round(runtime: Runtime, workdir: Path, load: bool) -> tuple[float, float, bool, str]:
    """Start a sandbox on `runtime`, run the write smoke (and the load gate when asked)."""
    started = time.perf_counter()
    with start_sandbox(runtime=runtime) as sandbox:
        up = time.perf_counter() - started
        ready = write_ready_file(sandbox.info, workdir / f"{runtime}.json")
        env = sandbox_env(runtime, workdir, ready)
        with open_target(load_settings(env=env), SUITE) as settings:
            smoke_started = time.perf_counter()
            report = run_smoke(settings, mode="write")
            smoked = time.perf_counter() - smoke_started
        burst = load_gate(env, workdir / f"load-{runtime}.json") if load else ""
    return up, smoked, report.ok, burst


def load_gate(env: dict[str, str], out: Path) -> str:
    """Run `sync-ci gate load` against the attached sandbox; return its verdict and main rows."""
    load_average = os.getloadavg()[0]
    full_env = {**env, "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "sync_ci", "gate", "load", "-q", "--json", str(out)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=env["HOME"],
    )
    if not out.exists():
        return f"exit {done.returncode}: {done.stderr.strip()[:200]}"
    rows = {r["id"]: r for r in json.loads(out.read_text())["results"]}
    out.unlink()
    shown = [
        f"{rid.removeprefix('load.burst.')} {row['status']}: {row.get('detail', '')}"
        for rid, row in rows.items()
        if rid.removeprefix("load.burst.") in LOAD_ROWS or row["status"] != "pass"
    ]
    return f"load average {load_average:.1f}, exit {done.returncode}; " + "; ".join(shown)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rounds and print the table; exit 3 when workerd cannot run here."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_workerd")
    parser.add_argument("--rounds", type=int, default=3, help="sandboxes per runtime (default 3)")
    parser.add_argument("--load", action="store_true", help="also run the load gate's burst")
    args = parser.parse_args(argv)
    try:
        check_runtime("workerd")
    except SettingsError as exc:
        print(f"could not measure: {exc}")
        return 3
    samples: dict[str, list[tuple[float, float, bool, str]]] = {r: [] for r in RUNTIMES}
    with tempfile.TemporaryDirectory(prefix="bench-workerd-") as tmp:
        for index in range(args.rounds):
            for runtime in RUNTIMES if index % 2 == 0 else tuple(reversed(RUNTIMES)):
                samples[runtime].append(one_round(runtime, Path(tmp), args.load))
    print(
        f"{'runtime':<8} {'start med':>10} {'start max':>10} {'smoke med':>10} "
        f"{'smoke max':>10} {'smokes ok':>10}"
    )
    medians = {}
    for name, rows in samples.items():
        starts, smokes = [r[0] for r in rows], [r[1] for r in rows]
        medians[name] = (statistics.median(starts), statistics.median(smokes))
        print(
            f"{name:<8} {medians[name][0]:>9.2f}s {max(starts):>9.2f}s "
            f"{medians[name][1]:>9.2f}s {max(smokes):>9.2f}s "
            f"{sum(r[2] for r in rows):>5}/{len(rows)}"
        )
    py, wd = medians["python"], medians["workerd"]
    print(f"workerd/python: start {wd[0] / py[0]:.1f}x, write smoke {wd[1] / py[1]:.1f}x")
    for name, rows in samples.items():
        for index, row in enumerate(rows):
            if row[3]:
                print(f"load gate on {name}, round {index + 1}: {row[3]}")
    return 0 if all(r[2] for rows in samples.values() for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
