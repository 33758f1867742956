"""The `sync-ci` console script: parses arguments and hands each subcommand to its module."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from sync_ci import __version__
from sync_ci.errors import ExitCode
from sync_ci.options import Parser
from sync_ci.running import BROKEN_PIPE_EXIT, Handler, as_process, call, run_handler

# The top floor: front ends (the invoke tasks, tests) take these from here; no module below does.
__all__ = [
    "BROKEN_PIPE_EXIT",
    "COMMANDS",
    "Handler",
    "Parser",
    "build_parser",
    "call",
    "main",
    "run_handler",
]

# Which module registers each subcommand, so a run imports only the one it needs: every module
# costs its imports (the launcher, boto3, the Locust engine, the lint catalogue), and the field
# cron line runs `doctor` every six hours on every tenant machine. A test keeps this in step.
COMMANDS: dict[str, str] = {
    "smoke": "sync_ci.smoke",
    "ci-loop": "sync_ci.ci_loop",
    "sandbox": "sync_ci.sandbox.cli",
    "sandbox-fault": "sync_ci.sandbox.cli",
    "config": "sync_ci.config_cli",
    "cleanup": "sync_ci.cleanup",
    "doctor": "sync_ci.field.doctor",
    "alert": "sync_ci.field.alerts",
    "cron": "sync_ci.field.cron",
    "status": "sync_ci.field.status",
    "verify": "sync_ci.field.verify",
    "gate": "sync_ci.gates.cli",
    "conformance": "sync_ci.conformance",
    "lint": "checks.cli",
}
# Each module here defines `add_parser(subparsers)`, which registers its subcommands and sets
# `func` (a callable taking the parsed Namespace and returning the exit code).
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser for the subcommand `argv` names, or with every available one.

    Without a known subcommand in `argv` (none given, `--help`, a typo) every module is loaded,
    so the listing and argparse's "invalid choice" line name them all.
    """
    parser = Parser(
        prog="sync-ci",
        description="Feedback loops and launch gates for the sync layer (bucket + Worker).",
        epilog="Exit codes: 0 all passed, 1 something failed, 2 usage or settings error, "
        "3 could not measure (target unreachable); doctor returns its failure count.",
    )
    parser.add_argument("--version", action="version", version=f"sync-ci {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _modules_for(argv):
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        module.add_parser(sub)
    return parser


def _modules_for(argv: Sequence[str] | None) -> Sequence[str]:
    """The modules to load: the named subcommand's alone when it is known and installed."""
    if argv is None:
        return COMMAND_MODULES
    # The top-level parser has no option that takes a value, so the first word is the command;
    # an option before it (`--help doctor`) is the top level's own and wants the full listing.
    first = next((arg for arg in argv if not arg.startswith("-")), "")
    module = COMMANDS.get(first)
    if module is None or argv[0] != first or importlib.util.find_spec(module) is None:
        return COMMAND_MODULES
    return (module,)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the chosen subcommand; SIGINT/SIGTERM stop every child first."""
    return as_process(lambda: _dispatch(argv))


def _dispatch(argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else int(ExitCode.USAGE)
    handler: Handler | None = getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return int(ExitCode.USAGE)
    return run_handler(handler, args)
