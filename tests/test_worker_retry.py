"""The Worker client's retries against a loopback server that fails N times, then answers."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sync_ci.errors import UnreachableError
from sync_ci.worker import RETRY_PAUSE_S, WorkerClient, WorkerTarget


@dataclass(slots=True)
class Flaky:
    """How the server misbehaves: `failures` answers of `mode` before the first 200."""

    url: str = ""
    failures: int = 0
    mode: str = "503"  # "503": a 503 answer; "drop": the connection closes with no answer
    seen: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        flaky: Flaky = self.server.flaky  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        with flaky.lock:
            flaky.seen.append((self.command, self.path))
            failing = len(flaky.seen) <= flaky.failures
        if failing and flaky.mode == "drop":
            self.close_connection = True
            return
        status = 503 if failing else 200
        body = json.dumps({"ok": not failing, "attempt": len(flaky.seen)}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def flaky() -> Iterator[Flaky]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    server.daemon_threads = True
    state = Flaky(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.flaky = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def client(
    flaky: Flaky, sleeps: list[float], *, retries: int, read_only: bool = True
) -> WorkerClient:
    target = WorkerTarget(
        base_url=flaky.url,
        read_only=read_only,
        timeout_s=30,
        retries=retries,
        allowed_posts=() if read_only else ("/_alert",),
    )
    return WorkerClient(target, sleep=sleeps.append)


@pytest.mark.parametrize("mode", ["503", "drop"])
def test_get_retries_until_the_server_answers(flaky: Flaky, mode: str) -> None:
    flaky.failures, flaky.mode = 2, mode
    sleeps: list[float] = []
    with client(flaky, sleeps, retries=2) as worker:
        answer = worker.get("/_health")
    assert answer.status == 200
    assert answer.json() == {"ok": True, "attempt": 3}
    assert flaky.seen == [("GET", "/_health")] * 3
    assert sleeps == [RETRY_PAUSE_S, 2 * RETRY_PAUSE_S]


def test_the_last_5xx_is_returned_when_retries_run_out(flaky: Flaky) -> None:
    flaky.failures = 5
    sleeps: list[float] = []
    with client(flaky, sleeps, retries=1) as worker:
        answer = worker.get("/catalog")
    assert answer.status == 503
    assert len(flaky.seen) == 2
    assert sleeps == [RETRY_PAUSE_S]


def test_a_server_that_never_answers_is_unreachable(flaky: Flaky) -> None:
    flaky.failures, flaky.mode = 5, "drop"
    sleeps: list[float] = []
    with client(flaky, sleeps, retries=2) as worker, pytest.raises(UnreachableError) as caught:
        worker.get("/catalog")
    assert "connection failed" in str(caught.value)
    assert flaky.url in str(caught.value)
    assert len(flaky.seen) == 3
    assert sleeps == [RETRY_PAUSE_S, 2 * RETRY_PAUSE_S]


def test_post_is_sent_once(flaky: Flaky) -> None:
    flaky.failures = 1
    sleeps: list[float] = []
    with client(flaky, sleeps, retries=3, read_only=False) as worker:
        answer = worker.post("/_alert", json_body={"check": "x"})
    assert answer.status == 503
    assert flaky.seen == [("POST", "/_alert")]
    assert sleeps == []


def test_retry_false_sends_a_get_once(flaky: Flaky) -> None:
    flaky.failures = 1
    sleeps: list[float] = []
    with client(flaky, sleeps, retries=3) as worker:
        assert worker.get("/_health", retry=False).status == 503
    assert len(flaky.seen) == 1
    assert sleeps == []


def test_a_healthy_server_costs_one_request_and_no_pause(flaky: Flaky) -> None:
    sleeps: list[float] = []
    with client(flaky, sleeps, retries=3) as worker:
        assert worker.get("/_health").status == 200
    assert len(flaky.seen) == 1
    assert sleeps == []


def test_the_default_pause_is_the_real_clock() -> None:
    target = WorkerTarget(base_url="http://127.0.0.1:9", read_only=True)
    with WorkerClient(target) as worker:
        assert worker.sleep is time.sleep
