"""How a command runs: one stderr line and an exit code per error, signals and a closed stdout.

`sync-ci` (through `sync_ci.cli.main`), the invoke tasks (through `call`) and the lint's own
entry points all run their work through here, so an error reads and exits the same from each.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable

from sync_ci.errors import ExitCode, SyncCIError
from sync_ci.sandbox.processes import SignalStop, stop_on_signals

Handler = Callable[[argparse.Namespace], int]
# What a shell reports for a process killed by SIGPIPE: the reader of stdout (`| head`) went away.
BROKEN_PIPE_EXIT = 141


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


def call(work: Callable[[], int], *, debug: bool = False) -> int:
    """Run a command function as `main` runs a subcommand (for the invoke tasks).

    Signals stop every child first, a closed stdout ends quietly, and the project's errors are
    one stderr line and the exit code `sync-ci` would give.
    """
    return as_process(lambda: run_work(work, debug=debug))


def as_process(body: Callable[[], int]) -> int:
    """Run `body` as a whole command: signals stop every child first, a closed stdout is quiet."""
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
