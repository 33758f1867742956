"""invoke tasks for sync-ci: each one is an index entry that calls the `sync-ci` command line in-process."""

from __future__ import annotations

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from sync_ci.cli import main as sync_ci


def _run(*argv: str) -> None:
    code = sync_ci([a for a in argv if a])
    if code:
        raise Exit(code=code)


def _opt(flag: str, value: str) -> list[str]:
    return [flag, value] if value else []


@task(
    help={
        "target": "sandbox, ci or live (default: settings, else sandbox)",
        "quiet": "no output on success",
    }
)
def ci_loop(c: Context, target: str = "", quiet: bool = False) -> None:
    """Run one schedule-time pass: read-only smoke, alert file on failure."""
    _run("ci-loop", *_opt("--target", target), "--quiet" if quiet else "")


@task(
    help={
        "target": "sandbox or ci (default: settings, else sandbox)",
        "read_only": "GET/HEAD only",
        "fault": "sandbox fault KEY=VALUE",
    }
)
def smoke(c: Context, target: str = "", read_only: bool = False, fault: str = "") -> None:
    """Run the phase-mirror smoke."""
    _run(
        "smoke",
        *_opt("--target", target),
        "--read-only" if read_only else "",
        *_opt("--fault", fault),
    )


@task(
    help={
        "target": "sandbox, ci or live (default: settings, else sandbox; live sends GETs only)",
        "max_examples": "generated cases per operation and mode",
        "budget": "bound on the whole run in seconds",
        "seed": "reproduce an earlier run (0: a new random seed)",
    }
)
def conformance(
    c: Context, target: str = "", max_examples: int = 25, budget: float = 300.0, seed: int = 0
) -> None:
    """Check the target's Worker against the contract's OpenAPI document."""
    _run(
        "conformance",
        *_opt("--target", target),
        "--max-examples",
        str(max_examples),
        "--budget",
        str(budget),
        *_opt("--seed", str(seed) if seed else ""),
    )


@task(
    help={
        "older_than": "age to delete: days or weeks (7d, 2w); hours (36h) need allow_short",
        "allow_short": "accept an age in hours (never under 1 h)",
        "dry_run": "plan only",
        "target": "sandbox or ci",
        "max_delete": "refuse plans larger than this (0: no cap)",
    }
)
def cleanup(
    c: Context,
    older_than: str = "7d",
    allow_short: bool = False,
    dry_run: bool = False,
    target: str = "",
    max_delete: int = 0,
) -> None:
    """Delete CI prefixes older than the retention period."""
    cap = ["--max-delete", str(max_delete)] if max_delete else []
    _run(
        "cleanup",
        "--older-than",
        older_than,
        "--allow-short" if allow_short else "",
        "--dry-run" if dry_run else "",
        *_opt("--target", target),
        *cap,
    )


@task(help={"target": "sandbox or ci"})
def cleanup_lifecycle(c: Context, target: str = "") -> None:
    """Add or update the bucket lifecycle backstop for the CI prefix."""
    _run("cleanup", "--install-lifecycle", *_opt("--target", target))


@task(
    help={
        "role": "maintainer or tenant",
        "dry_run": "print the diff only",
        "user": "whose crontab (root only); every path is resolved and checked for them",
    }
)
def install_cron(c: Context, role: str = "tenant", dry_run: bool = False, user: str = "") -> None:
    """Install this role's crontab entry (idempotent)."""
    _run("cron", "install", "--role", role, "--dry-run" if dry_run else "", *_opt("--user", user))


@task(
    help={
        "role": "maintainer or tenant",
        "dry_run": "print the diff only",
        "user": "whose crontab (root only)",
    }
)
def uninstall_cron(c: Context, role: str = "tenant", dry_run: bool = False, user: str = "") -> None:
    """Remove this role's crontab entry and nothing else."""
    _run("cron", "uninstall", "--role", role, "--dry-run" if dry_run else "", *_opt("--user", user))


@task(help={"silent": "print nothing on success"})
def doctor(c: Context, silent: bool = False) -> None:
    """Run every field check; the exit code is the failure count."""
    _run("doctor", "--silent" if silent else "")


@task(help={"html": "also write the status page to this path"})
def status(c: Context, html: str = "") -> None:
    """Show recent ci-loop alerts and the Worker's /_status."""
    _run("status", *_opt("--html", html))


@task(
    help={
        "role": "maintainer or tenant",
        "cron_user": "whose installed line to run, as cron runs it (default: yours)",
        "target": "sandbox, ci or live (live: nothing is written)",
    }
)
def verify(c: Context, role: str = "tenant", cron_user: str = "", target: str = "") -> None:
    """Run the installed cron line as cron would, then the rest of the seed's checklist."""
    _run("verify", "--role", role, *_opt("--cron-user", cron_user), *_opt("--target", target))


@task(
    help={
        "store": "moto or seaweedfs",
        "ready_file": "where to write endpoints and credentials (mode 600)",
        "fault": "fault KEY=VALUE",
    }
)
def sandbox(c: Context, store: str = "moto", ready_file: str = "", fault: str = "") -> None:
    """Run the embedded sandbox (object store + reference Worker) until interrupted."""
    _run("sandbox", "--store", store, *_opt("--ready-file", ready_file), *_opt("--fault", fault))


@task(help={"platform": "ubuntu, macos or wsl2", "output": "where to write the .cast file"})
def record_cast(c: Context, platform: str = "ubuntu", output: str = "") -> None:
    """Record the standard launch script with asciinema for one platform."""
    _run("gate", "record-cast", "--platform", platform, *_opt("--out", output))


@task(help={"target": "sandbox, ci or live", "fault": "sandbox fault KEY=VALUE"})
def load(c: Context, target: str = "", fault: str = "") -> None:
    """Gate: 1,000 installs + 100 pushes in one burst (p95 < 2 s / < 5 s, zero 5xx)."""
    _run("gate", "load", *_opt("--target", target), *_opt("--fault", fault))


@task(help={"target": "sandbox or live", "fault": "sandbox fault KEY=VALUE"})
def latency(c: Context, target: str = "", fault: str = "") -> None:
    """Gate: cold KV-miss probe across 5 regions (p95 < 500 ms, p99 < 1,500 ms)."""
    _run("gate", "latency", *_opt("--target", target), *_opt("--fault", fault))


@task(help={"casts": "directory holding ubuntu/macos/wsl2 recordings"})
def platforms(c: Context, casts: str = "casts") -> None:
    """Gate: three platform recordings, all green."""
    _run("gate", "platforms", "--casts", casts)


@task(name="all", help={"target": "sandbox, ci or live", "casts": "directory of recordings"})
def all_gates(c: Context, target: str = "", casts: str = "casts") -> None:
    """Run every gate and print one table."""
    _run("gate", "all", *_opt("--target", target), "--casts", casts)


gates = Collection("gates", load, latency, platforms, all_gates)
ns = Collection(
    ci_loop,
    smoke,
    cleanup,
    cleanup_lifecycle,
    install_cron,
    uninstall_cron,
    doctor,
    status,
    verify,
    sandbox,
    record_cast,
    conformance,
    gates,
)
