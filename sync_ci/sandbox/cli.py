"""`sync-ci sandbox` (run the embedded stack in the foreground) and `sync-ci sandbox-fault`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, cast

from sync_ci.assignments import parse_assignments
from sync_ci.errors import ExitCode, UnreachableError, UsageError
from sync_ci.sandbox.ready_file import SandboxInfo
from sync_ci.sandbox.store_server import STORE_KINDS, StoreKind
from sync_ci.sandbox.workerd import RUNTIMES, Runtime, check_runtime

POLL_S = 0.5


def parse_kv_miss(items: Sequence[str]) -> dict[str, int]:
    """Parse `--kv-miss-ms COLO=MS` options into whole milliseconds per colo."""
    parsed: dict[str, int] = {}
    for colo, value in parse_assignments(
        items, "--kv-miss-ms", form="COLO=MS", example="SJC=30"
    ).items():
        if not value.isdigit():
            raise UsageError(f"--kv-miss-ms {colo}={value}: MS must be a whole number")
        parsed[colo.upper()] = int(value)
    return parsed


def parse_fault_updates(items: Sequence[str]) -> dict[str, float | None]:
    """Parse `--set KEY=VALUE` (VALUE a number, or `null` to remove the fault)."""
    updates: dict[str, float | None] = {}
    for key, value in parse_assignments(items, "--set", example="5xx_rate=0.1").items():
        if value.lower() in ("null", "none"):
            updates[key] = None
            continue
        try:
            updates[key] = float(value)
        except ValueError:
            raise UsageError(f"--set {key}={value}: VALUE must be a number or null") from None
    return updates


def default_ready_file(env: dict[str, str] | None = None) -> Path:
    """The ready file when --ready-file is not given: the user's state dir."""
    env = dict(os.environ) if env is None else env
    home = Path(env.get("HOME", "~")).expanduser()
    base = env.get("XDG_STATE_HOME") or str(home / ".local" / "state")
    return Path(base) / "sync-ci" / "sandbox.json"


def render_endpoints(info: SandboxInfo, ready_file: Path) -> str:
    """Render the sandbox's endpoints (never its secrets) as a short table and a hint."""
    from sync_ci.report_text import render_rows

    rows = [
        ("store", f"{info.store.endpoint_url} ({info.store.kind}, pid {info.store.pid})"),
        ("bucket", info.store.bucket),
        ("live root", f"{info.live_root} (seeded)"),
        ("ci root", f"{info.ci_root}<sha>/"),
        ("worker", f"{info.worker.url} ({info.worker.runtime}, pid {info.worker.pid})"),
    ]
    rows += [(f"region {r.name}", f"{r.url} ({r.colo})") for r in info.worker.regions]
    rows.append(("secrets", f"in {ready_file} (mode 600)"))
    table = render_rows(rows)
    return (
        f"{table}\n\nUse it from another shell:\n  export SYNC_CI_SANDBOX={ready_file}\n"
        "Stop it with Ctrl-C (or SIGTERM)."
    )


def refuse_running(ready_file: Path) -> None:
    """Refuse to overwrite the ready file of a sandbox that is still answering."""
    from sync_ci.errors import SyncCIError
    from sync_ci.sandbox.attach import check_alive
    from sync_ci.sandbox.ready_file import read_ready_file

    if not ready_file.exists():
        return
    try:
        check_alive(read_ready_file(ready_file), str(ready_file))
    except SyncCIError:
        return  # stale or unreadable: a dead sandbox's file is replaced
    raise UsageError(
        f"a sandbox is already running with ready file {ready_file}; stop it first or "
        "choose another --ready-file"
    )


def run_sandbox(
    *,
    store: StoreKind,
    faults: dict[str, str],
    kv_miss_ms: dict[str, int],
    ready_file: Path,
    quiet: bool = False,
    mutant: str = "",
    runtime: Runtime = "python",
    project: str = "",
) -> int:
    """Run a sandbox until SIGINT/SIGTERM, then stop every child and remove the ready file."""
    from sync_ci.sandbox.launcher import (
        start_sandbox,
        validate_faults,
        validate_kv_miss_ms,
        validate_mutant,
    )
    from sync_ci.sandbox.ready_file import write_ready_file

    validate_faults(faults)
    validate_kv_miss_ms(kv_miss_ms)
    validate_mutant(mutant)
    check_runtime("workerd" if project else runtime)
    refuse_running(ready_file)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    # Signals only set a flag, so a signal during start-up still ends in a full, orderly stop.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with start_sandbox(
            store=store,
            faults=faults,
            kv_miss_ms=kv_miss_ms,
            mutant=mutant,
            runtime=runtime,
            project=project,
        ) as sandbox:
            try:
                write_ready_file(sandbox.info, ready_file)
                if not quiet:
                    print(render_endpoints(sandbox.info, ready_file), flush=True)
                while not stop.wait(POLL_S):
                    if not sandbox.alive():
                        raise UnreachableError(
                            "a sandbox process exited unexpectedly (worker log: "
                            f"{sandbox.workdir / 'worker.log'}); stopped the rest"
                        )
            finally:
                ready_file.unlink(missing_ok=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not quiet:
        name = signal.Signals(received[0]).name if received else "signal"
        print(f"sandbox stopped ({name})", file=sys.stderr)
    return int(ExitCode.OK)


def fault_command(*, set_items: Sequence[str], clear: bool, config: str | None) -> int:
    """Change the faults of the sandbox named by SYNC_CI_SANDBOX and print those in force."""
    from sync_ci.attachment import ATTACHED, open_target
    from sync_ci.config import load_settings
    from sync_ci.errors import SettingsError
    from sync_ci.sandbox.attach import clear_faults, get_faults, set_faults

    updates = parse_fault_updates(set_items)
    settings = load_settings(config=config, target="sandbox")
    if not settings.sandbox_file:
        raise SettingsError(
            "sandbox-fault changes a running sandbox: set SYNC_CI_SANDBOX to its ready file "
            "(start one with `sync-ci sandbox --ready-file PATH`)"
        )
    with open_target(settings, ATTACHED) as attached:
        faults: dict[str, Any] = {}
        if clear:
            faults = clear_faults(attached)
        if updates:
            faults = set_faults(attached, updates)
        if not (clear or updates):
            faults = get_faults(attached)
    print(json.dumps(faults, sort_keys=True))
    return int(ExitCode.OK)


def add_parser(sub: Any) -> None:
    """Register `sandbox` and `sandbox-fault`."""
    parser = sub.add_parser(
        "sandbox",
        help="run the embedded store and reference Worker on 127.0.0.1 until Ctrl-C",
        description="Start the object store, seed the live root snappy-os/, start the reference "
        "Worker (five regions) and write a ready file (mode 600) for SYNC_CI_SANDBOX.",
    )
    parser.add_argument(
        "--store", choices=STORE_KINDS, default="moto", help="object store (default moto)"
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fault from the start: 5xx_rate, latency_ms, bucket_latency_ms, kv_miss_ms.<COLO>",
    )
    parser.add_argument(
        "--kv-miss-ms",
        action="append",
        default=[],
        metavar="COLO=MS",
        help="cold KV miss latency of a region (e.g. SIN=150)",
    )
    parser.add_argument(
        "--ready-file",
        metavar="PATH",
        help="where to write the ready file (default: $XDG_STATE_HOME/sync-ci/sandbox.json)",
    )
    parser.add_argument(
        "--mutant",
        default="",
        metavar="NAME",
        help="run a Worker that breaks the contract in one named way (docs/mutants.md)",
    )
    parser.add_argument(
        "--worker",
        choices=RUNTIMES,
        default="python",
        help="the reference Worker to run: python (aiohttp, default) or workerd (worker/ on "
        "Cloudflare's runtime through miniflare; needs Node.js and `cd worker && npm ci`)",
    )
    parser.add_argument(
        "--worker-project",
        default="",
        metavar="WRANGLER_TOML",
        help="run your own Worker project (its wrangler.toml) on workerd instead",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.set_defaults(func=_run_sandbox)

    fault = sub.add_parser(
        "sandbox-fault",
        help="change the faults of the running sandbox (SYNC_CI_SANDBOX) and print them",
        description="Change the faults of the sandbox that SYNC_CI_SANDBOX (its ready file) "
        "names, while it runs, and print the faults now in force as JSON.",
    )
    fault.add_argument(
        "--set",
        action="append",
        default=[],
        dest="set_items",
        metavar="KEY=VALUE",
        help="set a fault (VALUE a number, or null to remove it)",
    )
    fault.add_argument("--clear", action="store_true", help="remove every fault first")
    fault.add_argument("--config", metavar="PATH", help="settings file")
    fault.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    fault.set_defaults(func=_run_fault)


def sandbox_command(
    *,
    store: str = "moto",
    faults: Sequence[str] = (),
    kv_miss_ms: Sequence[str] = (),
    ready_file: str = "",
    quiet: bool = False,
    mutant: str = "",
    worker: str = "python",
    worker_project: str = "",
) -> int:
    """Run `sync-ci sandbox` from option values as typed: KEY=VALUE items, paths as given;
    the store and Worker names are refused as argparse's `choices=` refuses them."""
    from sync_ci.options import choice

    choice(store, STORE_KINDS, "--store", command="sandbox")
    choice(worker, RUNTIMES, "--worker", command="sandbox")
    ready = Path(ready_file) if ready_file else default_ready_file()
    return run_sandbox(
        store=cast("StoreKind", store),
        faults=parse_assignments(faults, "--fault", example="5xx_rate=0.1"),
        kv_miss_ms=parse_kv_miss(kv_miss_ms),
        ready_file=ready.expanduser().absolute(),
        quiet=quiet,
        mutant=mutant,
        runtime=cast("Runtime", worker),
        project=str(Path(worker_project).resolve()) if worker_project else "",
    )


def _run_sandbox(args: argparse.Namespace) -> int:
    return sandbox_command(
        store=args.store,
        faults=args.fault,
        kv_miss_ms=args.kv_miss_ms,
        ready_file=args.ready_file or "",
        quiet=args.quiet,
        mutant=args.mutant or "",
        worker=args.worker,
        worker_project=args.worker_project or "",
    )


def _run_fault(args: argparse.Namespace) -> int:
    return fault_command(set_items=args.set_items, clear=args.clear, config=args.config)
