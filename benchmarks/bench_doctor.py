"""Doctor benchmark: a healthy `sync-ci doctor --silent` against the sandbox vs two floors,
`python -c pass` and `python -c "import requests"` (doctor's HTTP client, its least cost).

Starts a sandbox, arranges a healthy tenant (cron entry for a throwaway user when run as root,
recent pull stamp, mirror in parity), then times the three commands as separate processes,
interleaved, and prints median/p90 wall time and peak RSS (from wait4) with both ratios.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 0.5  # "a few hundred milliseconds at most", over the `python -c pass` floor
REQUESTS_RATIO = 1.3  # doctor at most 1.3x `python -c "import requests"`


# A small launcher does the fork+exec: Linux carries a process's peak RSS across exec, so a child
# forked straight from this (large) process would report at least our own RSS as its peak.
LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - started, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def measure(argv: Sequence[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Run one process; return (wall seconds, peak RSS in KiB, exit code)."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *argv],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    wall, peak, code = done.stdout.split()
    return float(wall), int(peak), int(code)


def _summary(label: str, walls: list[float], rss: list[int]) -> str:
    walls_ms = sorted(w * 1000 for w in walls)
    p90 = walls_ms[min(len(walls_ms) - 1, int(0.9 * len(walls_ms)))]
    return (
        f"{label:<28} wall median {statistics.median(walls_ms):7.1f} ms  p90 {p90:7.1f} ms  "
        f"peak RSS median {statistics.median(rss) / 1024:6.1f} MiB"
    )


def _make_cron_user() -> str:
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("crontab"):
        return ""
    name = f"scibench{secrets.token_hex(3)}"
    done = subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], capture_output=True)
    return name if done.returncode == 0 else ""


def _drop_cron_user(name: str) -> None:
    subprocess.run(["crontab", "-u", name, "-r"], capture_output=True)
    subprocess.run(["userdel", name], capture_output=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 1 when doctor is unhealthy or over budget."""
    parser = argparse.ArgumentParser(prog="bench_doctor")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(list(argv or []))

    from sync_ci.attachment import field_settings
    from sync_ci.config import load_settings
    from sync_ci.field import cron, cron_table, doctor, doctor_local
    from sync_ci.sandbox.launcher import start_sandbox, write_ready_file
    from sync_ci.worker import WorkerClient, WorkerTarget

    work = Path(tempfile.mkdtemp(prefix="sync-ci-bench-doctor-"))
    cron_user = _make_cron_user()
    try:
        with start_sandbox(workdir=work / "sandbox") as sandbox:
            ready = write_ready_file(sandbox.info, work / "ready.json")
            (work / "sync-ci.toml").touch()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_CI_", "AWS_"))}
            env.update(
                {
                    "HOME": str(work),
                    "SYNC_CI_CONFIG": str(work / "sync-ci.toml"),
                    "SYNC_CI_TARGET": "sandbox",
                    "SYNC_CI_SANDBOX": str(ready),
                    "SYNC_CI_SHA": secrets.token_hex(20),
                    "SYNC_CI_STATE_DIR": str(work / "state"),
                    "SYNC_CI_TENANT_ID": "bench-tenant",
                    "PYTHONPATH": str(REPO),
                }
            )
            settings = field_settings(load_settings(env=env, check_remote=False))
            exe = work / "venv" / "bin" / "sync-ci"
            exe.parent.mkdir(parents=True)
            exe.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m sync_ci "$@"\n')
            exe.chmod(0o755)
            doctor_argv = [sys.executable, "-m", "sync_ci", "doctor", "--silent"]
            if cron_user:
                paths = cron.resolve_paths("tenant", exe=str(exe), state_dir=settings.state_dir)
                cron_table.install("tenant", paths, user=cron_user)
                doctor_argv += ["--cron-user", cron_user]
            else:
                print("not root: the cron-entry check is left out of the timed run")
                names = [c.name for c in doctor.CHECKS if c.name != "cron-entry"]
                doctor_argv += names
            doctor_local.record_pull(settings.state_dir)
            target = WorkerTarget(base_url=settings.worker_url, read_only=True, timeout_s=5)
            with WorkerClient(target) as client:
                for name, entry in client.get("/catalog").json()["entries"].items():
                    path = settings.mirror_dir / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(client.get(f"/o/{entry['sha256']}").body)

            commands = {
                "floor": [sys.executable, "-c", "pass"],
                "requests": [sys.executable, "-c", "import requests"],
                "doctor": doctor_argv,
            }
            for argv_ in commands.values():
                measure(argv_, env)  # warm the page cache and .pyc files
            walls: dict[str, list[float]] = {label: [] for label in commands}
            rss: dict[str, list[int]] = {label: [] for label in commands}
            for _ in range(args.runs):
                for label, argv_ in commands.items():
                    wall, peak, code = measure(argv_, env)
                    if code != 0:
                        print(f"{label} exited {code}: the run is not healthy", file=sys.stderr)
                        return 1
                    walls[label].append(wall)
                    rss[label].append(peak)
    finally:
        if cron_user:
            _drop_cron_user(cron_user)
        shutil.rmtree(work, ignore_errors=True)

    print(_summary("python -c pass", walls["floor"], rss["floor"]))
    print(_summary('python -c "import requests"', walls["requests"], rss["requests"]))
    print(_summary("sync-ci doctor --silent", walls["doctor"], rss["doctor"]))
    doctor_ms = statistics.median(walls["doctor"]) * 1000
    floor_ms = statistics.median(walls["floor"]) * 1000
    requests_ms = statistics.median(walls["requests"]) * 1000
    ratio = doctor_ms / requests_ms
    print(
        f"doctor over `import requests`: {ratio:.2f}x (target <= {REQUESTS_RATIO}x): "
        f"{'met' if ratio <= REQUESTS_RATIO else 'MISSED'}"
    )
    print(
        f"doctor over floor: +{doctor_ms - floor_ms:.1f} ms wall "
        f"({doctor_ms / floor_ms:.1f}x), "
        f"+{(statistics.median(rss['doctor']) - statistics.median(rss['floor'])) / 1024:.1f} "
        "MiB RSS; "
        f"budget {BUDGET_S * 1000:.0f} ms"
    )
    # Judge the overhead over the interpreter floor: on a loaded machine both grow together.
    return 0 if doctor_ms - floor_ms <= BUDGET_S * 1000 and ratio <= REQUESTS_RATIO else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
