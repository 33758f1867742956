"""The burst client on real sockets: prepared and guarded before any connection, every answer framed.

Servers here are real listeners on 127.0.0.1 (the tiny Worker, or a raw asyncio server in the
test's own loop for the framings a Worker may answer with). Nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from sync_ci.errors import GuardViolation
from sync_ci.gates import burst, burst_open, burst_wire, histogram, load
from sync_ci.gates.http import push_policy, read_only_policy
from sync_ci.gates.outcome import PhaseOutcome
from sync_ci.gates.scenario import (
    INSTALL,
    PUSH,
    LoadScenario,
    PlannedRequest,
    install_request,
    open_schedule,
    plan_burst,
)
from tests.gates.conftest import TINY_SECRET, TinyWorker

CI_ROOT = "snappy-os-ci/0123abc/"
MANIFEST = b'{"schema":1,"generation":1,"entries":{},"object_base":"/o/"}'
Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def serve_raw(answer: Answer, plan: list[PlannedRequest], timeout_s: float) -> PhaseOutcome:
    """Fire `plan` at a raw server in this loop that reads each request and runs `answer`."""

    handlers: list[asyncio.Task[None]] = []

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await answer(writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        await exchange(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await burst.fire(
            plan, f"http://127.0.0.1:{port}", read_only_policy(), timeout_s=timeout_s
        )
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def against(
    handle: Handler, client: Callable[[str], Awaitable[PhaseOutcome]], backlog: int = 100
) -> PhaseOutcome:
    """Serve `handle` on 127.0.0.1 in this loop while `client(url)` runs; return its outcome."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=backlog)
    try:
        return await client(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    finally:
        server.close()
        await server.wait_closed()


def installs(count: int) -> list[PlannedRequest]:
    return [install_request() for _ in range(count)]


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(MANIFEST) + MANIFEST,
            id="content-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % 20
            + MANIFEST[:20]
            + b"\r\n"
            + b"%x\r\n" % (len(MANIFEST) - 20)
            + MANIFEST[20:]
            + b"\r\n0\r\n\r\n",
            id="chunked",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + MANIFEST, id="until-close"),
    ],
)
def test_every_framing_a_worker_may_answer_with_is_read_whole(framing: bytes) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        # In two writes, so a response split over several reads is reassembled.
        writer.write(framing[:25])
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(framing[25:])
        await writer.drain()

    phase = asyncio.run(serve_raw(answer, installs(20), timeout_s=30))
    install = phase.ops[INSTALL]
    assert (install.ok, install.invalid, install.network) == (20, 0, 0), install.first_error
    assert histogram.decode(install.histogram).get_total_count() == 20


def test_a_server_that_never_answers_is_a_network_error_after_the_one_deadline() -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    phase = asyncio.run(serve_raw(answer, installs(5), timeout_s=0.5))
    install = phase.ops[INSTALL]
    assert (install.ok, install.network) == (0, 5)
    assert "no answer within 0.5 s" in install.first_error


def test_a_truncated_answer_is_a_network_error() -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{")
        await writer.drain()

    phase = asyncio.run(serve_raw(answer, installs(3), timeout_s=30))
    assert phase.ops[INSTALL].network == 3
    assert "connection closed early" in phase.ops[INSTALL].first_error


def test_a_refused_request_stops_the_burst_before_any_connection_opens() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    plan = plan_burst(LoadScenario(installs=5, pushes=1, tenants=1), TINY_SECRET)
    try:
        with pytest.raises(GuardViolation, match="read-only"):
            asyncio.run(burst.fire(plan, url, read_only_policy(), timeout_s=5))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected: the installs before the push never left
    finally:
        listener.close()


def test_a_header_cannot_smuggle_a_second_request() -> None:
    origin = burst_wire.parse_origin("http://127.0.0.1:1")
    smuggled = PlannedRequest(
        operation=INSTALL,
        method="GET",
        path="/install",
        headers={"x-a": "1\r\n\r\nPOST /_push HTTP/1.1"},
    )
    with pytest.raises(GuardViolation, match="control characters"):
        burst_wire.encode_request(smuggled, origin, read_only_policy())


def test_a_push_on_the_wire_names_the_ci_root_and_nothing_else() -> None:
    origin = burst_wire.parse_origin("http://127.0.0.1:1/base")
    (push,) = [
        r for r in plan_burst(LoadScenario(installs=0, pushes=1), "s") if r.operation == PUSH
    ]
    wire = burst_wire.encode_request(push, origin, push_policy(CI_ROOT))
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /base/_push HTTP/1.1\r\n")
    assert f"\r\nx-sync-ci-root: {CI_ROOT}".encode() in head
    assert f"\r\ncontent-length: {len(push.body)}".encode() in head
    assert body == push.body
    wrong = PlannedRequest(
        operation=PUSH,
        method="POST",
        path="/_push",
        headers={"x-sync-ci-root": "snappy-os/"},
        body=b"{}",
    )
    with pytest.raises(GuardViolation, match="naming root"):
        burst_wire.encode_request(wrong, origin, push_policy(CI_ROOT))


def test_installs_and_pushes_are_interleaved_in_the_send_order() -> None:
    plan = plan_burst(LoadScenario(), "s")
    order = burst_wire.send_order(plan)
    assert sorted(order) == list(range(len(plan)))
    operations = [plan[i].operation for i in order]
    # Every tenth-or-so write is a push: none waits behind all the installs.
    first_push = operations.index(PUSH)
    assert first_push < 20
    assert operations[:110].count(PUSH) == 10


def test_the_burst_records_its_send_lag_and_every_answer(tiny_worker: TinyWorker) -> None:
    url = str(tiny_worker("--latency-ms", "20")["url"])
    job = load.plan_job(LoadScenario(), url, TINY_SECRET, policy=push_policy(CI_ROOT))
    (phase,) = load.run_load(job)
    assert [(op.ok, op.invalid) for op in phase.ops.values()] == [(1000, 0), (100, 0)]
    lag = histogram.decode(phase.lag)
    assert lag.get_total_count() == 1100
    assert phase.max_lag_ms >= histogram.summarize(lag).p50_ms >= 0
    assert phase.cpu_s > 0 and phase.wall_s > 0


def test_connections_the_server_drops_before_the_start_are_counted_once() -> None:
    async def run() -> PhaseOutcome:
        accepted = [0]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted[0] += 1
            try:
                if accepted[0] % 2:  # every other connection is dropped at once, before the start
                    return
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(0.2)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(MANIFEST))
                writer.write(MANIFEST)
                await writer.drain()
            finally:
                writer.close()

        return await against(
            handle,
            lambda url: burst.fire(installs(256), url, read_only_policy(), timeout_s=30),
            backlog=1024,
        )

    install = asyncio.run(run()).ops[INSTALL]
    # Each dropped connection is one network error, and the burst still waits for every answer.
    assert install.ok + install.network == 256
    assert install.ok == 128 and "TimeoutError" not in install.first_error


@pytest.mark.parametrize("close", [True, False], ids=["server-closes", "kept-alive"])
def test_the_open_model_reuses_a_connection_only_when_the_server_keeps_it(close: bool) -> None:
    schedule = open_schedule(LoadScenario(pushes=0), "", rate=200, duration_s=0.25)
    seen: list[int] = []

    async def run() -> PhaseOutcome:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(1)
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    extra = b"connection: close\r\n" if close else b""
                    writer.write(
                        b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n\r\n%s"
                        % (extra, len(MANIFEST), MANIFEST)
                    )
                    await writer.drain()
                    if close:
                        return
            except asyncio.IncompleteReadError:
                return
            finally:
                writer.close()

        return await against(
            handle, lambda url: burst_open.offer(schedule, url, read_only_policy(), timeout_s=30)
        )

    phase = asyncio.run(run())
    install = phase.ops[INSTALL]
    assert (install.planned, install.ok, install.network) == (50, 50, 0), install.first_error
    assert histogram.decode(phase.lag).get_total_count() == 50
    # A server that closes gets a fresh connection per request; one that keeps them, far fewer.
    assert len(seen) >= 50 if close else len(seen) < 50


def test_the_open_model_refuses_a_push_on_a_read_only_target_before_sending_it() -> None:
    schedule = open_schedule(LoadScenario(), "s", rate=200, duration_s=0.1)
    with pytest.raises(GuardViolation, match="read-only"):
        asyncio.run(
            burst_open.offer(schedule, "http://127.0.0.1:9", read_only_policy(), timeout_s=5)
        )


class StallAfterFirstWrite:
    """A send hook that blocks the client after its first write (a slow pass): until that
    request's answer has reached the socket, then `extra_s` more. `stalled_ms` is how long it
    blocked, so the answer arrived strictly before the client could have read it."""

    def __init__(self, extra_s: float) -> None:
        self.extra_s = extra_s
        self.writes = 0
        self.stalled_ms = 0.0

    def __call__(self, writer: burst.Writer, data: bytes) -> None:
        writer.write(data)
        self.writes += 1
        if self.writes == 1:
            began = time.monotonic()
            sock = getattr(writer, "sock", None) or writer.get_extra_info("socket")  # type: ignore[attr-defined]
            select.select([sock], [], [], 60)  # the answer is in the socket's buffer
            time.sleep(self.extra_s)
            self.stalled_ms = (time.monotonic() - began) * 1000


@pytest.mark.parametrize("stamped", [True, False], ids=["kernel-stamped", "stamped-when-read"])
def test_an_answer_read_after_a_slow_pass_keeps_the_time_it_arrived(
    tiny_worker: TinyWorker, monkeypatch: pytest.MonkeyPatch, stamped: bool
) -> None:
    # The Worker answers in 20 ms; the client does not read until that answer is in and 1 s more
    # has passed. With the kernel's receive stamps the first answer still measures when it came;
    # without them (the fault injected: no SO_TIMESTAMPNS) the run reports the client's own
    # stall as latency. Both are judged against the stall the hook measured, not a clock limit.
    url = str(tiny_worker("--latency-ms", "20")["url"])
    if not stamped:
        monkeypatch.setattr(burst, "SO_TIMESTAMPNS", 0)
    assert burst.stamps_arrivals(burst_wire.parse_origin(url), "127.0.0.1") is stamped

    def fire(count: int) -> tuple[float, float, float]:
        stall = StallAfterFirstWrite(extra_s=1.0)
        monkeypatch.setattr(burst, "send", stall)
        phase = asyncio.run(burst.fire(installs(count), url, read_only_policy(), timeout_s=60))
        install = phase.ops[INSTALL]
        assert (install.ok, install.network) == (count, 0), install.first_error
        assert stall.stalled_ms >= 1000
        slowest_ms = histogram.decode(install.histogram).get_max_value() / 1000
        return slowest_ms, phase.start_spread_ms, stall.stalled_ms

    _, spread_ms, stalled_ms = fire(4)
    assert spread_ms >= stalled_ms * 0.99  # every later write waited for the stall
    # One request alone: its latency is the stalled request's, judged against the stall itself.
    latency_ms, _, stalled_ms = fire(1)
    if stamped:
        assert latency_ms < stalled_ms  # it arrived before the client could look
    else:
        assert latency_ms >= stalled_ms * 0.99


def test_a_request_the_kernel_cannot_take_at_once_is_finished_by_the_loop() -> None:
    # 8 MB is more than a socket's send and receive buffers hold: the first send takes part of
    # it and the loop writes the rest as the server reads, before the server answers.
    body = b"x" * (8 << 20)
    plan = [PlannedRequest(operation=INSTALL, method="GET", path="/install", headers={}, body=body)]
    bodies: list[int] = []

    async def run() -> PhaseOutcome:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            bodies.append(len(await reader.readexactly(length)))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(MANIFEST), MANIFEST)
            )
            await writer.drain()
            writer.close()

        return await against(
            handle, lambda url: burst.fire(plan, url, read_only_policy(), timeout_s=30)
        )

    install = asyncio.run(run()).ops[INSTALL]
    assert (install.ok, install.network) == (1, 0), install.first_error
    assert bodies == [len(body)]
