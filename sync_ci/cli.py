"""The `sync-ci` console script: parses arguments and hands each subcommand to its module."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence

from sync_ci import __version__
from sync_ci.errors import ExitCode, SyncCIError
from sync_ci.sandbox.processes import SignalStop, stop_on_signals

# Each module here defines `add_parser(subparsers)`, which registers one or more subcommands and
# sets `func` (a callable taking the parsed Namespace and returning the exit code).
COMMAND_MODULES = (
    "sync_ci.smoke",
    "sync_ci.ci_loop",
    "sync_ci.sandbox.cli",
    "sync_ci.config_cli",
    "sync_ci.cleanup",
    "sync_ci.doctor",
    "sync_ci.alerts",
    "sync_ci.cron",
    "sync_ci.status",
    "sync_ci.verify",
    "sync_ci.gates.cli",
    "sync_ci.conformance",
    "checks.cli",
)

Handler = Callable[[argparse.Namespace], int]
# What a shell reports for a process killed by SIGPIPE: the reader of stdout (`| head`) went away.
BROKEN_PIPE_EXIT = 141


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="sync-ci",
        description="Feedback loops and launch gates for the sync layer (bucket + Worker).",
        epilog="Exit codes: 0 all passed, 1 something failed, 2 usage or settings error, "
        "3 could not measure (target unreachable); doctor returns its failure count.",
    )
    parser.add_argument("--version", action="version", version=f"sync-ci {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        module.add_parser(sub)
    return parser


def add_common(parser: argparse.ArgumentParser) -> None:
    """Add the options every suite shares."""
    parser.add_argument(
        "--target",
        choices=("sandbox", "ci", "live"),
        help="what to run against (default: settings, else sandbox)",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="settings file (default: SYNC_CI_CONFIG, ./sync-ci.toml, user config dir)",
    )
    parser.add_argument(
        "--json", metavar="PATH", dest="json_path", help="also write the result document as JSON"
    )
    parser.add_argument(
        "--junit", metavar="PATH", dest="junit_path", help="also write a JUnit XML report"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def parse_assignments(items: Sequence[str], flag: str) -> dict[str, str]:
    """Parse repeated `KEY=VALUE` options; a bad one is a usage error naming the flag."""
    from sync_ci.errors import UsageError

    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"{flag} {item!r} is not KEY=VALUE (e.g. {flag} 5xx_rate=0.1)")
        parsed[key.strip()] = value.strip()
    return parsed


def run_handler(handler: Handler, args: argparse.Namespace) -> int:
    """Run a subcommand, turning the project's errors into one stderr line and an exit code."""
    from sync_ci.redaction import clean, redacted_output

    try:
        with redacted_output():
            return handler(args)
    except SyncCIError as exc:
        if getattr(args, "debug", False):
            raise
        # One line, secrets masked, control characters visible: the text may quote a server.
        print(f"sync-ci: error: {clean(str(exc), keep_newlines=False)}", file=sys.stderr)
        return int(exc.exit_code)
    except BrokenPipeError:
        raise  # main() ends quietly: the reader of stdout went away
    except OSError as exc:
        # The machine, not the code: a read-only or full state dir, a missing working directory.
        if getattr(args, "debug", False):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        text = clean(f"{exc.strerror or exc}{where}", keep_newlines=False)
        print(f"sync-ci: error: {text} (rerun with --debug for the traceback)", file=sys.stderr)
        return int(ExitCode.FAILED)
    except Exception as exc:
        # A bug, not bad input; its traceback could quote a header holding a secret.
        if getattr(args, "debug", False):
            raise
        text = clean(f"{type(exc).__name__}: {exc}", keep_newlines=False)
        print(
            f"sync-ci: error: unexpected {text} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return int(ExitCode.FAILED)
    except KeyboardInterrupt:
        print("sync-ci: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the chosen subcommand; SIGINT/SIGTERM stop every child first."""
    try:
        with stop_on_signals():
            try:
                return _dispatch(argv)
            finally:
                sys.stdout.flush()
    except BrokenPipeError:
        # Python's recipe: point stdout at devnull so the flush at exit cannot fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
    except KeyboardInterrupt:
        print("sync-ci: interrupted", file=sys.stderr)
        return 130
    except SignalStop as exc:
        print(f"sync-ci: stopped by {exc}", file=sys.stderr)
        return exc.exit_code


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return int(ExitCode.USAGE)
    return run_handler(handler, args)
