"""Fault settings of the reference Worker: names, ranges, `KEY=VALUE` parsing and runtime updates.

Pure (no aiohttp): the launcher and `sync-ci sandbox` validate faults with it before any Worker
starts, and the Worker applies the same rules at run time.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

from sync_ci.assignments import parse_assignments
from sync_ci.errors import UsageError

FAULT_KEYS = ("5xx_rate", "latency_ms", "bucket_latency_ms")
KV_MISS_FAULT_PREFIX = "kv_miss_ms."
MAX_FAULT_MS = 60_000.0


def parse_fault_value(key: str, value: object, colos: Collection[str]) -> float:
    """Validate one fault setting (from argv text or JSON) and return its number."""
    if key not in FAULT_KEYS:
        colo = key.removeprefix(KV_MISS_FAULT_PREFIX)
        if not key.startswith(KV_MISS_FAULT_PREFIX) or colo not in colos:
            known = [*FAULT_KEYS, *(KV_MISS_FAULT_PREFIX + c for c in sorted(colos))]
            raise UsageError(f"unknown fault {key!r}; use one of: {', '.join(known)}")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UsageError(f"fault {key} must be a number, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"fault {key} must be a number, not {value!r}") from None
    high = 1.0 if key == "5xx_rate" else MAX_FAULT_MS
    if not math.isfinite(number) or not 0.0 <= number <= high:
        raise UsageError(f"fault {key} = {value!r} is out of range 0..{high:g}")
    return number


def parse_fault_assignments(items: Sequence[str], colos: Collection[str]) -> dict[str, float]:
    """Parse `KEY=VALUE` fault arguments."""
    pairs = parse_assignments(items, "--fault", example="5xx_rate=0.1")
    faults = {key: parse_fault_value(key, value, colos) for key, value in pairs.items()}
    return faults


def apply_fault_update(
    current: Mapping[str, float], update: object, colos: Collection[str]
) -> dict[str, float]:
    """Return the faults after a runtime update: null removes a key, {"clear": true} resets."""
    if not isinstance(update, dict):
        raise UsageError("fault update must be a JSON object")
    result: dict[str, float] = {}
    clear = update.get("clear", False)
    if not isinstance(clear, bool):
        raise UsageError("fault update 'clear' must be true or false")
    if not clear:
        result.update(current)
    for key, value in update.items():
        if key == "clear":
            continue
        if value is None:
            parse_fault_value(key, 0, colos)
            result.pop(key, None)
        else:
            result[key] = parse_fault_value(key, value, colos)
    return result
