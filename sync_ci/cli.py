"""The `sync-ci` console script: parses arguments and hands each subcommand to its module."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from sync_ci import __version__
from sync_ci.errors import ExitCode, SyncCIError
from sync_ci.sandbox.processes import SignalStop, stop_on_signals

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
    "doctor": "sync_ci.doctor",
    "alert": "sync_ci.alerts",
    "cron": "sync_ci.cron",
    "status": "sync_ci.status",
    "verify": "sync_ci.verify",
    "gate": "sync_ci.gates.cli",
    "conformance": "sync_ci.conformance",
    "lint": "checks.cli",
}
# Each module here defines `add_parser(subparsers)`, which registers its subcommands and sets
# `func` (a callable taking the parsed Namespace and returning the exit code).
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))

Handler = Callable[[argparse.Namespace], int]
# What a shell reports for a process killed by SIGPIPE: the reader of stdout (`| head`) went away.
BROKEN_PIPE_EXIT = 141


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit 2, like every other."""

    def error(self, message: str) -> NoReturn:
        """Print `sync-ci: error: ...` naming the command and how to get its help, then exit 2."""
        from sync_ci.redaction import clean

        text = clean(message, keep_newlines=False)
        self.exit(int(ExitCode.USAGE), f"sync-ci: error: {text} (see `{self.prog} --help`)\n")


def number(
    kind: type[int] | type[float],
    *,
    minimum: float,
    maximum: float,
    above: bool = False,
    unit: str = "",
    why: str = "",
) -> Callable[[str], float]:
    """Return an argparse `type=` that accepts a finite number of `kind` in the given range.

    `above` makes the lower end exclusive (a budget or a timeout must be more than 0). The message
    names the accepted range, which argparse prefixes with the option's name, and `why` if given.
    """
    what = "a whole number" if kind is int else "a number"
    span = (
        f"more than {_plain(minimum)} and at most {_plain(maximum)}"
        if above
        else f"from {_plain(minimum)} to {_plain(maximum)}"
    )
    accepted = f"{what} {span}{' ' + unit if unit else ''}{f' ({why})' if why else ''}"

    def parse(text: str) -> float:
        try:
            value: float = kind(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {accepted}") from None
        too_low = value <= minimum if above else value < minimum
        if not math.isfinite(value) or too_low or value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is out of range: want {accepted}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some of its own messages
    return parse


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


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


TARGETS = ("sandbox", "ci", "live")


def add_common(parser: argparse.ArgumentParser, *, targets: Sequence[str] = TARGETS) -> None:
    """Add the options every suite shares; `targets` are the ones this suite can run against."""
    parser.add_argument(
        "--target",
        choices=tuple(targets),
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
    return run_work(lambda: handler(args), debug=bool(getattr(args, "debug", False)))


def run_work(work: Callable[[], int], *, debug: bool = False) -> int:
    """Run one command's work as `run_handler` does: one stderr line and an exit code per error.

    The invoke tasks call the command functions through this with typed values, so an error
    reads and exits the same from `invoke` as from `sync-ci`.
    """
    from sync_ci.redaction import clean, redacted_output

    try:
        with redacted_output():
            return work()
    except SyncCIError as exc:
        if debug:
            raise
        # One line, secrets masked, control characters visible: the text may quote a server.
        print(f"sync-ci: error: {clean(str(exc), keep_newlines=False)}", file=sys.stderr)
        return int(exc.exit_code)
    except BrokenPipeError:
        raise  # main() ends quietly: the reader of stdout went away
    except OSError as exc:
        # The machine, not the code: a read-only or full state dir, a missing working directory.
        if debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        text = clean(f"{exc.strerror or exc}{where}", keep_newlines=False)
        print(f"sync-ci: error: {text} (rerun with --debug for the traceback)", file=sys.stderr)
        return int(ExitCode.FAILED)
    except Exception as exc:
        # A bug, not bad input; its traceback could quote a header holding a secret.
        if debug:
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
    return _as_process(lambda: _dispatch(argv))


def call(work: Callable[[], int], *, debug: bool = False) -> int:
    """Run a command function as `main` runs a subcommand (for the invoke tasks).

    Signals stop every child first, a closed stdout ends quietly, and the project's errors are
    one stderr line and the exit code `sync-ci` would give.
    """
    return _as_process(lambda: run_work(work, debug=debug))


def _as_process(body: Callable[[], int]) -> int:
    try:
        with stop_on_signals():
            try:
                return body()
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
