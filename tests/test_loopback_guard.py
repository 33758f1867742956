"""The loopback-only rule is enforced: 10.255.255.1 is refused before a packet leaves."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.loopback_guard import NonLoopbackSocket, is_loopback_host, refusal, take_refusals

ROOT = Path(__file__).resolve().parents[1]
OFF_MACHINE = "10.255.255.1"  # private and unrouted: a connect there would hang, not answer


def test_a_connect_off_the_machine_is_refused_before_it_is_sent() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        with pytest.raises(NonLoopbackSocket, match=re.escape(f"{OFF_MACHINE}:9")):
            sock.connect((OFF_MACHINE, 9))
        with pytest.raises(NonLoopbackSocket):
            sock.connect_ex((OFF_MACHINE, 9))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(NonLoopbackSocket):
        udp.sendto(b"x", (OFF_MACHINE, 9))
    # This test caught the refusals on purpose; the autouse fixture would fail it otherwise.
    assert len(take_refusals()) == 3


def test_loopback_and_unix_sockets_are_allowed(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            pass
        with socket.create_connection(("localhost", port), timeout=30):
            pass
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
    assert take_refusals() == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("10.255.255.1", False),
        ("0.0.0.0", False),  # noqa: S104 (judged, never bound)
        ("::", False),
        ("::ffff:10.0.0.1", False),
        ("192.0.2.1", False),
        ("128.0.0.1", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_refusal_judges_inet_addresses_only() -> None:
    assert refusal(socket.AF_UNIX, "/tmp/s") == ""
    assert refusal(socket.AF_INET, None) == ""
    assert refusal(socket.AF_INET6, ("::1", 80, 0, 0)) == ""
    assert "203.0.113.5:443" in refusal(socket.AF_INET, ("203.0.113.5", 443))


def run_pytest(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """Run one test file under pytest with only the guard loaded, the way the suite loads it."""
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(body))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.loopback_guard",
            "-c",
            str(tmp_path / "pytest.ini"),
            str(tmp_path / "test_probe.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_test_that_swallows_the_refusal_still_fails(tmp_path: Path) -> None:
    done = run_pytest(
        tmp_path,
        f"""
        import socket

        def test_reaches_out():
            try:
                socket.create_connection(("{OFF_MACHINE}", 80), timeout=30)
            except Exception:
                pass  # code under test that hides every error
        """,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "non-loopback socket(s) refused" in done.stdout
    assert f"{OFF_MACHINE}:80" in done.stdout


def test_a_loopback_test_passes_under_the_guard(tmp_path: Path) -> None:
    done = run_pytest(
        tmp_path,
        """
        import socket

        def test_local():
            with socket.create_server(("127.0.0.1", 0)) as server:
                port = server.getsockname()[1]
                with socket.create_connection(("127.0.0.1", port), timeout=30):
                    pass
        """,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
