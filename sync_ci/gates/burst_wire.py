"""The bytes of a burst: requests encoded and checked before the start, answers parsed after it.

Kept apart from the client (`gates/burst`) so that what goes on the wire, and the write policy's
check on it, read in one place without the socket machinery: every request's bytes are built and
judged by `encode_request` before any connection opens, so nothing the policy refuses is ever
written. The open model (`gates/burst_open`) and the C floor of `benchmarks/bench_burst` send
these same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sync_ci.errors import GuardViolation, UsageError
from sync_ci.gates.http import USER_AGENT, HttpPolicy
from sync_ci.gates.scenario import OPERATIONS, PlannedRequest

HEADER_END = b"\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
# No body follows the headers of these answers (RFC 9112 section 6.3).
BODYLESS = (b" 204", b" 304")


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """Where the burst connects: scheme, resolved address, the Host header and the path prefix."""

    tls: bool
    host: str
    port: int
    authority: str
    prefix: str

    def url(self, path: str) -> str:
        """Return the absolute URL of a request path (what the write policy judges)."""
        return f"{'https' if self.tls else 'http'}://{self.authority}{self.prefix}{path}"


def parse_origin(base_url: str) -> Origin:
    """Split a Worker base URL into what the client needs; refuse anything but http(s)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"the load gate needs an http(s) Worker URL, not {base_url!r}")
    tls = parts.scheme == "https"
    return Origin(
        tls=tls,
        host=parts.hostname,
        port=parts.port or (443 if tls else 80),
        authority=parts.netloc.rpartition("@")[2],
        prefix=parts.path.rstrip("/"),
    )


def _header_line(name: str, value: str) -> str:
    if any(c in f"{name}{value}" for c in "\r\n\0") or ":" in name:
        raise GuardViolation(f"refused header {name!r}: control characters or ':' in it")
    return f"{name}: {value}\r\n"


def encode_request(request: PlannedRequest, origin: Origin, policy: HttpPolicy) -> bytes:
    """Return the request's bytes on the wire, checked by `policy` (a write names the CI root)."""
    headers = dict(request.headers)
    policy.apply(request.method, origin.url(request.path), headers)
    head = [
        f"{request.method.upper()} {origin.prefix}{request.path} HTTP/1.1\r\n",
        _header_line("host", origin.authority),
        _header_line("user-agent", USER_AGENT),
        "accept: */*\r\n",
    ]
    head += [_header_line(name, value) for name, value in headers.items()]
    if request.body or request.method.upper() not in ("GET", "HEAD"):
        head.append(f"content-length: {len(request.body)}\r\n")
    return "".join(head).encode("latin-1") + b"\r\n" + request.body


def send_order(plan: Sequence[PlannedRequest]) -> list[int]:
    """Return plan indices so each operation is spread evenly over the writes (none waits behind
    all of another)."""
    counts = {name: sum(1 for r in plan if r.operation == name) for name in OPERATIONS}
    seen = dict.fromkeys(counts, 0)
    keys: list[tuple[float, int]] = []
    for index, request in enumerate(plan):
        k = seen.get(request.operation, 0)
        seen[request.operation] = k + 1
        keys.append(((k + 0.5) / max(counts.get(request.operation, 1), 1), index))
    return [index for _, index in sorted(keys)]


def body_framing(head: bytes) -> int:
    """Return the body length the headers announce: >= 0 bytes, -1 chunked, -2 until close."""
    lowered = head.lower()
    if any(lowered[8:13].startswith(code) for code in BODYLESS):
        return 0
    if b"\r\ntransfer-encoding:" in lowered and b"chunked" in lowered:
        return -1
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        return -2
    end = lowered.find(b"\r\n", at + 2)
    try:
        return int(lowered[at + 17 : end if end >= 0 else None].strip())
    except ValueError:
        return -2


def dechunk(data: bytes) -> bytes:
    """Decode a chunked body (trailers dropped)."""
    out, at = bytearray(), 0
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return bytes(out)
        size = int(data[at:line_end].split(b";", 1)[0] or b"0", 16)
        if size == 0:
            return bytes(out)
        out += data[line_end + 2 : line_end + 2 + size]
        at = line_end + 4 + size


def parse_answer(buffer: bytes | bytearray, body_at: int, framing: int) -> tuple[int, bytes, str]:
    """Return (status, body, cf-ray) of a complete answer held in `buffer`."""
    head = bytes(buffer[: max(body_at - 4, 0)])
    status = int(head[9:12]) if head[:5] == b"HTTP/" and head[9:12].isdigit() else 0
    body = bytes(buffer[body_at:]) if body_at >= 0 else b""
    if framing == -1:
        body = dechunk(body)
    elif framing >= 0:
        body = body[:framing]
    ray = "no cf-ray"
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"cf-ray":
            ray = value.strip().decode("latin-1")
    return status, body, ray
