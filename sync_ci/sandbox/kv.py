"""One region's KV cache for the reference Worker: TTLs, byte budget, cold misses, single flight."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Values bigger than this are served but never cached, so one large blob cannot flush a region.
MAX_ENTRY_BYTES = 4 * 1024 * 1024
ENTRY_OVERHEAD_BYTES = 96
# A cold miss costs the region's latency plus up to 10 % (at most 5 ms) of jitter.
JITTER_FRACTION = 0.1
JITTER_CAP_MS = 5.0

CacheKey = tuple[str, str]
Loader = Callable[[], Awaitable[tuple[Any, int] | None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class KVRead:
    """One KV read: the value (None when the key does not exist), hit or miss, time in KV."""

    value: Any
    hit: bool
    kv_ms: float


@dataclass(slots=True)
class _Entry:
    value: Any
    size: int
    expires_at: float


def miss_delay_ms(miss_ms: float, rng: random.Random) -> float:
    """Return the cold-miss delay for a region: its latency plus a small non-negative jitter."""
    if miss_ms <= 0:
        return 0.0
    return miss_ms + rng.uniform(0.0, min(JITTER_CAP_MS, miss_ms * JITTER_FRACTION))


class RegionKV:
    """A per-region cache keyed by (root, key); concurrent misses of one key share one load."""

    def __init__(
        self,
        colo: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.colo = colo
        self.max_bytes = max_bytes
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[CacheKey, asyncio.Task[tuple[Any, int] | None]] = {}

    @property
    def size_bytes(self) -> int:
        """Bytes currently accounted to cached entries."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, root: str, key: str) -> Any:
        """Return a fresh cached value or None, refreshing its LRU position."""
        cache_key = (root, key)
        entry = self._entries.get(cache_key)
        if entry is None:
            return None
        if entry.expires_at <= self._monotonic():
            self._drop(cache_key)
            return None
        self._entries.move_to_end(cache_key)
        return entry.value

    def put(self, root: str, key: str, value: Any, size: int, ttl_s: float) -> None:
        """Cache a value for `ttl_s` seconds unless it is too big to keep."""
        cache_key = (root, key)
        self._drop(cache_key)
        cost = size + ENTRY_OVERHEAD_BYTES
        if size > MAX_ENTRY_BYTES or cost > self.max_bytes:
            return
        self._entries[cache_key] = _Entry(value, cost, self._monotonic() + ttl_s)
        self._bytes += cost
        while self._bytes > self.max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, cache_key: CacheKey) -> None:
        entry = self._entries.pop(cache_key, None)
        if entry is not None:
            self._bytes -= entry.size

    async def read(
        self, root: str, key: str, load: Loader, *, ttl_s: float, miss_ms: float
    ) -> KVRead:
        """Read through the cache: a hit is immediate; a miss waits `miss_ms` (+jitter), then loads.

        `load` returns (value, size in bytes) or None when the key does not exist; absent keys are
        not cached, so a later write is seen on the next read. `kv_ms` includes the load.
        """
        started = time.perf_counter()
        value = self.peek(root, key)
        if value is not None:
            return KVRead(value=value, hit=True, kv_ms=_ms_since(started))
        cache_key = (root, key)
        task = self._inflight.get(cache_key)
        if task is None:
            delay_ms = miss_delay_ms(miss_ms, self._rng)
            task = asyncio.ensure_future(self._fill(cache_key, load, ttl_s, delay_ms))
            self._inflight[cache_key] = task
            task.add_done_callback(functools.partial(self._finish, cache_key))
        loaded = await asyncio.shield(task)
        return KVRead(
            value=None if loaded is None else loaded[0], hit=False, kv_ms=_ms_since(started)
        )

    async def _fill(
        self, cache_key: CacheKey, load: Loader, ttl_s: float, delay_ms: float
    ) -> tuple[Any, int] | None:
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        loaded = await load()
        if loaded is not None:
            self.put(cache_key[0], cache_key[1], loaded[0], loaded[1], ttl_s)
        return loaded

    def _finish(self, cache_key: CacheKey, task: asyncio.Task[tuple[Any, int] | None]) -> None:
        if self._inflight.get(cache_key) is task:
            del self._inflight[cache_key]
        if not task.cancelled():
            # Mark the exception retrieved: every waiter may have gone away before it was raised.
            task.exception()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
