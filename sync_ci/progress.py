"""Progress of a long command on stderr, drawn only on a terminal: each step as it starts and ends.

Logs, cron and CI (stderr not a TTY), `-q` and `--json -` see nothing from here: the report on
stdout and the error lines are the whole output there.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

from sync_ci.redaction import clean
from sync_ci.report_emit import Outputs
from sync_ci.report_text import format_duration

# Erase the line the cursor is on (VT100 "EL 2"); a dumb terminal gets whole lines instead.
ERASE_LINE = "\r\x1b[2K"
NEWLINE = "\n"
NAME_WIDTH = 22
# Statuses whose end line stays on the screen; a passing step's line is overwritten by the next.
KEPT = frozenset({"fail", "error"})


def wanted(
    stream: TextIO, *, quiet: bool = False, json_path: str | None = None, env: Mapping[str, str]
) -> bool:
    """Draw progress only on a terminal, never with -q or when the JSON document goes to stdout."""
    if quiet or json_path == "-" or env.get("TERM", "") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """Steps of one command on one stream: `start(name)`, then `end(name, status, seconds)`."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = False) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self._pending = ""  # text on the current line that the next write replaces
        self._started: dict[str, float] = {}

    def _draw(self, text: str, *, keep: bool) -> None:
        if not self.enabled:
            return
        line = clean(text, keep_newlines=False)
        try:
            erase = ERASE_LINE if self._pending else ""
            self.stream.write(f"{erase}{line}{NEWLINE if keep else ''}")
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False  # the terminal went away: the command goes on without it
            return
        self._pending = "" if keep else line

    def start(self, name: str) -> None:
        """Show that step `name` is running."""
        self._started[name] = time.perf_counter()
        self._draw(f"  {name} ...", keep=False)

    def end(self, name: str, status: str, duration_s: float | None = None) -> None:
        """Show how step `name` ended; a failing step's line stays on the screen."""
        started = self._started.pop(name, None)
        if duration_s is None:
            duration_s = 0.0 if started is None else time.perf_counter() - started
        text = f"  {name:<{NAME_WIDTH}} {status:<5} {format_duration(duration_s)}"
        self._draw(text, keep=status in KEPT)

    def note(self, text: str) -> None:
        """Show a passing remark (`starting the sandbox ...`) until the next step replaces it."""
        self._draw(f"  {text}", keep=False)

    def close(self) -> None:
        """Erase the last passing line, so the report starts on a clean line."""
        if self.enabled and self._pending:
            try:
                self.stream.write(ERASE_LINE)
                self.stream.flush()
            except (OSError, ValueError):
                pass
        self._pending = ""


_CURRENT: ContextVar[Progress | None] = ContextVar("sync_ci_progress", default=None)


def current() -> Progress:
    """The progress display of the running command (a silent one when none is shown)."""
    return _CURRENT.get() or Progress(enabled=False)


def for_outputs(outputs: Outputs, stream: TextIO | None = None) -> Progress:
    """A display for a command's report outputs: on stderr when it is a terminal, else silent."""
    stream = sys.stderr if stream is None else stream
    json_path = str(outputs.json) if outputs.json else None
    enabled = wanted(stream, quiet=outputs.quiet, json_path=json_path, env=os.environ)
    return Progress(stream, enabled=enabled)


@contextmanager
def showing(progress: Progress) -> Iterator[Progress]:
    """Make `progress` the running command's display until the block ends, then erase its line."""
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        progress.close()
        _CURRENT.reset(token)
