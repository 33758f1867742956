"""The gates' one guarded aiohttp session, against a recording server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import pytest

from sync_ci.contract import ROOT_HEADER
from sync_ci.errors import GuardViolation
from sync_ci.gates.http import HttpPolicy, check_timeout, new_session, push_policy, read_only_policy
from tests.gates.recording import RecordingProxy

CI_ROOT = "snappy-os-ci/0123abcd/"


@pytest.fixture
def recorder() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    try:
        yield server
    finally:
        server.close()


def send(policy: HttpPolicy, method: str, url: str, **kwargs: Any) -> int:
    async def go() -> int:
        async with (
            new_session(policy, 10) as session,
            session.request(method, url, **kwargs) as response,
        ):
            await response.read()
            status: int = response.status
            return status

    return asyncio.run(go())


def test_a_read_only_session_sends_gets_and_refuses_every_write(recorder: RecordingProxy) -> None:
    assert send(read_only_policy(), "GET", f"{recorder.url}/install") == 200
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        with pytest.raises(GuardViolation, match="read-only"):
            send(read_only_policy(), method, f"{recorder.url}/_push", data=b"{}")
    # Nothing a caller passes per request can switch the check off or loosen the timeout.
    for loosen in ({"middlewares": ()}, {"timeout": None}):
        with pytest.raises(GuardViolation, match="may not be changed"):
            send(read_only_policy(), "GET", f"{recorder.url}/install", **loosen)
    assert [(r.method, r.path) for r in recorder.requests] == [("GET", "/install")]


def test_writes_name_the_ci_root_and_nothing_else(recorder: RecordingProxy) -> None:
    policy = push_policy(CI_ROOT)
    assert send(policy, "POST", f"{recorder.url}/_push", data=b"{}") == 200
    assert send(policy, "GET", f"{recorder.url}/install") == 200
    with pytest.raises(GuardViolation, match="not an allowed Worker write"):
        send(policy, "POST", f"{recorder.url}/_alert", data=b"{}")
    with pytest.raises(GuardViolation, match="naming root 'snappy-os/'"):
        send(policy, "POST", f"{recorder.url}/_push", headers={ROOT_HEADER: "snappy-os/"})
    (push,) = recorder.writes()
    assert push.headers[ROOT_HEADER] == CI_ROOT
    assert ROOT_HEADER not in recorder.requests[1].headers  # reads use the Worker's own root


@pytest.mark.parametrize(
    "root", ["", "snappy-os/", "snappy-os-ci/", "snappy-os-ci/abc", "/x/0123abc/"]
)
def test_a_write_policy_needs_a_full_sha_prefix(root: str) -> None:
    with pytest.raises(GuardViolation):
        push_policy(root)


@pytest.mark.parametrize("timeout", [0, -1, math.inf, math.nan])
def test_a_session_without_a_finite_timeout_is_refused(timeout: float) -> None:
    with pytest.raises(GuardViolation, match="timeout"):
        check_timeout(timeout)
