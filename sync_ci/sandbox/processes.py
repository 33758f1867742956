"""Child processes that never outlive sync-ci: own process group, death with the parent, signals.

Every server the sandbox starts goes through `spawn`: its own session and process group (so a
terminal's Ctrl-C reaches sync-ci alone, which then stops it in order), a parent-death signal on
Linux or a watchdog process elsewhere, and a registry that a signal or interpreter exit empties.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

STOP_TIMEOUT_S = 5.0
WATCHDOG_GRACE_S = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The watchdog holds the read end of a pipe whose write end only the parent has: EOF means the
# parent is gone (however it died), and the child's whole process group goes with it.
_WATCHDOG = """\
import os, signal, sys, time
group, grace = int(sys.argv[1]), float(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
while os.read(0, 4096):
    pass
def gone():
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return True
    return False
if not gone():
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not gone():
        os.killpg(group, signal.SIGKILL)
"""


class SignalStop(BaseException):
    """SIGTERM arrived: unwind (so every `with` block stops its children), then exit 128+N."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's code for death by this signal."""
        return 128 + self.signum


class Child:
    """A spawned child: the Popen, and the watchdog that stops its group if sync-ci dies."""

    def __init__(
        self, process: subprocess.Popen[bytes], watchdog: subprocess.Popen[bytes] | None
    ) -> None:
        self.process = process
        self.watchdog = watchdog
        self.pipe: int | None = None

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self.process.pid


_children: dict[int, Child] = {}
_workdirs: set[Path] = set()
_lock = threading.Lock()


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except (ImportError, OSError):
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


def _death_signal_preexec(parent: int) -> Callable[[], None] | None:
    prctl = _libc_prctl()
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody will send the signal.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def last_line(path: Path) -> str:
    """The last non-empty line a child wrote to its log file, for a one-line error."""
    try:
        lines = path.read_bytes().decode(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(empty log)"


def spawn(
    argv: Sequence[str], *, watchdog: bool = False, death_signal: bool = True, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group, dying with this process; register it for stopping.

    The parent-death signal reaches the child alone and is bound to the thread that forks, so a
    watchdog process, which kills the whole group, is added for a child that forks servers of its
    own (`watchdog=True`), off the main thread, and where there is no such signal (off Linux).
    """
    for reserved in ("start_new_session", "process_group", "preexec_fn"):
        if reserved in popen:
            raise TypeError(f"spawn() sets {reserved} itself")
    preexec = None
    if death_signal and threading.current_thread() is threading.main_thread():
        preexec = _death_signal_preexec(os.getpid())
    watchdog = watchdog or preexec is None
    process: subprocess.Popen[bytes] = subprocess.Popen(
        list(argv), start_new_session=True, preexec_fn=preexec, **popen
    )
    child = Child(process, None)
    if watchdog:
        read_end, write_end = os.pipe()
        try:
            child.watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(process.pid), str(WATCHDOG_GRACE_S)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            os.close(write_end)
            kill_group(process.pid, signal.SIGKILL)
            process.wait()
            raise
        finally:
            os.close(read_end)
        child.pipe = write_end
    with _lock:
        _children[process.pid] = child
    return process


def kill_group(pgid: int, signum: signal.Signals) -> None:
    """Signal a process group, ignoring one that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_process_group(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM a child's process group, SIGKILL it after `timeout_s`, and reap the child."""
    if process.poll() is None:
        kill_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout_s)
    # Anything the child left in its group goes too.
    kill_group(process.pid, signal.SIGKILL)
    _forget(process.pid)


def stop_all_groups(
    processes: Sequence[subprocess.Popen[bytes]], timeout_s: float = STOP_TIMEOUT_S
) -> None:
    """SIGTERM every group at once, then wait for each (SIGKILL after `timeout_s`)."""
    for process in processes:
        if process.poll() is None:
            kill_group(process.pid, signal.SIGTERM)
    for process in processes:
        stop_process_group(process, timeout_s)


def _forget(pid: int) -> None:
    with _lock:
        child = _children.pop(pid, None)
    if child is None:
        return
    if child.pipe is not None:
        with contextlib.suppress(OSError):
            os.close(child.pipe)
        child.pipe = None
    if child.watchdog is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.watchdog.wait(timeout=WATCHDOG_GRACE_S + 1)


def start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux), telling a reused pid apart."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def is_running(pid: int, started: int | None = None) -> bool:
    """True when `pid` runs (not a zombie) and, when `started` is given, is the same process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: the signal test is all there is
    if state in ("Z", "X"):
        return False
    return started is None or start_ticks(pid) in (None, started)


def registered_pids() -> list[int]:
    """The pids of children started by `spawn` and not yet stopped."""
    with _lock:
        return sorted(_children)


def own_workdir(path: Path) -> None:
    """Remove `path` when this process is stopped by a signal or exits without removing it."""
    with _lock:
        _workdirs.add(Path(path))


def release_workdir(path: Path) -> None:
    """Remove `path` now and stop tracking it."""
    with _lock:
        _workdirs.discard(Path(path))
    shutil.rmtree(path, ignore_errors=True)


def terminate_all() -> None:
    """Send SIGTERM to every registered group and remove tracked workdirs; wait for nothing."""
    with _lock:
        pids, workdirs = list(_children), list(_workdirs)
    for pid in pids:
        kill_group(pid, signal.SIGTERM)
    for path in workdirs:
        shutil.rmtree(path, ignore_errors=True)


@atexit.register
def stop_all() -> None:
    """Stop every registered child and remove tracked workdirs (at interpreter exit too)."""
    with _lock:
        children, workdirs = list(_children.values()), list(_workdirs)
    stop_all_groups([child.process for child in children])
    for path in workdirs:
        release_workdir(path)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """For the block: the first SIGINT or SIGTERM starts stopping children and unwinds.

    SIGINT raises KeyboardInterrupt and SIGTERM raises SignalStop. The second signal (nox follows
    SIGINT with SIGTERM) only repeats the SIGTERM to the children, so it does not break the orderly
    stop already under way; a third raises again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        # This call's own rank: a second signal can run this handler again inside the first
        # (timeout(1) signals the command, then its whole group), and the first must still raise.
        nth = len(received)
        terminate_all()
        if nth == 2:
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SignalStop(signum)

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
