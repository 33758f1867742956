"""invoke tasks for sync-ci: each one is an index entry over the functions behind `sync-ci`.

A task takes the options of its `sync-ci` subcommand under the same names and defaults, and exits
with the code `sync-ci` would: it calls the command function with typed values through
`sync_ci.cli.call` (report options as `options.report_outputs`), and that function checks the
ranges and choices argparse checks for `sync-ci`, with the same `number(...)` and choice lists.
No argv is rebuilt. Over 400 lines because invoke reads each task's options from its signature
and its help from a table beside it: every option of every command is spelled out here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from sync_ci import cli
from sync_ci.errors import ExitCode
from sync_ci.options import report_outputs


class _Task(Task[Any]):
    """A task whose parameters never take `-h` (that stays `invoke TASK -h`, the task's help),
    and whose number parameters refuse text that is no number as one usage line, exit 2."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, {*taken_names, "h"})
        if opts.get("kind") in (int, float):
            opts["kind"] = _number_kind(opts["kind"], name.replace("_", "-"))
        return opts


def _number_kind(kind: type[int] | type[float], flag: str) -> Callable[[str], float]:
    """invoke's cast for a number parameter: its own cast raises ValueError, a traceback."""

    def cast(text: str) -> float:
        try:
            return kind(text)
        except ValueError:
            raise Exit(
                f"sync-ci: error: argument --{flag}: invalid {kind.__name__} value: {text!r}",
                code=int(ExitCode.USAGE),
            ) from None

    cast.__name__ = kind.__name__
    return cast


def task(**options: Any) -> Callable[[Callable[..., None]], Task[Any]]:
    """`invoke.task` with the short-flag rule above."""
    decorate: Callable[[Callable[..., None]], Task[Any]] = invoke_task(klass=_Task, **options)
    return decorate


def _exit(code: int) -> None:
    if code:
        raise Exit(code=code)


def _call(work: Callable[[], int]) -> None:
    _exit(cli.call(work))


TARGET = "sandbox, ci or live (default: settings, else sandbox)"
JSON = "also write the result document as JSON to this path"
JUNIT = "also write a JUnit XML report to this path"
QUIET = "print nothing on success"
CONFIG = "settings file (default: SYNC_CI_CONFIG, ./sync-ci.toml, user config dir)"
FAULT = "sandbox only: inject a fault KEY=VALUE (5xx_rate, latency_ms, bucket_latency_ms)"
CRON_USER = "whose crontab (needs root; default: yours)"
ROLE = "maintainer (ci-loop) or tenant (doctor)"
REPORTS = {"json": JSON, "junit": JUNIT, "quiet": QUIET}


@task(
    help={
        "target": TARGET,
        "alerts_dir": "where alert files go (default state/log/alerts)",
        "budget": "bound on the whole pass in seconds",
        "json": JSON,
        "junit": JUNIT,
        "quiet": "print nothing on success (not even the one line)",
    }
)
def ci_loop(
    c: Context,
    target: str = "",
    alerts_dir: str = "",
    budget: float = 900.0,
    json: str = "",
    junit: str = "",
    quiet: bool = False,
) -> None:
    """Run one schedule-time pass: read-only smoke, alert file on failure."""
    from pathlib import Path

    from sync_ci.alert_files import DEFAULT_DIR
    from sync_ci.ci_loop import command

    _call(
        lambda: command(
            target=target or None,
            config=None,
            alerts_dir=Path(alerts_dir) if alerts_dir else DEFAULT_DIR,
            budget_s=budget,
            now=None,
            outputs=report_outputs(json, junit, quiet=quiet),
        )
    )


@task(
    help={
        "target": TARGET,
        "read_only": "GET/HEAD only against the production root (always on for live)",
        "sample": "objects to verify in read-only mode (0: all)",
        "fault": FAULT,
        "budget": "bound on the whole run in seconds",
        **REPORTS,
    }
)
def smoke(
    c: Context,
    target: str = "",
    read_only: bool = False,
    sample: int = 5,
    fault: str = "",
    budget: float = 600.0,
    json: str = "",
    junit: str = "",
    quiet: bool = False,
) -> None:
    """Run the phase-mirror smoke (writes only under snappy-os-ci/<sha>/, or --read-only)."""
    from sync_ci.smoke import command

    _call(
        lambda: command(
            target=target or None,
            config=None,
            read_only=read_only,
            sample=sample,
            faults=[fault] if fault else [],
            budget_s=budget,
            outputs=report_outputs(json, junit, quiet=quiet),
        )
    )


@task(
    help={
        "target": TARGET + "; live sends GETs only",
        "max_examples": "generated cases per operation and mode",
        "budget": "bound on the whole run in seconds",
        "seed": "reproduce an earlier run (the seed it printed; -1: a new random seed)",
        **REPORTS,
    }
)
def conformance(
    c: Context,
    target: str = "",
    max_examples: int = 25,
    budget: float = 300.0,
    seed: int = -1,
    json: str = "",
    junit: str = "",
    quiet: bool = False,
) -> None:
    """Check the target's Worker against the contract's OpenAPI document."""
    from sync_ci.conformance import command

    _call(
        lambda: command(
            target=target or None,
            max_examples=max_examples,
            budget_s=budget,
            # invoke options cannot be absent: -1 spells sync-ci's "not given" (a new random seed).
            seed=None if seed == -1 else seed,
            outputs=report_outputs(json, junit, quiet=quiet),
        )
    )


@task(
    help={
        "older_than": "age to delete: days or weeks (7d, 2w); hours (36h) need --allow-short",
        "allow_short": "accept an age in hours (never under 1 h)",
        "dry_run": "plan and report; delete nothing",
        "target": "sandbox or ci (live: --dry-run only)",
        "max_delete": "refuse a plan of more than N keys; 0 refuses any deletion (-1: no cap)",
        "now": "reference time for ages, ISO-8601 (default: the current time)",
        **REPORTS,
    }
)
def cleanup(
    c: Context,
    older_than: str = "7d",
    allow_short: bool = False,
    dry_run: bool = False,
    target: str = "",
    max_delete: int = -1,
    now: str = "",
    json: str = "",
    junit: str = "",
    quiet: bool = False,
) -> None:
    """Delete CI prefixes older than the retention period."""
    from sync_ci.cleanup import command

    _call(
        lambda: command(
            target=target or None,
            older_than=older_than,
            allow_short=allow_short,
            dry_run=dry_run,
            # invoke options cannot be absent: -1 spells sync-ci's "not given" (no cap).
            max_delete=None if max_delete == -1 else max_delete,
            now=now or None,
            outputs=report_outputs(json, junit, quiet=quiet),
        )
    )


@task(help={"target": "sandbox or ci", "show": "print the bucket's lifecycle rules instead"})
def cleanup_lifecycle(c: Context, target: str = "", show: bool = False) -> None:
    """Add or update the bucket lifecycle backstop for the CI prefix."""
    from sync_ci.cleanup import command

    _call(lambda: command(target=target or None, lifecycle="show" if show else "install"))


@task(
    help={
        "role": ROLE + "; required",
        "dry_run": "print the diff, change nothing",
        "cron_user": CRON_USER + "; every path is resolved and checked for them",
        "exe": "absolute path of the sync-ci executable",
        "venv": "virtualenv holding bin/sync-ci (maintainer)",
        "repo": "repository directory (maintainer; default: cwd)",
        "secrets_file": "owner-only KEY=VALUE file the line exports as SYNC_CI_SECRETS_FILE",
        "config": "settings file the installed line will export",
    }
)
def install_cron(
    c: Context,
    role: str = "",
    dry_run: bool = False,
    cron_user: str = "",
    exe: str = "",
    venv: str = "",
    repo: str = "",
    secrets_file: str = "",
    config: str = "",
) -> None:
    """Install this role's crontab entry (idempotent)."""
    from sync_ci.field import cron

    _call(
        lambda: cron.command(
            "install",
            role=role,
            user=cron_user,
            dry_run=dry_run,
            exe=exe,
            venv=venv,
            repo=repo,
            secrets_file=secrets_file,
            config=config or None,
        )
    )


@task(
    help={
        "role": ROLE + " (default: both)",
        "dry_run": "print the diff, change nothing",
        "cron_user": CRON_USER,
    }
)
def uninstall_cron(c: Context, role: str = "", dry_run: bool = False, cron_user: str = "") -> None:
    """Remove this role's crontab entry and nothing else."""
    from sync_ci.field import cron

    _call(lambda: cron.command("uninstall", role=role, user=cron_user, dry_run=dry_run))


@task(help={"cron_user": CRON_USER})
def cron_show(c: Context, cron_user: str = "") -> None:
    """Print the installed sync-ci cron entries and check they are sane."""
    from sync_ci.field import cron

    _call(lambda: cron.command("show", user=cron_user))


@task(
    help={
        "checks": "run only these checks, comma-separated (default: all; see --list-checks)",
        "list_checks": "list the checks and exit",
        "target": TARGET,
        "config": CONFIG,
        "quiet": "nothing on success; only the failing rows on failure",
        "json": JSON,
        "junit": JUNIT,
        "heartbeat": "on success POST a tiny /_heartbeat so the Worker knows we are alive",
        "cron_user": "whose crontab to check (default: yours)",
    }
)
def doctor(
    c: Context,
    checks: str = "",
    list_checks: bool = False,
    target: str = "",
    config: str = "",
    quiet: bool = False,
    json: str = "",
    junit: str = "",
    heartbeat: bool = False,
    cron_user: str = "",
) -> None:
    """Run the field checks; the exit code is the failure count."""
    from sync_ci.field import doctor as field

    if list_checks:
        print(field.list_checks())
        return
    _call(
        lambda: field.command(
            names=[name.strip() for name in checks.split(",") if name.strip()],
            config=config or None,
            target=target or None,
            outputs=report_outputs(json, junit, quiet=quiet),
            heartbeat=heartbeat,
            cron_user=cron_user,
        )
    )


@task(
    help={
        "target": "whose Worker /_status to read (default: settings, else sandbox)",
        "config": CONFIG,
        "alerts_dir": "where ci-loop writes its alert files (default state/log/alerts)",
        "html": "also write the Sync status page (pass timeline, alerts per check, silent tenants)",
    }
)
def status(
    c: Context, target: str = "", config: str = "", alerts_dir: str = "", html: str = ""
) -> None:
    """Show recent ci-loop alerts and the Worker's /_status."""
    from pathlib import Path

    from sync_ci.field import status as view

    _call(
        lambda: view.command(
            config=config or None,
            target=target or None,
            alerts_dir=Path(alerts_dir) if alerts_dir else view.DEFAULT_ALERTS_DIR,
            html_path=html,
        )
    )


@task(
    help={
        "role": ROLE + "; required",
        "cron_user": "whose installed line to run, as cron runs it (default: yours)",
        "target": "sandbox, ci or live (live: nothing is written)",
        "repo": "repository to lint (default: cwd)",
        **REPORTS,
    }
)
def verify(
    c: Context,
    role: str = "",
    cron_user: str = "",
    target: str = "",
    repo: str = "",
    json: str = "",
    junit: str = "",
    quiet: bool = False,
) -> None:
    """Run the installed cron line as cron would, then the rest of the seed's checklist."""
    from sync_ci.field import verify as checklist

    _call(
        lambda: checklist.command(
            role,
            target=target or None,
            cron_user=cron_user,
            repo=repo,
            outputs=report_outputs(json, junit, quiet=quiet),
        )
    )


@task(
    help={
        "check": "name of the failing check, e.g. doctor-failed",
        "message": "one line saying what failed",
        "config": CONFIG,
        "quiet": "print nothing when delivered",
    }
)
def alert(c: Context, check: str, message: str = "", config: str = "", quiet: bool = False) -> None:
    """POST an alert to the Worker (spooled if it cannot go now)."""
    from sync_ci.field import alerts

    _call(lambda: alerts.command(check, message=message, config=config or None, quiet=quiet))


@task(help={"target": "the target to resolve (default: settings, else sandbox)", "config": CONFIG})
def config(c: Context, target: str = "", config: str = "") -> None:
    """Show every setting, its value and where it came from (secrets redacted)."""
    from sync_ci import config_cli

    _call(lambda: config_cli.command(config=config or None, target=target or None))


@task(
    help={
        "paths": "directories or files, comma-separated (default: .)",
        "scope": "repo (the tree, PR time), field (this machine, doctor) or all",
        "select": "comma-separated rule IDs or prefixes",
        "list": "list the rules and exit",
        "explain": "print a rule's why and fix, and exit",
        "format": "table, json (the result document on stdout) or github",
        **REPORTS,
    }
)
def lint(
    c: Context,
    paths: str = ".",
    scope: str = "repo",
    select: str = "",
    list: bool = False,
    explain: str = "",
    format: str = "table",
    json: str = "",
    junit: str = "",
    quiet: bool = False,
) -> None:
    """Run the section-A lint catalogue."""
    from checks.cli import command

    targets = [p.strip() for p in paths.split(",") if p.strip()] or ["."]
    _call(
        lambda: command(
            paths=targets,
            scope=scope,
            select=select,
            list_rules=list,
            explain_rule=explain,
            output_format=format,
            outputs=report_outputs(json, junit, quiet=quiet),
        )
    )


@task(
    help={
        "store": "object store: moto or seaweedfs",
        "ready_file": "where to write the ready file (default: $XDG_STATE_HOME/sync-ci/sandbox.json)",
        "fault": "fault from the start KEY=VALUE (5xx_rate, latency_ms, kv_miss_ms.<COLO>...)",
        "kv_miss_ms": "cold KV miss latency of a region, COLO=MS (e.g. SIN=150)",
        "mutant": "run a Worker that breaks the contract in one named way (docs/mutants.md)",
        "worker": "the reference Worker: python or workerd",
        "quiet": "print nothing",
    }
)
def sandbox(
    c: Context,
    store: str = "moto",
    ready_file: str = "",
    fault: str = "",
    kv_miss_ms: str = "",
    mutant: str = "",
    worker: str = "python",
    quiet: bool = False,
) -> None:
    """Run the embedded sandbox (object store + reference Worker) until interrupted."""
    from sync_ci.sandbox.cli import sandbox_command

    _call(
        lambda: sandbox_command(
            store=store,
            faults=[fault] if fault else [],
            kv_miss_ms=[kv_miss_ms] if kv_miss_ms else [],
            ready_file=ready_file,
            quiet=quiet,
            mutant=mutant,
            worker=worker,
        )
    )


@task(
    help={
        "set": "set a fault KEY=VALUE (VALUE a number, or null to remove it)",
        "clear": "remove every fault first",
        "config": CONFIG,
    }
)
def sandbox_fault(
    c: Context,
    set: str = "",  # the option is `sync-ci sandbox-fault --set`
    clear: bool = False,
    config: str = "",
) -> None:
    """Change the faults of the running sandbox (SYNC_CI_SANDBOX) and print them."""
    from sync_ci.sandbox.cli import fault_command

    items = [set] if set else []
    _call(lambda: fault_command(set_items=items, clear=clear, config=config or None))


@task(
    help={
        "platform": "ubuntu, macos or wsl2",
        "output": "recording path (default: CASTS/PLATFORM.cast)",
        "casts": "where recordings live",
        "version": "the version the script installs (default: this sync-ci's)",
    }
)
def record_cast(
    c: Context, platform: str = "", output: str = "", casts: str = "casts", version: str = ""
) -> None:
    """Record the standard launch script with asciinema for one platform."""
    from sync_ci.gates.cli import record

    _call(
        lambda: record(
            platform=platform, output=output, casts=casts, launch_version=version or None
        )
    )


GATE_HTML = "also write the gates report page (percentile curves, thresholds, verdicts) here"
GATE_HELP = {
    "target": "sandbox or ci (the load gate pushes, so not live)",
    "fault": FAULT + "; comma-separated for several",
    "threshold": "tighten thresholds ID=VALUE, comma-separated (loosening is refused, exit 2)",
    "timeout": "per-request bound in seconds, 0 < SECONDS <= 600",
    "json": JSON,
    "junit": JUNIT,
    "html": GATE_HTML,
    "quiet": QUIET,
    "processes": "client processes, 1 to 256 (with --engine locust: local workers; default 1)",
    "engine": "builtin (this process, or --processes forked children; the default) or locust",
    "merge": "comma-separated result files from several machines: judge them, measure nothing",
}
LOAD_HELP = {
    **GATE_HELP,
    "installs": "concurrent GET /install, 1000 to 100000 (default 1000)",
    "pushes": "concurrent POST /_push, 100 to 100000 (default 100)",
    "rate": "open-model phase after the burst: requests per second (with --duration)",
    "duration": "open-model phase: seconds (with --rate)",
}
# A gate task's parameters named apart from its command's option (the option's dest).
GATE_DESTS = {"html": "html_path", "version": "launch_version"}


def _gate(name: str, given: dict[str, Any]) -> None:
    """Run `sync-ci gate NAME` on a gate task's parameters (its `locals()`): they are the
    command's options by name and type, "" is "not given" and a repeatable one a comma list."""
    from sync_ci.gates.cli import RUNS
    from sync_ci.gates.options import gate_request

    values = {GATE_DESTS.get(key, key): value for key, value in given.items() if key != "c"}
    outputs = report_outputs(values.pop("json"), values.pop("junit"), quiet=values.pop("quiet"))
    _call(lambda: RUNS[name](gate_request({**values, "outputs": outputs})))


@task(help=LOAD_HELP)
def load(
    c: Context,
    target: str = "",
    fault: str = "",
    threshold: str = "",
    timeout: float = 60.0,
    installs: int = 1000,
    pushes: int = 100,
    processes: int = 1,
    rate: float = 0.0,
    duration: float = 0.0,
    engine: str = "builtin",
    merge: str = "",
    json: str = "",
    junit: str = "",
    html: str = "",
    quiet: bool = False,
) -> None:
    """Gate: 1,000 installs + 100 pushes in one burst (p95 < 2 s / < 5 s, zero 5xx)."""
    _gate("load", locals())


@task(
    help={
        **GATE_HELP,
        "target": "sandbox, ci or live (GETs only)",
        "samples": "cold reads per region, 200 to 100000 (default 200)",
        "concurrency": "probes in flight per region, 1 to 1000 (default 8)",
    }
)
def latency(
    c: Context,
    target: str = "",
    fault: str = "",
    threshold: str = "",
    timeout: float = 60.0,
    samples: int = 200,
    concurrency: int = 8,
    processes: int = 1,
    engine: str = "builtin",
    merge: str = "",
    json: str = "",
    junit: str = "",
    html: str = "",
    quiet: bool = False,
) -> None:
    """Gate: cold KV-miss probe across 5 regions (p95 < 500 ms, p99 < 1,500 ms)."""
    _gate("latency", locals())


@task(
    help={
        "casts": "directory holding ubuntu/macos/wsl2 recordings",
        "version": "the version being launched (default: this sync-ci's)",
        **REPORTS,
    }
)
def platforms(
    c: Context,
    casts: str = "casts",
    version: str = "",
    json: str = "",
    junit: str = "",
    quiet: bool = False,
) -> None:
    """Gate: three platform recordings, all green."""
    _gate("platforms", locals())


@task(
    name="all",
    help={
        "target": "sandbox or ci (the load gate pushes, so not live)",
        "casts": "directory of recordings",
        "threshold": GATE_HELP["threshold"],
        "json": JSON,
        "junit": JUNIT,
        "html": GATE_HTML,
        "quiet": QUIET,
    },
)
def all_gates(
    c: Context,
    target: str = "",
    casts: str = "casts",
    threshold: str = "",
    json: str = "",
    junit: str = "",
    html: str = "",
    quiet: bool = False,
) -> None:
    """Run every gate and print one table."""
    _gate("all", locals())


gates = Collection("gates", load, latency, platforms, all_gates)
ns = Collection(
    ci_loop,
    smoke,
    cleanup,
    cleanup_lifecycle,
    install_cron,
    uninstall_cron,
    cron_show,
    doctor,
    status,
    verify,
    alert,
    config,
    lint,
    sandbox,
    sandbox_fault,
    record_cast,
    conformance,
    gates,
)
