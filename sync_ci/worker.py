"""HTTP client for the Worker contract: guarded, bounded, with bounded retries.

It speaks HTTP/1.1 through the standard library's `http.client`, one kept-alive connection per
client: the contract needs no more, and `doctor` runs every six hours on every tenant machine,
where importing `requests` alone cost more than the rest of the run. The guard sits in the
connection itself, so nothing reaches the socket that the target's policy refuses: read-only
targets send only GET and HEAD, writing ones only their named POST paths, and a target whose
timeout does not bound both the connect and the read is refused when it is built.

Like `requests`, it honours HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY from the
environment, and REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE (else certifi's bundle when installed,
else the system's) for TLS.

Over 400 lines because the connection that carries the guard, the retrying client above it and
the one requests Session conformance needs are the one layer every Worker request passes through.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

from sync_ci.contract import ROOT_HEADER
from sync_ci.errors import GuardViolation, UnreachableError, WorkerError
from sync_ci.guards import check_http_request

if TYPE_CHECKING:
    import http.client
    import ssl

    import requests

FIELD_POSTS = ("/_alert", "/_heartbeat", "/_push")
# The pause before retry n (1, 2, ...) is n times this.
RETRY_PAUSE_S = 0.2
USER_AGENT = "sync-ci"

Timeout = float | tuple[float, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """One Worker response, read whole."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float
    url: str

    def json(self) -> Any:
        """Decode the body as JSON or raise WorkerError."""
        import json

        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise WorkerError(
                f"{self.url} answered {self.status} with a body that is not JSON: {self.body[:80]!r}"
            ) from None

    def header(self, name: str) -> str:
        """Return a header value ('' when absent), case-insensitively."""
        return self.headers.get(name.lower(), "")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerTarget:
    """Where the Worker is and how requests to it are guarded.

    `timeout_s` bounds each phase: seconds for both, or a (connect, read) pair. One that leaves a
    phase unbounded (None, 0, a negative, infinity, NaN, half a pair) raises GuardViolation here,
    so no client can be built that might wait forever.
    """

    base_url: str
    read_only: bool
    timeout_s: Timeout = 10.0
    root: str = ""
    allowed_posts: tuple[str, ...] = field(default=())
    retries: int = 1

    def __post_init__(self) -> None:
        problem = timeout_problem(self.timeout_s)
        if problem:
            raise GuardViolation(f"refused a Worker client for {self.base_url}: {problem}")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WorkerError(f"Worker URL {self.base_url!r} is not an http(s) URL with a host")


def _bounded(seconds: object) -> bool:
    return (
        isinstance(seconds, int | float)
        and not isinstance(seconds, bool)
        and math.isfinite(seconds)
        and seconds > 0
    )


def timeout_problem(timeout: object) -> str:
    """Say why a timeout does not bound the request ('' when both phases are bounded).

    None, 0, negatives, infinity and NaN wait forever (or mean nothing), and so does a
    (connect, read) pair with either half unbounded: `(None, None)` is no timeout at all.
    """
    if isinstance(timeout, tuple):
        if len(timeout) == 2 and all(_bounded(part) for part in timeout):
            return ""
        return f"timeout {timeout!r} leaves a phase unbounded (give finite, positive seconds)"
    if _bounded(timeout):
        return ""
    if timeout is None:
        return "no timeout given"
    return f"timeout {timeout!r} is not a finite, positive number of seconds"


def _phases(timeout: Timeout) -> tuple[float, float]:
    """(connect, read) seconds of a checked timeout."""
    if isinstance(timeout, tuple):
        return float(timeout[0]), float(timeout[1])
    return float(timeout), float(timeout)


def _bypasses_proxy(host: str, port: int) -> bool:
    """True when NO_PROXY names `host` (a suffix on a dot boundary, `host:port`, or `*`)."""
    raw = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in raw.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.lstrip(".").strip("[]")
        if host == name or host.endswith(f".{name}"):
            return True
    return False


def proxy_for(url: SplitResult) -> SplitResult | None:
    """The proxy the environment names for `url`, as `requests` would pick it (None: direct)."""
    port = url.port or (443 if url.scheme == "https" else 80)
    if _bypasses_proxy(url.hostname or "", port):
        return None
    for name in (f"{url.scheme}_proxy", "all_proxy"):
        value = os.environ.get(name) or os.environ.get(name.upper())
        if value:
            parsed = urlsplit(value if "://" in value else f"http://{value}")
            if parsed.hostname:
                return parsed
    return None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process, on the CA bundle `requests` would use."""
    import ssl

    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or ""
    if not bundle:
        try:
            import certifi

            bundle = certifi.where()
        except ImportError:  # the system's own store
            bundle = ""
    return ssl.create_default_context(cafile=bundle or None)


def _proxy_authorization(proxy: SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    import base64

    pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
    return {"Proxy-Authorization": f"Basic {base64.b64encode(pair).decode()}"}


def _connection_class(https: bool) -> Callable[..., http.client.HTTPConnection]:
    import http.client

    base: type[http.client.HTTPConnection] = (
        http.client.HTTPSConnection if https else http.client.HTTPConnection
    )

    class GuardedConnection(base):  # type: ignore[valid-type,misc]
        """Refuses any request the target's policy does not allow, before a byte is sent."""

        def __init__(
            self,
            host: str,
            port: int,
            *,
            policy: WorkerTarget,
            origin: str,
            absolute: bool,
            read_timeout_s: float,
            proxy_headers: dict[str, str],
            **kwargs: Any,
        ) -> None:
            super().__init__(host, port, **kwargs)
            self.policy = policy
            self.origin = origin  # scheme://host[:port], for the URL the guard judges
            self.absolute = absolute  # an HTTP proxy takes the whole URL as the request target
            self.read_timeout_s = read_timeout_s
            self.proxy_headers = proxy_headers

        def putrequest(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
            full = url if self.absolute else f"{self.origin}{url}"
            check_http_request(self.policy.read_only, method, full, self.policy.allowed_posts)
            super().putrequest(method, url, *args, **kwargs)

        def connect(self) -> None:
            super().connect()
            assert self.sock is not None
            self.sock.settimeout(self.read_timeout_s)

    return GuardedConnection


def open_connection(target: WorkerTarget) -> http.client.HTTPConnection:
    """A guarded connection to the target's origin (not yet connected), through any proxy."""
    url = urlsplit(target.base_url)
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    connect_s, read_s = _phases(target.timeout_s)
    proxy = proxy_for(url)
    cls = _connection_class(https)
    kwargs: dict[str, Any] = {"timeout": connect_s}
    if https:
        kwargs["context"] = _tls_context()
    host, host_port = url.hostname or "", port
    if proxy is not None:
        host, host_port = proxy.hostname or "", proxy.port or 80
    connection = cls(
        host,
        host_port,
        policy=target,
        origin=f"{url.scheme}://{url.netloc.rpartition('@')[2]}",
        absolute=proxy is not None and not https,
        read_timeout_s=read_s,
        proxy_headers={} if proxy is None or https else _proxy_authorization(proxy),
        **kwargs,
    )
    if proxy is not None and https:
        connection.set_tunnel(url.hostname or "", port, headers=_proxy_authorization(proxy))
    return connection


def guarded_session(target: WorkerTarget) -> requests.Session:
    """A `requests` Session under the target's policy, for a caller that needs requests' API.

    Schemathesis sends its generated cases through a Session (`case.call(session=...)`), so
    conformance takes this one: every request it carries is judged as the client's are (method,
    path, and a timeout that bounds both phases) before a byte is sent.
    """
    import requests
    import requests.adapters

    class GuardedAdapter(requests.adapters.HTTPAdapter):
        """Refuses any request the target's policy does not allow, before a byte is sent."""

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            check_http_request(
                target.read_only, request.method or "GET", request.url or "", target.allowed_posts
            )
            problem = timeout_problem(kwargs.get("timeout"))
            if problem:
                raise GuardViolation(f"refused {request.method} {request.url}: {problem}")
            return super().send(request, *args, **kwargs)

    session = requests.Session()
    adapter = GuardedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["user-agent"] = USER_AGENT
    if target.root:
        session.headers[ROOT_HEADER] = target.root
    return session


def _stale(connection: http.client.HTTPConnection) -> bool:
    """True when a kept-alive connection's peer has closed it (or sent what nobody asked for)."""
    if connection.sock is None:
        return False
    import select

    readable, _, _ = select.select([connection.sock], [], [], 0)
    return bool(readable)


class WorkerClient:
    """Speaks contract v1 to one Worker base URL."""

    def __init__(
        self, target: WorkerTarget, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.target = target
        # The pause between attempts; a test passes a recorder instead of waiting.
        self.sleep = sleep
        self._base_path = urlsplit(target.base_url).path.rstrip("/")
        self._connection: http.client.HTTPConnection | None = None
        self.headers = {"user-agent": USER_AGENT, "accept": "*/*"}
        if target.root:
            self.headers[ROOT_HEADER] = target.root

    def connection(self) -> http.client.HTTPConnection:
        """The client's kept-alive guarded connection (a new one when the peer closed it)."""
        if self._connection is not None and _stale(self._connection):
            self._connection.close()
        if self._connection is None:
            self._connection = open_connection(self.target)
        return self._connection

    def close(self) -> None:
        """Release the kept-alive connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        retry: bool = True,
    ) -> Answer:
        """Send one request; retry once on a connection error or 5xx for idempotent methods."""
        import http.client

        url = f"{self.target.base_url}{path}"
        body = data
        sent = dict(self.headers)
        if json_body is not None:
            import json

            try:
                body = json.dumps(json_body, allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                raise WorkerError(f"{method} {url}: the body is not JSON: {exc}") from None
            sent["content-type"] = "application/json"
        sent.update({k.lower(): v for k, v in (headers or {}).items()})
        if body is None and method in ("POST", "PUT", "PATCH"):
            sent["content-length"] = "0"
        attempts = 1 + (self.target.retries if retry and method in ("GET", "HEAD") else 0)
        last_error = ""
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                answer = self._exchange(method, path, body, sent, url, started)
            except TimeoutError:
                self.close()
                last_error = f"timed out after {_phases(self.target.timeout_s)[1]:g} s"
            except GuardViolation:
                raise
            except (OSError, http.client.HTTPException) as exc:
                # Before ValueError: a failed certificate check is both, and it is the connection
                # that failed (as requests reported it), not the request.
                self.close()
                last_error = f"connection failed ({type(exc).__name__})"
            except ValueError as exc:  # a header http.client refuses to send (a newline in it)
                self.close()
                raise WorkerError(f"{method} {url}: {exc}") from None
            else:
                if answer.status < 500 or attempt == attempts - 1:
                    return answer
                last_error = f"answered {answer.status}"
            if attempt < attempts - 1:
                self.sleep(RETRY_PAUSE_S * (attempt + 1))
        raise UnreachableError(f"Worker {method} {url} {last_error}")

    def _exchange(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        url: str,
        started: float,
    ) -> Answer:
        connection = self.connection()
        extra: dict[str, str] = getattr(connection, "proxy_headers", {})
        target = url if getattr(connection, "absolute", False) else f"{self._base_path}{path}"
        connection.request(method, target, body=body, headers={**headers, **extra})
        response = connection.getresponse()
        content = response.read()
        joined: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        if response.will_close:
            self.close()
        return Answer(
            status=response.status,
            headers=joined,
            body=content,
            elapsed_s=time.perf_counter() - started,
            url=url,
        )

    def get(self, path: str, **kwargs: Any) -> Answer:
        """GET a path."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Answer:
        """POST to a path (the guard refuses it on read-only targets)."""
        return self.request("POST", path, **kwargs)


def expect(answer: Answer, *statuses: int) -> Answer:
    """Return the answer if its status is one of `statuses`, else raise WorkerError with its reason."""
    if answer.status not in statuses:
        ray = answer.header("cf-ray")
        reason = error_text(answer)
        raise WorkerError(
            f"{answer.url} answered {answer.status}, expected {'/'.join(map(str, statuses))}"
            + (f": {reason}" if reason else "")
            + (f" (cf-ray {ray})" if ray else "")
        )
    return answer


def error_text(answer: Answer) -> str:
    """Return the Worker's own error message from a JSON error body, shortened ('' if none)."""
    import json

    try:
        document = json.loads(answer.body[:4096])
    except (UnicodeDecodeError, ValueError):
        return ""
    message = document.get("error") if isinstance(document, dict) else None
    return " ".join(str(message).split())[:200] if message else ""
