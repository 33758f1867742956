"""The open model on the burst client: each request sent at its intended time over kept-alive
connections (a pool opened before the phase), latency counted from the intended send time.

Each request's bytes pass the write policy as they are built; an answer is only timestamped and
kept until the phase is over, when it is parsed and judged, as in the burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections.abc import Callable

from sync_ci.gates import histogram
from sync_ci.gates.burst import Exchange, connect, resolve, send, tls_context
from sync_ci.gates.burst_wire import encode_request, parse_answer, parse_origin
from sync_ci.gates.http import HttpPolicy, check_timeout
from sync_ci.gates.outcome import OPEN, PhaseOutcome, Tally
from sync_ci.gates.scenario import OpenSchedule, PlannedRequest

# Connections opened before the phase: a tenth of a second of the rate (what a 100 ms answer
# keeps in flight), at least a few, at most this many; more open as the phase needs them.
POOL_MAX = 1000
POOL_MIN = 8


class _Sample:
    """One scheduled request: when it was due, sent and answered, and the answer's bytes."""

    __slots__ = ("answer", "ended", "error", "intended", "request", "started")

    def __init__(self, request: PlannedRequest, intended: int) -> None:
        self.request = request
        self.intended = intended
        self.started = 0
        self.ended = 0
        self.error = ""
        self.answer: tuple[bytes, int, int] | None = None


async def offer(
    schedule: OpenSchedule,
    base_url: str,
    policy: HttpPolicy,
    *,
    timeout_s: float,
    progress: Callable[[str], None] | None = None,
) -> PhaseOutcome:
    """Send the schedule's requests at their intended times; return exact outcomes."""
    deadline_s = check_timeout(timeout_s)
    origin = parse_origin(base_url)
    tls = tls_context(origin)
    tally = Tally(schedule.planned(), policy.write_root)
    total = len(schedule.operations)
    samples: list[_Sample] = []
    idle: list[Exchange] = []
    opened: list[Exchange] = []
    pending = [total]
    all_done = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def count_done() -> None:
        pending[0] -= 1
        if pending[0] <= 0:
            all_done.set()

    def finished(sample: _Sample, link: Exchange) -> None:
        sample.ended, sample.error = link.ended_ns, link.error
        if not link.error:
            sample.answer = (bytes(link.buffer), link.body_at, link.framing)
        if link.reusable:
            idle.append(link)
        count_done()

    def start(sample: _Sample, link: Exchange, wire: bytes) -> None:
        link.restart(lambda: finished(sample, link))
        assert link.transport is not None
        sample.started = time.perf_counter_ns()
        send(link.transport, wire)

    async def open_and_send(sample: _Sample, address: str, wire: bytes) -> None:
        link = await connect(origin, address, tls, lambda: None)
        if isinstance(link, str):
            sample.error, sample.ended = link, time.perf_counter_ns()
            count_done()
            return
        opened.append(link)
        start(sample, link, wire)

    address, unresolved = await resolve(origin, deadline_s)
    if address:
        warm = min(total, POOL_MAX, max(POOL_MIN, math.ceil(schedule.rate / 10)))
        links = await asyncio.gather(
            *(connect(origin, address, tls, lambda: None) for _ in range(warm))
        )
        for link in links:
            if isinstance(link, Exchange):
                opened.append(link)
                idle.append(link)
    ticker = asyncio.create_task(_tick(progress, pending, total)) if progress else None
    collecting = gc.isenabled()
    gc.disable()  # a collection would delay every send and answer due meanwhile
    cpu0, wall0 = time.process_time(), time.perf_counter_ns()
    try:
        begin = time.perf_counter_ns() + 5_000_000
        for offset, request in schedule.requests():
            intended = begin + offset
            delay = intended - time.perf_counter_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            sample = _Sample(request, intended)
            samples.append(sample)
            wire = encode_request(request, origin, policy)  # the policy, for every request
            if not address:
                sample.error, sample.ended = unresolved, time.perf_counter_ns()
                count_done()
                continue
            while idle and not idle[-1].reusable:
                idle.pop()
            if idle:
                start(sample, idle.pop(), wire)
            else:
                tasks.append(asyncio.create_task(open_and_send(sample, address, wire)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_done.wait(), deadline_s)
    finally:
        if collecting:
            gc.enable()
        for task in tasks:
            task.cancel()
        for link in opened:
            if link.transport is not None:
                link.transport.close()
        if ticker is not None:
            ticker.cancel()
    wall_ns, cpu_s = time.perf_counter_ns() - wall0, time.process_time() - cpu0
    return _outcome(schedule, samples, tally, deadline_s, wall_ns / 1e9, cpu_s)


def _outcome(
    schedule: OpenSchedule,
    samples: list[_Sample],
    tally: Tally,
    deadline_s: float,
    wall_s: float,
    cpu_s: float,
) -> PhaseOutcome:
    lag = histogram.new()
    sent: list[int] = []
    for sample in samples:
        operation = sample.request.operation
        if sample.started:
            sent.append(sample.started)
            histogram.record_us(lag, max(sample.started - sample.intended, 0) // 1000)
        if sample.answer is None:
            why = sample.error or f"TimeoutError: no answer within {deadline_s:g} s"
            tally.record(operation, 0, 0, f"{operation}: {why[:160]}")
            continue
        status, body, ray = parse_answer(*sample.answer)
        problem = tally.judge(sample.request, status, body)
        error = f" ({ray})" if status >= 400 else ""
        tally.record(operation, status, sample.ended - sample.intended, error, problem)
        if status:
            tally.record_raw(operation, sample.ended - sample.started)
    window_s = (max(sent) - min(sent)) / 1e9 if len(sent) > 1 else 0.0
    lags = [s.started - s.intended for s in samples if s.started]
    return PhaseOutcome(
        phase=OPEN,
        ops=tally.ops(),
        wall_s=wall_s,
        cpu_s=cpu_s,
        rate=schedule.rate,
        duration_s=schedule.duration_s,
        max_lag_ms=max(lags, default=0) / 1e6,
        raw={name: histogram.encode(h) for name, h in tally.raw.items()},
        lag=histogram.encode(lag),
        # What this client really offered: requests over the span their sends took.
        sent_rate=(len(sent) - 1) / window_s if window_s > 0 else 0.0,
    )


async def _tick(progress: Callable[[str], None] | None, pending: list[int], total: int) -> None:
    while progress is not None:
        await asyncio.sleep(0.25)
        progress(f"open model: {total - pending[0]}/{total} answered")
