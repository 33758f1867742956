"""The burst client: hand-written HTTP/1.1 on bare sockets, every connection open before the start.

Each request's bytes are built (and checked against the target's write policy) before any
connection opens; the connections open concurrently; at the start every request is written in one
tight pass, pushes interleaved with installs, and a response is only timestamped and kept until
the burst is over, when it is parsed and judged. One deadline covers the whole burst.

Over plain TCP on Linux the pass reads nothing: each answer is stamped with the time the kernel
received its last byte (SO_TIMESTAMPNS), so answers read after the pass keep their exact latency
and the pass is the writes alone. Over TLS (asyncio's SSL transports) the pass polls the loop
every WRITES_BETWEEN_READS writes instead, so answers that came meanwhile are timestamped then.
The bytes themselves are `gates/burst_wire`'s. Over 400 lines because both connection kinds (the
bare-socket `Link`, the TLS `Exchange`), their opening and the one start pass that drives and
times them are a single mechanism, read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from sync_ci.gates import histogram
from sync_ci.gates.burst_wire import (
    HEADER_END,
    LAST_CHUNK,
    Origin,
    body_framing,
    encode_request,
    parse_answer,
    parse_origin,
    send_order,
)
from sync_ci.gates.http import HttpPolicy, check_timeout
from sync_ci.gates.outcome import BURST, PhaseOutcome, Tally
from sync_ci.gates.scenario import OPERATIONS, PlannedRequest

WRITES_BETWEEN_READS = 64
# The kernel's receive time of the data a recvmsg returns (a struct timespec of CLOCK_REALTIME);
# Python names the option from 3.12 only, and Linux numbers it 35 on the common architectures.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else 0)
STAMP = struct.Struct("@qq")
READ_SIZE = 65536
ANCILLARY_SIZE = socket.CMSG_SPACE(STAMP.size)


class Writer(Protocol):
    """Where the start pass writes a request: an asyncio transport or a bare `Link`."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class Exchange(asyncio.Protocol):
    """One connection, one request at a time: keep the answer's bytes and when its last byte came."""

    __slots__ = (
        "arrived_ns",
        "body_at",
        "buffer",
        "closed",
        "ended_ns",
        "error",
        "framing",
        "keep",
        "on_done",
        "transport",
    )

    def __init__(self, on_done: Callable[[], None]) -> None:
        self.buffer = bytearray()
        self.body_at = -1
        self.framing = -2
        self.ended_ns = 0
        # When the bytes being handed to data_received reached the kernel (0: unknown, use now).
        self.arrived_ns = 0
        self.error = ""
        self.keep = True
        self.closed = False
        self.on_done = on_done
        self.transport: asyncio.Transport | None = None

    def restart(self, on_done: Callable[[], None]) -> None:
        """Make a kept-alive connection ready for its next request."""
        self.buffer = bytearray()
        self.body_at, self.framing, self.ended_ns, self.error = -1, -2, 0, ""
        self.on_done = on_done

    @property
    def reusable(self) -> bool:
        """True when the last answer ended cleanly and the connection may carry another."""
        return self.keep and not self.closed and not self.error and self.framing != -2

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self.ended_ns:
            return
        self.buffer += data
        if self.body_at < 0:
            end = self.buffer.find(HEADER_END)
            if end < 0:
                return
            self.body_at = end + 4
            head = bytes(self.buffer[:end])
            self.framing = body_framing(head)
            self.keep = b"\r\nconnection: close" not in head.lower()
        if self.framing >= 0:
            complete = len(self.buffer) - self.body_at >= self.framing
        else:
            complete = self.framing == -1 and self.buffer.endswith(LAST_CHUNK)
        if complete:
            self._finish("")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.ended_ns:
            return
        if exc is None and self.body_at >= 0 and self.framing == -2:
            self._finish("")
        else:
            self._finish(f"{type(exc).__name__}: {exc}" if exc else "connection closed early")

    def _finish(self, error: str) -> None:
        # Only the time and a count here: the connection is closed when the burst is over, so
        # no close (a syscall and a FIN) sits between one answer and the next one's timestamp.
        self.ended_ns = self.arrived_ns or time.perf_counter_ns()
        self.error = error
        self.on_done()

    def answer(self) -> tuple[int, bytes, str]:
        """Return (status, body, cf-ray) of a complete answer."""
        return parse_answer(self.buffer, self.body_at, self.framing)


class Link:
    """A plain-TCP burst connection on a bare nonblocking socket, feeding its `Exchange`.

    A write goes straight to `send` (what the kernel does not take yet is queued for the loop to
    finish); a read is a `recvmsg` that also returns when the kernel received those bytes, and the
    exchange timestamps the answer's last byte with that time, however late the loop reads it.
    """

    __slots__ = ("exchange", "fd", "loop", "offset_ns", "rest", "sock")

    def __init__(
        self, sock: socket.socket, exchange: Exchange, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.sock, self.exchange, self.loop = sock, exchange, loop
        self.fd = sock.fileno()
        self.rest = memoryview(b"")
        # CLOCK_REALTIME minus perf_counter: turns a kernel stamp into the burst's clock.
        self.offset_ns = 0

    def write(self, data: bytes) -> None:
        try:
            taken = self.sock.send(data)
        except BlockingIOError:
            taken = 0
        except OSError as exc:
            self._lost(exc)
            return
        if taken < len(data):
            self.rest = memoryview(data)[taken:]
            self.loop.add_writer(self.fd, self._flush)

    def _flush(self) -> None:
        try:
            taken = self.sock.send(self.rest)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(exc)
            return
        self.rest = self.rest[taken:]
        if not self.rest:
            self.loop.remove_writer(self.fd)

    def readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(READ_SIZE, ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        self.exchange.arrived_ns = kernel_time(ancillary, self.offset_ns)
        self.exchange.data_received(data)

    def _lost(self, exc: Exception | None) -> None:
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.exchange.arrived_ns = 0
        self.exchange.connection_lost(exc)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.fd)
            self.loop.remove_writer(self.fd)
            self.sock.close()
        self.exchange.closed = True


def kernel_time(ancillary: Sequence[tuple[int, int, bytes]], offset_ns: int) -> int:
    """Return the kernel's receive time in a recvmsg's ancillary data (perf_counter ns), or 0."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= STAMP.size:
            seconds, nanoseconds = STAMP.unpack_from(data)
            return int(seconds) * 1_000_000_000 + int(nanoseconds) - offset_ns
    return 0


def send(writer: Writer, data: bytes) -> None:
    """Hand one request's bytes to the kernel (the whole per-request cost of the start)."""
    writer.write(data)


def tls_context(origin: Origin) -> ssl.SSLContext | None:
    return ssl.create_default_context() if origin.tls else None


async def connect(
    origin: Origin, address: str, tls: ssl.SSLContext | None, on_done: Callable[[], None]
) -> Exchange | str:
    loop = asyncio.get_running_loop()
    try:
        _, exchange = await loop.create_connection(
            lambda: Exchange(on_done),
            address,
            origin.port,
            ssl=tls,
            server_hostname=origin.host if tls else None,
        )
    except (OSError, ssl.SSLError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    return exchange


def bare_socket(address: str) -> socket.socket | None:
    """Return a nonblocking TCP socket that stamps what it receives, or None where it cannot."""
    if not SO_TIMESTAMPNS:
        return None
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports do
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if sock.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS) != 1:
            raise OSError("no receive timestamps")
    except OSError:
        sock.close()
        return None
    return sock


@dataclass(frozen=True, slots=True)
class Opening:
    """How the burst opens its connections: bare sockets when `bare` collects them, else
    asyncio transports (with `tls` when the origin is https)."""

    origin: Origin
    address: str
    tls: ssl.SSLContext | None
    on_done: Callable[[], None]
    bare: list[Link] | None

    async def bare_one(self, bare: list[Link]) -> Link | str:
        """Open one plain-TCP connection on a bare socket (kept in `bare`, whose owner closes it)."""
        loop = asyncio.get_running_loop()
        sock = bare_socket(self.address)
        if sock is None:
            return "OSError: this platform gives no receive timestamps"
        link = Link(sock, Exchange(self.on_done), loop)
        bare.append(link)
        try:
            await loop.sock_connect(sock, (self.address, self.origin.port))
        except OSError as exc:
            return f"{type(exc).__name__}: {str(exc)[:120]}"
        loop.add_reader(link.fd, link.readable)  # a server dropping it before the start is seen
        return link

    async def all(
        self, count: int, deadline_s: float
    ) -> tuple[list[Exchange | str], list[Writer | None]]:
        """Open `count` connections at once; return each one's exchange (or why it did not
        open) and what the start pass writes its request to."""
        opening: list[Awaitable[Link | Exchange | str]] = [
            self.bare_one(self.bare)
            if self.bare is not None
            else connect(self.origin, self.address, self.tls, self.on_done)
            for _ in range(count)
        ]
        try:
            opened = list(await asyncio.wait_for(asyncio.gather(*opening), deadline_s))
        except TimeoutError:
            return [f"TimeoutError: no connection within {deadline_s:g} s"] * count, [None] * count
        links = [link.exchange if isinstance(link, Link) else link for link in opened]
        writers: list[Writer | None] = [
            link if isinstance(link, Link) else None if isinstance(link, str) else link.transport
            for link in opened
        ]
        return links, writers


def stamps_arrivals(origin: Origin, address: str) -> bool:
    """True when the burst can go over bare sockets that stamp each answer's arrival."""
    if origin.tls or not address:
        return False
    probe = bare_socket(address)
    if probe is None:
        return False
    probe.close()
    return True


async def resolve(origin: Origin, deadline_s: float) -> tuple[str, str]:
    """Return (the address to connect to, '') or ('', why the host did not resolve)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM), deadline_s
        )
    except (OSError, TimeoutError) as exc:
        return "", f"{origin.host}: {type(exc).__name__}: {exc}"
    return str(infos[0][4][0]), ""


async def fire(
    plan: Sequence[PlannedRequest],
    base_url: str,
    policy: HttpPolicy,
    *,
    timeout_s: float,
    ready: Callable[[], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> PhaseOutcome:
    """Open one connection per request, then send them all at once; return exact outcomes.

    Every request is checked against `policy` before the first connection opens. Latency counts
    from each request's own write to its answer's last byte; the send lag from the release.
    """
    deadline_s = check_timeout(timeout_s)
    origin = parse_origin(base_url)
    wires = [encode_request(r, origin, policy) for r in plan]
    order = send_order(plan)
    planned = {name: sum(1 for r in plan if r.operation == name) for name in OPERATIONS}
    tally = Tally(planned, policy.write_root)
    pending = [len(plan)]
    all_done = asyncio.Event()

    def one_done() -> None:
        pending[0] -= 1
        if pending[0] <= 0:
            all_done.set()

    address, unresolved = await resolve(origin, deadline_s)
    bare = stamps_arrivals(origin, address)
    tls = None if bare else tls_context(origin)
    opened: list[Link] = []
    links: list[Exchange | str] = [unresolved] * len(plan)
    writers: list[Writer | None] = [None] * len(plan)
    sent = [0] * len(plan)
    ticker: asyncio.Task[None] | None = None
    collecting = gc.isenabled()
    try:
        if address:
            connecting = Opening(origin, address, tls, one_done, opened if bare else None)
            links, writers = await connecting.all(len(plan), deadline_s)
        for link in links:
            if not isinstance(link, Exchange):
                one_done()  # never connected
        # Bare sockets are read after the pass (their answers carry the kernel's time);
        # transports are polled during it, so an answer that came meanwhile is timestamped then.
        pause_every = 0 if bare else WRITES_BETWEEN_READS
        # Before the start signal, so nothing per connection runs between it and the first write.
        offset_ns = time.time_ns() - time.perf_counter_ns()
        for bare_link in opened:
            bare_link.offset_ns = offset_ns
        write = send  # looked up once, after any test replaced it
        if ready is not None:
            ready()  # nothing is in flight: blocking the loop here delays nothing
        gc.disable()  # a collection mid-burst would stall the writes and the answers' timestamps
        cpu0, wall0 = time.process_time(), time.perf_counter_ns()
        released = time.perf_counter_ns()
        for count, index in enumerate(order):
            if pause_every and count and count % pause_every == 0:
                # Answers already in are timestamped now, not after the last write; when none
                # has come yet (the spread is below the server's latency) this is one empty poll.
                await asyncio.sleep(0)
            writer = writers[index]
            if writer is not None and not cast("Exchange", links[index]).ended_ns:
                sent[index] = time.perf_counter_ns()
                write(writer, wires[index])
            # else: never connected, or ended before the start and counted itself done then
        if progress is not None:
            ticker = asyncio.create_task(_tick(progress, pending, len(plan)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_done.wait(), deadline_s)
        wall_ns, cpu_s = time.perf_counter_ns() - wall0, time.process_time() - cpu0
    finally:
        if collecting:
            gc.enable()
        if ticker is not None:
            ticker.cancel()
        for bare_link in opened:
            bare_link.close()
        for writer in writers:
            if writer is not None:
                writer.close()
    lag = histogram.new()
    for index, request in enumerate(plan):
        link = links[index]
        if not isinstance(link, Exchange) or not sent[index]:
            why = link if isinstance(link, str) else (link.error or "connection closed early")
            tally.record(request.operation, 0, 0, f"{request.operation}: {why}")
            continue
        histogram.record_us(lag, (sent[index] - released) // 1000)
        if not link.ended_ns:
            link.error = f"TimeoutError: no answer within {deadline_s:g} s"
        if link.error:
            tally.record(request.operation, 0, 0, f"{request.operation}: {link.error[:160]}")
            continue
        status, body, ray = link.answer()
        problem = tally.judge(request, status, body)
        error = f" ({ray})" if status >= 400 else ""
        latency = max(link.ended_ns - sent[index], 0)  # a kernel stamp is never before the write
        tally.record(request.operation, status, latency, error, problem)
    offset = time.time_ns() - time.perf_counter_ns()
    starts = [s for s in sent if s]
    return PhaseOutcome(
        phase=BURST,
        ops=tally.ops(),
        start_first_ns=min(starts) + offset if starts else 0,
        start_last_ns=max(starts) + offset if starts else 0,
        wall_s=wall_ns / 1e9,
        cpu_s=cpu_s,
        max_lag_ms=(max(starts) - released) / 1e6 if starts else 0.0,
        lag=histogram.encode(lag),
    )


async def _tick(progress: Callable[[str], None] | None, pending: list[int], total: int) -> None:
    while progress is not None:
        await asyncio.sleep(0.25)
        progress(f"burst: {total - pending[0]}/{total} answered")
