"""Progress on stderr: each smoke phase shown on a real pseudo-terminal, nothing anywhere else."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sync_ci import progress
from sync_ci.redaction import register_secrets
from sync_ci.smoke import READ_ONLY_PHASES, WRITE_PHASES

REPO = Path(__file__).resolve().parents[1]
ERASE = progress.ERASE_LINE


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _env(sandbox_env: dict[str, str], **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_CI_", "GITHUB_"))}
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**keep, **sandbox_env, "PYTHONPATH": python_path, "TERM": "xterm", **extra}


def _smoke_on_a_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run `python -m sync_ci <argv>` with stderr on a pseudo-terminal and stdout in a file."""
    main_fd, terminal_fd = os.openpty()
    out = cwd / "stdout.txt"
    try:
        with open(out, "wb") as stdout:
            child = subprocess.Popen(
                [sys.executable, "-m", "sync_ci", *argv],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=terminal_fd,
                env=env,
                cwd=cwd,
            )
    finally:
        os.close(terminal_fd)  # the child holds the only copy: EOF on main_fd when it exits
    screen = bytearray()
    with child:  # waits for the child whatever happens here
        try:
            while True:
                try:
                    chunk = os.read(main_fd, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    break
                if not chunk:
                    break
                screen += chunk
        finally:
            os.close(main_fd)
        code = child.wait(timeout=600)
    return code, out.read_text(encoding="utf-8"), screen.decode()


def _smoke_without_a_terminal(
    argv: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sync_ci", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def _rows(path: Path) -> dict[str, str]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return {r["id"].removeprefix("phase:"): r["status"] for r in document["results"]}


# --- the display itself ----------------------------------------------------------------------


def test_a_step_is_shown_as_it_starts_and_replaced_by_how_it_ended() -> None:
    screen = Terminal()
    shown = progress.Progress(screen, enabled=True)
    shown.start("install")
    assert screen.getvalue() == "  install ..."
    shown.end("install", "pass", 1.2)
    shown.start("catalog")
    shown.end("catalog", "fail", 0.25)
    shown.close()
    assert screen.getvalue() == (
        "  install ..."
        f"{ERASE}  install                pass  1.20 s"
        f"{ERASE}  catalog ..."
        f"{ERASE}  catalog                fail  250 ms\n"
    )


def test_close_erases_a_passing_line_so_the_report_starts_clean() -> None:
    screen = Terminal()
    shown = progress.Progress(screen, enabled=True)
    shown.start("push")
    shown.end("push", "pass", 0.1)
    shown.close()
    assert screen.getvalue().endswith(f"pass  100 ms{ERASE}")


def test_a_silent_display_writes_nothing() -> None:
    screen = Terminal()
    shown = progress.Progress(screen, enabled=False)
    shown.note("preparing the sandbox target ...")
    shown.start("install")
    shown.end("install", "fail", 1.0)
    shown.close()
    assert screen.getvalue() == ""


@pytest.mark.parametrize(
    ("stream", "quiet", "json_path", "term", "expected"),
    [
        pytest.param(Terminal(), False, None, "xterm", True, id="terminal"),
        pytest.param(io.StringIO(), False, None, "xterm", False, id="pipe-or-file"),
        pytest.param(Terminal(), True, None, "xterm", False, id="quiet"),
        pytest.param(Terminal(), False, "-", "xterm", False, id="json-to-stdout"),
        pytest.param(Terminal(), False, "out.json", "xterm", True, id="json-to-a-file"),
        pytest.param(Terminal(), False, None, "dumb", False, id="dumb-terminal"),
    ],
)
def test_progress_is_wanted_only_on_a_real_terminal(
    stream: io.StringIO, quiet: bool, json_path: str | None, term: str, expected: bool
) -> None:
    assert progress.wanted(stream, quiet=quiet, json_path=json_path, env={"TERM": term}) is expected


def test_a_closed_terminal_stops_the_display_not_the_command() -> None:
    screen = Terminal()
    shown = progress.Progress(screen, enabled=True)
    screen.close()
    shown.start("install")  # no ValueError: the command goes on
    shown.end("install", "pass", 1.0)
    assert not shown.enabled


def test_text_on_the_terminal_is_redacted_and_escaped() -> None:
    register_secrets(["progress-sentinel-0123456789"])
    screen = Terminal()
    shown = progress.Progress(screen, enabled=True)
    shown.note("token progress-sentinel-0123456789 \x1b[31m")
    assert "progress-sentinel" not in screen.getvalue()
    assert "\x1b[31m" not in screen.getvalue()


def test_outside_a_command_the_current_display_is_silent() -> None:
    assert not progress.current().enabled
    shown = progress.Progress(Terminal(), enabled=True)
    with progress.showing(shown):
        assert progress.current() is shown
    assert progress.current() is not shown


# --- the smoke as a person and as cron see it -------------------------------------------------


@pytest.mark.slow
def test_the_smoke_shows_every_phase_on_a_terminal(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """Each phase appears as it starts and with the status its report row has, on stderr only."""
    report = tmp_path / "smoke.json"
    code, stdout, screen = _smoke_on_a_terminal(
        ["smoke", "--json", str(report)], _env(sandbox_env), tmp_path
    )
    rows = _rows(report)
    assert list(rows) == list(WRITE_PHASES)
    assert code == (0 if all(s in ("pass", "skip") for s in rows.values()) else 1), screen
    assert screen.startswith("  preparing the sandbox target ...")
    for name, status in rows.items():
        assert f"{ERASE}  {name} ..." in screen, name
        assert re.search(rf"{re.escape(ERASE)}  {re.escape(name)} +{status} +\d", screen), name
    assert screen.endswith(ERASE) or screen.endswith("\n")
    # The phases appear in the order they ran.
    starts = [screen.index(f"{ERASE}  {name} ...") for name in rows]
    assert starts == sorted(starts)
    # stdout is the report alone: no progress, no escape sequence.
    assert ERASE not in stdout and " ..." not in stdout
    assert "preflight" in stdout


@pytest.mark.slow
def test_without_a_terminal_the_smoke_prints_nothing_extra(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """stderr to a pipe (logs, cron, CI): the same bytes as before progress existed, none."""
    report = tmp_path / "smoke.json"
    done = _smoke_without_a_terminal(
        ["smoke", "--read-only", "--json", str(report)], _env(sandbox_env), tmp_path
    )
    assert list(_rows(report)) == list(READ_ONLY_PHASES)
    assert done.returncode == 0, done.stdout.decode()
    assert done.stderr == b""
    assert ERASE.encode() not in done.stdout


@pytest.mark.slow
def test_quiet_on_a_terminal_shows_nothing(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    """-q really is quiet, terminal or not."""
    code, stdout, screen = _smoke_on_a_terminal(
        ["smoke", "--read-only", "-q"], _env(sandbox_env), tmp_path
    )
    assert code == 0, stdout
    assert screen == ""
    assert stdout == ""


@pytest.mark.slow
def test_a_ci_loop_run_by_hand_shows_its_phases(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """The scheduled pass, run at a terminal: the read-only phases on stderr; from cron, none."""
    argv = ["ci-loop", "--alerts-dir", str(tmp_path / "alerts")]
    code, stdout, screen = _smoke_on_a_terminal(argv, _env(sandbox_env), tmp_path)
    assert code == 0, stdout
    for name in READ_ONLY_PHASES:
        assert f"  {name} ..." in screen, name
    assert stdout.startswith("ci-loop: ok")
