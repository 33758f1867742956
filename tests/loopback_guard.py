"""The loopback-only rule, enforced: a test that opens a socket to a non-loopback address fails.

An audit hook (`sys.addaudithook`) sees every `socket.connect`, `connect_ex`, `sendto` and
`sendmsg` of this process before the system call, whoever makes it (requests, botocore, aiohttp,
a raw socket). AF_UNIX and 127.0.0.0/8 or ::1 pass; anything else raises `NonLoopbackSocket` and
is recorded, so a test whose code swallows the error still fails at teardown. Child processes are
not covered: they are started by the tests and point at the loopback servers the fixtures start.
Loaded by `tests/conftest.py`; `pytest -p tests.loopback_guard` loads it alone.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class NonLoopbackSocket(RuntimeError):
    """A test opened a socket to an address off this machine."""


_refused: list[str] = []
_lock = threading.Lock()
_installed = False


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (also IPv4-mapped) and names that resolve only to those."""
    literal = host.split("%", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        name = host.lower().rstrip(".")
        if name in LOCAL_NAMES or name.endswith(".localhost"):
            return True
        try:
            found = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(found) and all(is_loopback_host(str(info[4][0])) for info in found)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def refusal(family: int, address: Any) -> str:
    """Say why a connect or send to `address` breaks the rule ('' when it is allowed)."""
    if family not in (socket.AF_INET, socket.AF_INET6) or address is None:
        return ""  # AF_UNIX and other local families; sendmsg on a connected socket
    if not isinstance(address, tuple) or not address:
        return f"socket address {address!r} is not a (host, port) pair"
    host = str(address[0])
    if is_loopback_host(host):
        return ""
    port = address[1] if len(address) > 1 else "?"
    return (
        f"a test opened a socket to {host}:{port}; tests talk only to 127.0.0.1 or ::1 "
        "(the loopback-only rule, tests/loopback_guard.py)"
    )


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in EVENTS:
        return
    sock, address = args[0], args[1] if len(args) > 1 else None
    why = refusal(getattr(sock, "family", -1), address)
    if why:
        with _lock:
            _refused.append(why)
        raise NonLoopbackSocket(why)


def install() -> None:
    """Add the audit hook once per process (audit hooks cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        _installed = True


def take_refusals() -> list[str]:
    """Return and forget what was refused since the last call."""
    with _lock:
        taken = list(_refused)
        _refused.clear()
    return taken


install()


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    """Fail the test if it tried to open a socket off this machine, even if its code caught that."""
    take_refusals()
    yield
    refused = take_refusals()
    if refused:
        pytest.fail(f"{len(refused)} non-loopback socket(s) refused: {refused[0]}", pytrace=False)
