"""The one guarded HTTP client of the gates: every request is checked against the target's policy.

The gates' engines (the built-in aiohttp one and each Locust worker) send through clients built
here, so a request the target's policy forbids raises before a byte is sent, whatever the caller
(or a Locust master) asked for. Writes name the run's CI root in `contract.ROOT_HEADER`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sync_ci.contract import ROOT_HEADER
from sync_ci.errors import GuardViolation, SettingsError
from sync_ci.extras import require_extra
from sync_ci.gates.scenario import PUSH_PATH
from sync_ci.guards import READ_METHODS, SHA_SEGMENT, check_http_request, validate_key

if TYPE_CHECKING:
    import aiohttp

    from sync_ci.config import Settings

USER_AGENT = "sync-ci-gate"


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpPolicy:
    """What a gate may send: GET/HEAD only, or also POSTs to listed paths that name `write_root`."""

    read_only: bool = True
    allowed_posts: tuple[str, ...] = ()
    write_root: str = ""

    def __post_init__(self) -> None:
        if self.read_only:
            return
        root = self.write_root
        validate_key(root or "/")
        tail = root[:-1].rsplit("/", 1)[-1] if root.endswith("/") else ""
        if not SHA_SEGMENT.fullmatch(tail):
            raise GuardViolation(
                f"refused write policy with root {root!r}: writes go under a full <ci-root><sha>/"
            )

    def describe(self) -> str:
        """Say in a few words what this policy allows."""
        if self.read_only:
            return "read-only"
        return f"POST {', '.join(self.allowed_posts) or '(none)'} under {self.write_root}"

    def apply(self, method: str, url: str, headers: MutableMapping[str, str]) -> None:
        """Raise unless the request is allowed; make a write name the CI root (in `headers`)."""
        check_http_request(self.read_only, method, url, self.allowed_posts)
        if method.upper() in READ_METHODS:
            return
        named = headers.get(ROOT_HEADER)
        if named is not None and named != self.write_root:
            raise GuardViolation(
                f"refused {method.upper()} naming root {named!r}: this run writes under "
                f"{self.write_root}"
            )
        headers[ROOT_HEADER] = self.write_root


def read_only_policy() -> HttpPolicy:
    """GET and HEAD only."""
    return HttpPolicy(read_only=True)


def push_policy(write_root: str) -> HttpPolicy:
    """GETs, and pushes that name `write_root` as their root."""
    return HttpPolicy(read_only=False, allowed_posts=(PUSH_PATH,), write_root=write_root)


def policy_for(settings: Settings) -> HttpPolicy:
    """The gate policy of a target: read-only on live, else pushes under the run's CI prefix."""
    from sync_ci.guards import is_full_ci_prefix

    if settings.read_only:
        return read_only_policy()
    if not is_full_ci_prefix(settings.ci_prefix, settings.ci_root):
        raise SettingsError(
            f"refusing to push: {settings.ci_prefix!r} is not a full {settings.ci_root}<sha>/ prefix"
        )
    return push_policy(settings.ci_prefix)


def check_timeout(timeout_s: float) -> float:
    """Return a finite, positive timeout in seconds, or refuse it."""
    if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0):
        raise GuardViolation(f"refused a client without a finite, positive timeout ({timeout_s!r})")
    return float(timeout_s)


class GuardedSession:
    """An aiohttp session that checks every request against a policy before aiohttp sees it.

    It is the only session the engines hold. Redirects are never followed (a followed redirect
    would be a request nobody checked), and per-request timeouts or middlewares are refused.
    """

    def __init__(self, session: aiohttp.ClientSession, policy: HttpPolicy) -> None:
        self._session = session
        self.policy = policy

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Any:
        """Check the request (naming the CI root on a write), then hand it to aiohttp."""
        refused = sorted({"timeout", "middlewares", "trace_request_ctx"} & kwargs.keys())
        if refused:
            raise GuardViolation(f"refused {method} {url}: {', '.join(refused)} may not be changed")
        sent = dict(headers or {})
        self.policy.apply(method, url, sent)
        kwargs["allow_redirects"] = False
        return self._session.request(method, url, headers=sent, **kwargs)

    def get(self, url: str, **kwargs: Any) -> Any:
        """GET a URL."""
        return self.request("GET", url, **kwargs)

    async def close(self) -> None:
        """Close the underlying session and its connections."""
        await self._session.close()

    async def __aenter__(self) -> GuardedSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def new_session(
    policy: HttpPolicy, timeout_s: float, headers: Mapping[str, str] | None = None
) -> GuardedSession:
    """Build the session every gate engine uses: no connection cap, the policy on each request."""
    require_extra("aiohttp", "gates", needed_by="the gates' HTTP client")
    import aiohttp

    return GuardedSession(
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=check_timeout(timeout_s)),
            headers={"user-agent": USER_AGENT, **(headers or {})},
        ),
        policy,
    )
