"""The gates on Locust's distributed runner: master and workers run the scenario; we keep the verdict.

This module never imports locust (which monkey-patches a process with gevent): the Locust master
and workers run as `python -m sync_ci.gates.locust_engine master|worker` subprocesses, and only
those import `sync_ci.gates.locust_master` and `locust_user`. Over 400 lines because the
orchestration, the engine and the subprocesses' entry point share the one command line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.config_env import read_secret
from sync_ci.errors import ExitCode, SyncCIError, UsageError
from sync_ci.gates.locust_plan import (
    ARM_BOUND_S,
    DEFAULT_EXPECT_WAIT_S,
    DEFAULT_MASTER_PORT,
    GATES,
    EngineJob,
    write_document,
)
from sync_ci.sandbox.processes import spawn, stop_process_group

if TYPE_CHECKING:
    from sync_ci.config import Settings
    from sync_ci.gates.http import HttpPolicy
    from sync_ci.gates.load import LoadJob, ProgressFn
    from sync_ci.gates.options import LocustMode, WorkerOptions
    from sync_ci.gates.outcome import PhaseOutcome, RegionOutcome
    from sync_ci.gates.scenario import LatencyScenario

# Starting the master imports Locust and gevent: seconds on a quiet machine, far more under load.
MASTER_START_S = 120.0
SECRET_ENV = "SYNC_CI_TENANT_SECRET"  # noqa: S105  (a variable name, not a secret)


class EngineError(SyncCIError):
    """The Locust engine could not measure (workers missing, lost or failing): nothing judged."""

    exit_code = ExitCode.UNMEASURED


# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReport:
    """One worker's identity and what it measured."""

    id: str
    host: str = ""
    region: str = ""
    samples: int = 0
    result: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOutcome:
    """What the master measured: every worker's report, plus regions no worker could cover."""

    gate: str
    workers: Sequence[WorkerReport]
    same_clock: bool = True
    uncovered: Mapping[str, str] = field(default_factory=dict)

    def worker_samples(self) -> dict[str, dict[str, Any]]:
        """Per-worker sample counts for the result document."""
        return {
            w.id: {"samples": w.samples, "host": w.host, "region": w.region} for w in self.workers
        }


# --- pure planning and combining ----------------------------------------------------------------


def combine_load(outcome: EngineOutcome) -> list[PhaseOutcome]:
    """Merge every worker's phases exactly (histograms merged, counts summed)."""
    from sync_ci.gates.outcome import PhaseOutcome, merge_phase

    by_phase: dict[str, list[PhaseOutcome]] = {}
    for worker in outcome.workers:
        for document in worker.result.get("phases", []):
            phase = PhaseOutcome.from_json(document)
            by_phase.setdefault(phase.phase, []).append(phase)
    if not by_phase:
        raise EngineError("no Locust worker reported a measurement")
    order = {"burst": 0, "open": 1}
    return [
        merge_phase(parts, same_clock=outcome.same_clock)
        for _, parts in sorted(by_phase.items(), key=lambda item: order.get(item[0], 9))
    ]


def combine_latency(
    outcome: EngineOutcome, regions: Sequence[Mapping[str, str]], samples: int
) -> dict[str, RegionOutcome]:
    """Merge every worker's per-region outcomes; a region nobody could probe is unreachable."""
    from sync_ci.gates.outcome import RegionOutcome, merge_regions

    parts = [
        RegionOutcome.from_json(document)
        for worker in outcome.workers
        for document in worker.result.get("regions", [])
    ]
    colos = {r["name"]: r.get("colo", "") for r in regions}
    for name, why in outcome.uncovered.items():
        parts.append(
            RegionOutcome(
                name=name, colo=colos.get(name, "").upper(), planned=samples, unreachable=why
            )
        )
    merged = merge_regions(parts)
    return {name: merged[name] for name in sorted(merged)}


def engine_facts(outcome: EngineOutcome) -> dict[str, Any]:
    """The engine, the worker count and the per-worker sample counts, for the result document."""
    return {
        "engine": "locust",
        "workers": len(outcome.workers),
        "worker_samples": outcome.worker_samples(),
    }


# --- subprocess orchestration (edge) ------------------------------------------------------------


def _module_command(role: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "sync_ci.gates.locust_engine", role, *options]


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], bound_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_size:
            with path.open(encoding="utf-8") as handle:
                loaded: dict[str, Any] = json.load(handle)
            return loaded
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise EngineError(f"the Locust master did not start within {bound_s:g} s")


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _child_env(tenant_secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    if tenant_secret:
        # The environment, not argv: argv is visible to every user of the machine.
        env[SECRET_ENV] = tenant_secret
    return env


def _parse_master_output(document: Mapping[str, Any]) -> EngineOutcome:
    if not document.get("ok"):
        message = str(document.get("error") or "the Locust master failed")
        code = int(document.get("exit", ExitCode.UNMEASURED))
        if code == ExitCode.USAGE:
            raise UsageError(message)
        if code == ExitCode.FAILED:
            from sync_ci.errors import GuardViolation

            raise GuardViolation(message)
        raise EngineError(message)
    workers = [
        WorkerReport(
            id=str(w["id"]),
            host=str(w.get("host", "")),
            region=str(w.get("region", "")),
            samples=int(w.get("samples", 0)),
            result=dict(w.get("result", {})),
        )
        for w in document.get("workers", [])
    ]
    return EngineOutcome(
        gate=str(document["gate"]),
        workers=workers,
        same_clock=bool(document.get("same_clock", False)),
        uncovered={str(k): str(v) for k, v in dict(document.get("uncovered", {})).items()},
    )


def _policy_options(policy: HttpPolicy | None) -> list[str]:
    """The worker subprocess's policy flags: read-only unless it is told where it may write."""
    if policy is None or policy.read_only:
        return []
    return ["--write-root", policy.write_root]


def worker_policy(write_root: str) -> HttpPolicy:
    """The policy a worker subprocess enforces: pushes under `write_root`, or read-only without it."""
    from sync_ci.gates.http import push_policy, read_only_policy

    return push_policy(write_root) if write_root else read_only_policy()


def run_locust(
    job: EngineJob,
    *,
    expect_workers: int,
    local_workers: int = 0,
    bind_host: str = "127.0.0.1",
    bind_port: int = 0,
    expect_wait_s: float = DEFAULT_EXPECT_WAIT_S,
    tenant_secret: str = "",
    policy: HttpPolicy | None = None,
    debug: bool = False,
    progress: ProgressFn | None = None,
) -> EngineOutcome:
    """Run the Locust master (and `local_workers` workers) as subprocesses; return what it measured."""
    if local_workers and bind_host not in ("127.0.0.1", "localhost"):
        raise UsageError("local Locust workers connect over loopback only")
    with tempfile.TemporaryDirectory(prefix="sync-ci-locust-") as tmp:
        root = Path(tmp)
        job_path, ready_path, out_path = root / "job.json", root / "ready.json", root / "out.json"
        log_path = root / "master.log"
        write_document(job_path, job.to_json())
        command = _module_command(
            "master",
            *("--job", str(job_path), "--out", str(out_path), "--ready", str(ready_path)),
            *("--expect-workers", str(expect_workers), "--wait", str(expect_wait_s)),
            *("--bind-host", bind_host, "--bind-port", str(bind_port)),
            *(["--debug"] if debug else []),
        )
        processes: list[subprocess.Popen[bytes]] = []
        with log_path.open("wb") as log:
            # Own process groups that die with this process and stop on SIGINT/SIGTERM.
            master = spawn(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(""),
            )
        try:
            port = int(_wait_for_file(ready_path, master, MASTER_START_S)["port"])
            if progress:
                progress(f"locust: master on port {port}, waiting for {expect_workers} workers")
            for index in range(local_workers):
                with (root / f"worker-{index}.log").open("wb") as worker_log:
                    processes.append(
                        spawn(
                            _module_command(
                                "worker",
                                *("--gate", job.gate, "--master-host", "127.0.0.1"),
                                *("--master-port", str(port), "--connect-wait", "30"),
                                *_policy_options(policy),
                                *(["--debug"] if debug else []),
                            ),
                            stdin=subprocess.DEVNULL,
                            stdout=worker_log,
                            stderr=subprocess.STDOUT,
                            env=_child_env(tenant_secret),
                        )
                    )
            bound = expect_wait_s + 2 * ARM_BOUND_S + job.run_bound_s() + 15
            started = time.monotonic()
            while master.poll() is None:
                elapsed = time.monotonic() - started
                if elapsed > bound:
                    raise EngineError(f"the Locust master did not finish within {bound:.0f} s")
                if progress:
                    progress(f"locust: running ({elapsed:.0f} s)")
                time.sleep(0.05)
        finally:
            for process in processes:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    stop_process_group(process)
            stop_process_group(master)
        if not out_path.is_file():
            raise EngineError(
                f"the Locust master exited with {master.returncode} and no result: "
                f"{_log_tail(log_path) or 'no output'}"
            )
        document = json.loads(out_path.read_text(encoding="utf-8"))
    return _parse_master_output(document)


@dataclass(frozen=True, slots=True, kw_only=True)
class LocustEngine:
    """The gates' requests sent by Locust workers under a master this process starts."""

    mode: LocustMode
    debug: bool = False

    def _run(
        self,
        job: EngineJob,
        progress: ProgressFn | None,
        tenant_secret: str = "",
        policy: HttpPolicy | None = None,
    ) -> EngineOutcome:
        return run_locust(
            job,
            expect_workers=self.mode.expect_workers,
            local_workers=self.mode.local_workers,
            bind_host=self.mode.bind_host,
            bind_port=self.mode.bind_port,
            expect_wait_s=self.mode.expect_wait_s,
            tenant_secret=tenant_secret,
            policy=policy,
            debug=self.debug,
            progress=progress,
        )

    def measure_load(
        self, job: LoadJob, progress: ProgressFn | None
    ) -> tuple[list[PhaseOutcome], dict[str, Any]]:
        """Ship the load job to the workers; merge their phases exactly."""
        scenario = job.scenario
        engine_job = EngineJob(
            gate="load",
            base_url=job.base_url,
            timeout_s=job.timeout_s,
            scenario=scenario.to_json(),
            rate=job.rate,
            duration_s=job.duration_s,
        )
        outcome = self._run(engine_job, progress, job.tenant_secret, job.policy)
        phases = combine_load(outcome)
        planned = sum(op.planned for op in phases[0].ops.values())
        if planned != scenario.installs + scenario.pushes:
            raise EngineError(
                f"the Locust workers planned {planned} of the burst's "
                f"{scenario.installs + scenario.pushes} requests"
            )
        return phases, engine_facts(outcome)

    def measure_latency(
        self,
        settings: Settings,
        scenario: LatencyScenario,
        timeout_s: float,
        progress: ProgressFn | None,
    ) -> tuple[dict[str, RegionOutcome], dict[str, Any]]:
        """Probe every region from workers tagged with it (else untagged ones); merge exactly."""
        proxied = [r.name for r in settings.regions if r.proxy]
        if proxied:
            raise UsageError(
                f"regions {', '.join(proxied)} go through an HTTP proxy, which the Locust engine "
                "does not route; run a worker in each region instead, or use --engine builtin"
            )
        regions = [
            {"name": r.name, "url": r.url.rstrip("/"), "colo": r.colo} for r in settings.regions
        ]
        job = EngineJob(
            gate="latency",
            base_url=regions[0]["url"],
            timeout_s=timeout_s,
            scenario=scenario.to_json(),
            regions=regions,
        )
        outcome = self._run(job, progress)
        return combine_latency(outcome, regions, scenario.samples), engine_facts(outcome)


def worker_secret(worker: WorkerOptions) -> tuple[str, HttpPolicy]:
    """Return this machine's tenant secret and target policy for a worker (never the master's)."""
    from sync_ci.attachment import ATTACHED, open_target
    from sync_ci.config import load_settings
    from sync_ci.gates.http import policy_for, read_only_policy

    if worker.gate != "load":
        return "", read_only_policy()
    settings = load_settings(config=worker.config, target=worker.target)
    secret = settings.secrets.tenant_secret
    if settings.target == "sandbox" and settings.sandbox_file:
        with open_target(settings, ATTACHED) as attached:
            settings = attached
            secret = attached.secrets.tenant_secret
    policy = policy_for(settings)
    if not secret and not policy.read_only:
        raise UsageError(
            "a load worker pushes as tenants and needs the tenant secret on its own machine "
            f"({SECRET_ENV}); the master never sends it"
        )
    return secret, policy


WORKER_MAX_RUN_S = 1800.0


def worker_command(worker: WorkerOptions) -> int:
    """`sync-ci gate load|latency --engine locust --worker`: run one worker until the master quits."""
    secret, policy = worker_secret(worker)
    command = _module_command(
        "worker",
        *("--gate", worker.gate, "--master-host", worker.master_host),
        *("--master-port", str(worker.master_port), "--region", worker.region),
        *("--connect-wait", str(worker.connect_wait_s), "--max-run", str(WORKER_MAX_RUN_S)),
        *_policy_options(policy),
        *(["--debug"] if worker.debug else []),
        *(["--quiet"] if worker.quiet else []),
    )
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            env=_child_env(secret),
            timeout=worker.connect_wait_s + WORKER_MAX_RUN_S + 30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EngineError("the Locust worker did not finish in time") from None
    return done.returncode


# --- subprocess entry point ---------------------------------------------------------------------


def _subprocess_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sync_ci.gates.locust_engine",
        description="Locust master or worker for the sync-ci gates (started by `sync-ci gate`).",
    )
    roles = parser.add_subparsers(dest="role", required=True)
    master = roles.add_parser("master")
    master.add_argument("--job", required=True)
    master.add_argument("--out", required=True)
    master.add_argument("--ready", required=True)
    master.add_argument("--expect-workers", type=int, default=1)
    master.add_argument("--wait", type=float, default=DEFAULT_EXPECT_WAIT_S)
    master.add_argument("--bind-host", default="127.0.0.1")
    master.add_argument("--bind-port", type=int, default=0)
    master.add_argument("--debug", action="store_true")
    worker = roles.add_parser("worker")
    worker.add_argument("--gate", choices=GATES, required=True)
    worker.add_argument("--master-host", required=True)
    worker.add_argument("--master-port", type=int, default=DEFAULT_MASTER_PORT)
    worker.add_argument("--region", default="")
    worker.add_argument("--connect-wait", type=float, default=DEFAULT_EXPECT_WAIT_S)
    worker.add_argument("--max-run", type=float, default=WORKER_MAX_RUN_S)
    worker.add_argument("--write-root", default="", help="where pushes may go (else read-only)")
    worker.add_argument("--debug", action="store_true")
    worker.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of the Locust subprocesses: import locust (gevent) first, then run the role."""
    args = _subprocess_parser().parse_args(argv)
    import locust  # noqa: F401  # gevent patches this process before anything imports ssl

    from sync_ci.gates import locust_master, locust_user

    if args.role == "master":
        with open(args.job, encoding="utf-8") as handle:
            job = EngineJob.from_json(json.load(handle))
        return locust_master.master_main(
            job,
            out=Path(args.out),
            ready=Path(args.ready),
            expect_workers=args.expect_workers,
            wait_s=args.wait,
            bind_host=args.bind_host,
            bind_port=args.bind_port,
            debug=args.debug,
        )
    return locust_user.worker_main(
        gate=args.gate,
        master_host=args.master_host,
        master_port=args.master_port,
        region=args.region,
        connect_wait_s=args.connect_wait,
        max_run_s=args.max_run,
        tenant_secret=read_secret(SECRET_ENV, os.environ.get(SECRET_ENV, "")),
        policy=worker_policy(args.write_root),
        debug=args.debug,
        quiet=args.quiet,
    )


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # zmq contexts can block interpreter shutdown; everything worth keeping is written and flushed.
    os._exit(code)
