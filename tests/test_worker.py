"""The Worker client: a request without a real bound never leaves the process; proxies as requests."""

from __future__ import annotations

import http.server
import math
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest

from sync_ci.errors import GuardViolation, UnreachableError, WorkerError
from sync_ci.worker import (
    WorkerClient,
    WorkerTarget,
    _tls_context,
    guarded_session,
    timeout_problem,
)
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
    with pytest.raises(GuardViolation, match="timeout"):
        WorkerTarget(base_url=recorder.url, read_only=True, timeout_s=timeout)
    assert recorder.requests == []


@pytest.mark.parametrize("timeout", [5, 0.5, (3, 10), (0.1, 0.2)], ids=repr)
def test_a_bounded_timeout_is_sent(recorder: RecordingProxy, timeout: Any) -> None:
    assert timeout_problem(timeout) == ""
    with WorkerClient(WorkerTarget(base_url=recorder.url, read_only=True, timeout_s=timeout)) as c:
        assert c.get("/catalog").status == 200
    assert [r.path for r in recorder.requests] == ["/catalog"]


@pytest.mark.parametrize("timeout", UNBOUNDED, ids=repr)
def test_the_requests_session_for_conformance_refuses_an_unbounded_timeout(
    recorder: RecordingProxy, timeout: Any
) -> None:
    target = WorkerTarget(base_url=recorder.url, read_only=True)
    with guarded_session(target) as session, pytest.raises(GuardViolation, match="timeout"):
        session.get(f"{recorder.url}/catalog", timeout=timeout)
    assert recorder.requests == []


def test_the_requests_session_for_conformance_keeps_the_policy(recorder: RecordingProxy) -> None:
    target = WorkerTarget(base_url=recorder.url, read_only=False, allowed_posts=("/_alert",))
    with guarded_session(target) as session:
        assert session.post(f"{recorder.url}/_alert", json={}, timeout=5).status_code == 200
        with pytest.raises(GuardViolation):
            session.post(f"{recorder.url}/_push", json={}, timeout=5)
        assert session.get(f"{recorder.url}/catalog", timeout=(3, 10)).status_code == 200
    assert [(r.method, r.path) for r in recorder.requests] == [
        ("POST", "/_alert"),
        ("GET", "/catalog"),
    ]


def test_one_connection_carries_every_request_and_head_has_no_body(
    recorder: RecordingProxy,
) -> None:
    with WorkerClient(WorkerTarget(base_url=recorder.url, read_only=True)) as client:
        first = client.connection()
        assert client.get("/catalog").json() == {}
        head = client.request("HEAD", "/catalog")
        assert (head.status, head.body) == (200, b"")
        assert client.get("/install").status == 200
        assert client.connection() is first
    assert [(r.method, r.path) for r in recorder.requests] == [
        ("GET", "/catalog"),
        ("HEAD", "/catalog"),
        ("GET", "/install"),
    ]
    seen = recorder.requests[0].headers
    assert seen["user-agent"] == "sync-ci" and "authorization" not in seen


def test_a_base_path_and_the_root_header_go_on_every_request(recorder: RecordingProxy) -> None:
    target = WorkerTarget(
        base_url=f"{recorder.url}/edge", read_only=True, root="snappy-os-ci/" + "a" * 40 + "/"
    )
    with WorkerClient(target) as client:
        client.get("/catalog", headers={"X-Extra": "1"})
    (seen,) = recorder.requests
    assert seen.path == "/edge/catalog"
    assert seen.headers["x-sync-ci-root"] == target.root and seen.headers["x-extra"] == "1"


def test_http_proxy_from_the_environment_is_used_as_requests_would(
    recorder: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY takes the request (absolute URL); the name is never resolved here."""
    monkeypatch.setenv("HTTP_PROXY", recorder.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with WorkerClient(WorkerTarget(base_url="http://worker.invalid", read_only=True)) as client:
        assert client.get("/catalog").status == 200
        with pytest.raises(GuardViolation):
            client.post("/_push", json_body={})
    assert [(r.method, r.path) for r in recorder.requests] == [
        ("GET", "http://worker.invalid/catalog")
    ]


def test_no_proxy_sends_directly(recorder: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    direct = RecordingProxy()
    try:
        monkeypatch.setenv("HTTP_PROXY", recorder.url)
        monkeypatch.setenv("NO_PROXY", "example.org, 127.0.0.1")
        with WorkerClient(WorkerTarget(base_url=direct.url, read_only=True)) as client:
            assert client.get("/catalog").status == 200
        assert recorder.requests == []
        assert [r.path for r in direct.requests] == ["/catalog"]
    finally:
        direct.close()


def test_a_body_that_is_not_json_is_one_clear_error(recorder: RecordingProxy) -> None:
    target = WorkerTarget(base_url=recorder.url, read_only=False, allowed_posts=("/_alert",))
    with WorkerClient(target) as client, pytest.raises(WorkerError, match="not JSON"):
        client.post("/_alert", json_body={"x": math.nan})
    assert recorder.requests == []


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(WorkerError, match="not an http"):
        WorkerTarget(base_url="ftp://127.0.0.1/x", read_only=True)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate; yields (url, certificate)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_verifies_the_server_against_the_ca_bundle_requests_would_use(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server
    target = WorkerTarget(base_url=url, read_only=True, retries=0)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    _tls_context.cache_clear()
    try:
        with WorkerClient(target) as client:
            assert client.get("/_health").json() == {}
        # A bundle that does not vouch for the server: the answer is never read.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
        _tls_context.cache_clear()
        with (
            WorkerClient(target) as client,
            pytest.raises(
                UnreachableError, match=r"connection failed \(SSLCertVerificationError\)"
            ),
        ):
            client.get("/_health")
    finally:
        _tls_context.cache_clear()
