"""The mutant catalogue: named contract violations the reference Worker can commit on purpose.

Pure (no aiohttp): the launcher and the Worker's option parser check a `--mutant` name against it
without importing the app, and docs/mutants.md and the JavaScript Worker are kept equal to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sync_ci.errors import UsageError

# What the alert-controls mutant strips instead of refusing the alert.
MUTANT_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SLOW_ROUTE_S = 3.0
# A body the no-413 mutant still bounds, so even a broken Worker cannot be made to buffer gigabytes.
MUTANT_BODY_CAP_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Mutant:
    """One named contract violation the reference Worker can commit, and the row that catches it."""

    name: str
    violation: str
    suite: str
    row: str


MUTANTS: Mapping[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            name="push-auth-bypass",
            violation="POST /_push accepts any token for any tenant",
            suite="smoke",
            row="phase:reject-bad-token",
        ),
        Mutant(
            name="cross-tenant-push",
            violation="POST /_push writes the state of the tenant named in the body",
            suite="smoke",
            row="phase:reject-cross-tenant",
        ),
        Mutant(
            name="status-open",
            violation="GET /_status answers without the admin token",
            suite="smoke",
            row="phase:reject-status-anon",
        ),
        Mutant(
            name="no-413",
            violation="POST /_push accepts bodies over 64 KiB",
            suite="smoke",
            row="phase:reject-oversize",
        ),
        Mutant(
            name="alert-controls",
            violation="POST /_alert accepts control characters in its fields",
            suite="smoke",
            row="phase:reject-alert-controls",
        ),
        Mutant(
            name="region-500",
            violation="/install and /catalog answer 500 in the last region only",
            suite="smoke, ci-loop",
            row="phase:install",
        ),
        Mutant(
            name="region-down",
            violation="every request to the last region answers 503",
            suite="smoke, ci-loop",
            row="phase:install",
        ),
        Mutant(
            name="stale-catalog",
            violation="a region never refreshes a catalog it has cached",
            suite="smoke",
            row="phase:freshness",
        ),
        Mutant(
            name="corrupt-object",
            violation="GET /o/ serves bytes that do not hash to their name",
            suite="smoke",
            row="phase:pull",
        ),
        Mutant(
            name="missing-install-entry",
            violation="GET /install leaves one catalog entry out",
            suite="smoke",
            row="phase:install",
        ),
        Mutant(
            name="push-no-write",
            violation="POST /_push answers 201 without writing the state",
            suite="smoke",
            row="phase:push",
        ),
        Mutant(
            name="alert-no-dedup",
            violation="a repeated alert idempotency key is stored again (202)",
            suite="smoke",
            row="phase:alert",
        ),
        Mutant(
            name="no-cf-ray",
            violation="answers carry no cf-ray header",
            suite="smoke",
            row="phase:preflight",
        ),
        Mutant(
            name="bad-cf-ray",
            violation="cf-ray does not name the colo that answered",
            suite="smoke",
            row="phase:preflight",
        ),
        Mutant(
            name="x-cache-always-hit",
            violation="x-cache says hit even for a key the region never read",
            suite="smoke",
            row="phase:catalog",
        ),
        Mutant(
            name="error-body-200",
            violation="GET /install answers 200 with an error body",
            suite="smoke",
            row="phase:install",
        ),
        Mutant(
            name="slow-install",
            violation=f"GET /install takes {SLOW_ROUTE_S:g} s more than it should",
            suite="gates.load",
            row="load.burst.install.p95_ms",
        ),
        Mutant(
            name="no-date",
            violation="answers carry no Date header (RFC 9110 requires one)",
            suite="smoke",
            row="phase:preflight",
        ),
    )
}


def check_mutant(name: str) -> str:
    """Return a --mutant name ('' for none), or raise UsageError naming the catalogue."""
    if name and name not in MUTANTS:
        raise UsageError(f"--mutant {name!r} is not one of: {', '.join(sorted(MUTANTS))}")
    return name
