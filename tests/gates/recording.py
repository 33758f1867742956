"""A recording HTTP server on 127.0.0.1: logs every request that arrives, forwards it or answers.

`RecordingProxy(upstream)` forwards each request to `upstream` (optionally dropping headers, as a
Worker that ignores them would) and returns its answer; without an upstream it answers 200 `{}`.
`requests` lists what reached the socket, so a test can prove that zero forbidden requests did.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class RecordingProxy:
    """Start on an ephemeral loopback port; `close()` stops it."""

    def __init__(self, upstream: str = "", *, strip: Iterable[str] = ()) -> None:
        self.upstream = urlsplit(upstream) if upstream else None
        self.strip = frozenset(h.lower() for h in strip)
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def writes(self) -> list[Seen]:
        """Every request that arrived with a method other than GET or HEAD."""
        with self.lock:
            return [r for r in self.requests if r.method not in ("GET", "HEAD")]

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                with proxy.lock:
                    proxy.requests.append(Seen(self.command, self.path, headers))
                status, answer, reply = 200, {"content-type": "application/json"}, b"{}"
                if proxy.upstream is not None:
                    status, answer, reply = self._forward(headers, body)
                self.send_response(status)
                for name, value in answer.items():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply)

            def _forward(
                self, headers: dict[str, str], body: bytes
            ) -> tuple[int, dict[str, str], bytes]:
                assert proxy.upstream is not None
                sent = {
                    k: v for k, v in headers.items() if k not in proxy.strip and k not in HOP_BY_HOP
                }
                connection = http.client.HTTPConnection(
                    proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=30
                )
                try:
                    connection.request(self.command, self.path, body=body or None, headers=sent)
                    response = connection.getresponse()
                    return response.status, dict(response.getheaders()), response.read()
                finally:
                    connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

        return Handler
