"""The Worker client's guarded adapter: a request without a real bound never leaves the process."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from sync_ci.errors import GuardViolation
from sync_ci.worker import WorkerClient, WorkerTarget, timeout_problem
from tests.gates.recording import RecordingProxy

UNBOUNDED = [
    None,
    (None, None),
    (5, None),
    (None, 5),
    0,
    0.0,
    -1,
    (0, 5),
    (5, -1),
    math.inf,
    (5, math.inf),
    math.nan,
    True,
    "5",
    (5,),
    (1, 2, 3),
]


@pytest.fixture
def recorder() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("timeout", UNBOUNDED, ids=repr)
def test_an_unbounded_timeout_is_refused_before_sending(
    recorder: RecordingProxy, timeout: Any
) -> None:
    with (
        WorkerClient(WorkerTarget(base_url=recorder.url, read_only=True)) as client,
        pytest.raises(GuardViolation, match="timeout"),
    ):
        client.session.get(f"{recorder.url}/catalog", timeout=timeout)
    assert recorder.requests == []


@pytest.mark.parametrize("timeout", [5, 0.5, (3, 10), (0.1, 0.2)], ids=repr)
def test_a_bounded_timeout_is_sent(recorder: RecordingProxy, timeout: Any) -> None:
    assert timeout_problem(timeout) == ""
    with WorkerClient(WorkerTarget(base_url=recorder.url, read_only=True)) as client:
        assert client.session.get(f"{recorder.url}/catalog", timeout=timeout).status_code == 200
    assert [r.path for r in recorder.requests] == ["/catalog"]
