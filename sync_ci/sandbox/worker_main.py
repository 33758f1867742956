"""Run the reference Worker: one loopback listener per region, a ready file, clean exit on SIGTERM.

Usage: python -m sync_ci.sandbox.worker_main --ready-file PATH [options]; secrets come from the
environment (SYNC_CI_WORKER_*), never from argv.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sync_ci import __version__, contract
from sync_ci.assignments import parse_assignments
from sync_ci.config import validate_root
from sync_ci.errors import ExitCode, SettingsError, SyncCIError, UsageError
from sync_ci.files import write_private
from sync_ci.guards import validate_key
from sync_ci.sandbox.faults import parse_fault_assignments
from sync_ci.sandbox.mutants import check_mutant
from sync_ci.sandbox.worker_config import (
    CATALOG_TTL_S,
    DEFAULT_COLOS,
    MAX_CATALOG_TTL_S,
    RegionSpec,
    WorkerConfig,
)

if TYPE_CHECKING:
    from sync_ci.store import Store, StoreEndpoint

DEFAULT_MISS_MS: Mapping[str, float] = {"SJC": 30, "IAD": 40, "FRA": 60, "SIN": 90, "GRU": 120}
FALLBACK_MISS_MS = 50.0
MAX_MISS_MS = 60_000.0
MAX_REGIONS = 16
BACKLOG = 2048
BUCKET_THREADS = 16
SHUTDOWN_TIMEOUT_S = 1.0
COLO_RE = re.compile(r"^[A-Z]{3}$")
ENV_PREFIX = "SYNC_CI_WORKER_"
REQUIRED_ENV = ("STORE_ENDPOINT", "BUCKET", "TENANT_SECRET", "ADMIN_TOKEN")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """Validated command-line options."""

    ready_file: Path
    host: str
    colos: tuple[str, ...]
    miss_ms: Mapping[str, float]
    faults: Mapping[str, float]
    root: str
    ci_root: str
    write_prefixes: tuple[str, ...]
    allow_root_header: bool
    sandbox_control: bool
    catalog_ttl_s: float = 3.0
    mutant: str = ""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (errors raise UsageError instead of exiting)."""
    parser = _Parser(
        prog="python -m sync_ci.sandbox.worker_main",
        description="The reference sync Worker (contract v1) for the sandbox, on 127.0.0.1.",
        epilog="Environment: SYNC_CI_WORKER_STORE_ENDPOINT, _BUCKET, _ACCESS_KEY_ID, "
        "_SECRET_ACCESS_KEY, _TENANT_SECRET, _ADMIN_TOKEN (optional _STORE_REGION).",
    )
    parser.add_argument(
        "--ready-file", required=True, metavar="PATH", help="JSON written once serving"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--regions",
        default=",".join(DEFAULT_COLOS),
        help="comma-separated colo codes, one listener each",
    )
    parser.add_argument(
        "--kv-miss-ms", default="", metavar="COLO=MS,...", help="cold-miss latency per colo"
    )
    parser.add_argument(
        "--fault",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="fault injected from start",
    )
    parser.add_argument(
        "--root", default="snappy-os/", help="default root prefix (default snappy-os/)"
    )
    parser.add_argument(
        "--ci-root", default="snappy-os-ci/", help="CI root prefix (default snappy-os-ci/)"
    )
    parser.add_argument(
        "--write-prefix",
        action="extend",
        nargs="+",
        default=[],
        metavar="PREFIX",
        help="prefix the Worker may write under (default: the root and the CI root)",
    )
    parser.add_argument(
        "--allow-root-header",
        action="store_true",
        help=f"let {contract.ROOT_HEADER} pick a CI root per request",
    )
    parser.add_argument(
        "--sandbox-control", action="store_true", help="serve /_sandbox/* (admin token)"
    )
    parser.add_argument(
        "--catalog-ttl-s",
        type=float,
        default=None,
        metavar="S",
        help="how long a region may serve a cached catalog, 0..60 (declared in /_health)",
    )
    parser.add_argument(
        "--mutant",
        default="",
        metavar="NAME",
        help="commit one named contract violation (sandbox tests of the suites; loopback only)",
    )
    return parser


def parse_mutant(name: str, loopback: bool) -> str:
    """Validate a --mutant name against the catalogue; refuse it off loopback."""
    if not check_mutant(name):
        return ""
    if not loopback:
        raise UsageError("--mutant runs only on a loopback listener")
    return name


def parse_catalog_ttl(value: float | None) -> float:
    """Validate --catalog-ttl-s (0..60, the contract's freshness bound)."""
    if value is None:
        return CATALOG_TTL_S
    if not 0.0 <= value <= MAX_CATALOG_TTL_S:
        raise UsageError(f"--catalog-ttl-s {value:g} is out of range 0..{MAX_CATALOG_TTL_S:g}")
    return value


def parse_colos(text: str) -> tuple[str, ...]:
    """Parse 'SJC,IAD,...' into unique three-letter colo codes."""
    colos = tuple(part.strip().upper() for part in text.split(",") if part.strip())
    bad = [c for c in colos if not COLO_RE.fullmatch(c)]
    if bad or not colos:
        raise UsageError(
            f"--regions {text!r}: give 1-{MAX_REGIONS} three-letter colo codes like SJC,IAD"
        )
    if len(set(colos)) != len(colos) or len(colos) > MAX_REGIONS:
        raise UsageError(f"--regions {text!r}: colo codes must be unique, at most {MAX_REGIONS}")
    return colos


def parse_miss_ms(text: str, colos: Sequence[str]) -> dict[str, float]:
    """Parse 'SJC=30,IAD=40' over the defaults for the chosen colos."""
    table = {colo: float(DEFAULT_MISS_MS.get(colo, FALLBACK_MISS_MS)) for colo in colos}
    parts = [part for part in text.split(",") if part.strip()]
    for key, value in parse_assignments(parts, "--kv-miss-ms", form="COLO=MS").items():
        colo = key.upper()
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if colo not in table or not 0.0 <= number <= MAX_MISS_MS:
            raise UsageError(
                f"--kv-miss-ms {key}={value}: want COLO=MS with COLO one of {','.join(colos)} "
                f"and MS in 0..{MAX_MISS_MS:g}"
            )
        table[colo] = number
    return table


def _check_prefix(flag: str, value: str) -> str:
    try:
        validate_key(value)
    except SyncCIError as exc:
        raise UsageError(f"{flag} {value!r}: {exc}") from None
    if not value.endswith("/"):
        raise UsageError(f"{flag} {value!r} must end with '/'")
    return value


def parse_options(argv: Sequence[str] | None) -> WorkerOptions:
    """Parse and validate the command line."""
    args = build_parser().parse_args(argv)
    host = str(args.host)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    mutant = parse_mutant(str(args.mutant), loopback)
    if not loopback:
        raise UsageError(
            f"--host {host!r}: the reference Worker listens on loopback addresses only"
        )
    colos = parse_colos(args.regions)
    try:
        root = validate_root("--root", args.root)
        ci_root = validate_root("--ci-root", args.ci_root)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    prefixes = tuple(_check_prefix("--write-prefix", p) for p in args.write_prefix) or (
        root,
        ci_root,
    )
    return WorkerOptions(
        ready_file=Path(args.ready_file),
        host=host,
        colos=colos,
        miss_ms=parse_miss_ms(args.kv_miss_ms, colos),
        faults=parse_fault_assignments(args.fault, colos),
        root=root,
        ci_root=ci_root,
        write_prefixes=prefixes,
        allow_root_header=bool(args.allow_root_header),
        sandbox_control=bool(args.sandbox_control),
        catalog_ttl_s=parse_catalog_ttl(args.catalog_ttl_s),
        mutant=mutant,
    )


def read_environment(env: Mapping[str, str]) -> tuple[StoreEndpoint, str, str]:
    """Return the store endpoint, tenant secret and admin token from SYNC_CI_WORKER_* variables."""
    from sync_ci.store import StoreEndpoint

    missing = [ENV_PREFIX + name for name in REQUIRED_ENV if not env.get(ENV_PREFIX + name)]
    if missing:
        raise SettingsError(f"the Worker needs {', '.join(missing)} in its environment")
    endpoint = StoreEndpoint(
        bucket=env[ENV_PREFIX + "BUCKET"],
        endpoint_url=env[ENV_PREFIX + "STORE_ENDPOINT"],
        region_name=env.get(ENV_PREFIX + "STORE_REGION", "") or "us-east-1",
        access_key_id=env.get(ENV_PREFIX + "ACCESS_KEY_ID", ""),
        secret_access_key=env.get(ENV_PREFIX + "SECRET_ACCESS_KEY", ""),
    )
    return endpoint, env[ENV_PREFIX + "TENANT_SECRET"], env[ENV_PREFIX + "ADMIN_TOKEN"]


def raise_nofile_limit() -> None:
    """Raise the soft open-files limit to the hard limit (a 1,000-connection burst needs it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def write_ready_file(path: Path, document: Mapping[str, Any]) -> None:
    """Write the ready document atomically with mode 600 (temporary file, then rename)."""
    try:
        write_private(path, json.dumps(document) + "\n")
    except OSError as exc:
        raise SettingsError(f"cannot write the ready file {path}: {exc.strerror}") from None


def check_bucket(store: Store, root: str) -> None:
    """List one key under the root so a missing bucket or bad credentials fail before serving."""
    next(iter(store.list(root, page_size=1)), None)


def build_config(options: WorkerOptions, tenant_secret: str, admin_token: str) -> WorkerConfig:
    """Turn options and secrets into the app's configuration."""
    regions: tuple[RegionSpec, ...] = tuple(
        RegionSpec(colo=colo, miss_ms=options.miss_ms[colo]) for colo in options.colos
    )
    return WorkerConfig(
        root=options.root,
        ci_root=options.ci_root,
        regions=regions,
        allow_root_header=options.allow_root_header,
        sandbox_control=options.sandbox_control,
        faults=dict(options.faults),
        catalog_ttl_s=options.catalog_ttl_s,
        mutant=options.mutant,
        tenant_secret=tenant_secret,
        admin_token=admin_token,
    )


async def serve(
    options: WorkerOptions, endpoint: StoreEndpoint, tenant_secret: str, admin_token: str
) -> int:
    """Bind every region, write the ready file, and serve until SIGTERM or SIGINT."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from aiohttp import web

    from sync_ci.guards import WritePolicy
    from sync_ci.sandbox.worker_app import build_region_app
    from sync_ci.sandbox.worker_http import WorkerState
    from sync_ci.store import open_store

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    raise_nofile_limit()
    executor = ThreadPoolExecutor(max_workers=BUCKET_THREADS, thread_name_prefix="bucket")
    runners: list[web.AppRunner] = []
    try:
        policy = WritePolicy(
            read_only=False, bucket=endpoint.bucket, write_prefixes=options.write_prefixes
        )
        store = await loop.run_in_executor(
            executor, lambda: open_store(endpoint, policy, max_pool=BUCKET_THREADS)
        )
        await loop.run_in_executor(executor, check_bucket, store, options.root)
        state = WorkerState(build_config(options, tenant_secret, admin_token), store, executor)
        regions = []
        for spec in state.config.regions:
            runner = web.AppRunner(
                build_region_app(state, spec),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            )
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, options.host, 0, backlog=BACKLOG).start()
            port = int(runner.addresses[0][1])
            regions.append(
                {"name": spec.name, "colo": spec.colo, "url": f"http://{options.host}:{port}"}
            )
        if stop.is_set():
            return int(ExitCode.OK)
        write_ready_file(
            options.ready_file,
            {
                "pid": os.getpid(),
                "version": __version__,
                "contract": contract.CONTRACT_VERSION,
                "root": options.root,
                "regions": regions,
                "mutant": options.mutant,
            },
        )
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()
        executor.shutdown(wait=False, cancel_futures=True)
    return int(ExitCode.OK)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, read the environment and serve; errors become one stderr line."""
    import asyncio

    try:
        options = parse_options(argv)
        endpoint, tenant_secret, admin_token = read_environment(os.environ)
        return asyncio.run(serve(options, endpoint, tenant_secret, admin_token))
    except SyncCIError as exc:
        print(f"sync-ci: error: worker: {exc}", file=sys.stderr)
        return int(exc.exit_code)


def exit_served(code: int) -> NoReturn:
    """End the Worker process once `main` has returned: its listeners are closed and its ready
    work done, so the interpreter's own tear-down (an interpreter full of aiohttp and botocore,
    0.3-0.5 s of every sandbox stop) is skipped; only the standard streams are flushed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_served(main())
