"""HTTP client for the Worker contract: one guarded requests session, timeouts, bounded retries."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sync_ci.contract import ROOT_HEADER
from sync_ci.errors import GuardViolation, UnreachableError, WorkerError
from sync_ci.guards import check_http_request

if TYPE_CHECKING:
    import requests

FIELD_POSTS = ("/_alert", "/_heartbeat", "/_push")
# The pause before retry n (1, 2, ...) is n times this.
RETRY_PAUSE_S = 0.2


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
    """Where the Worker is and how requests to it are guarded."""

    base_url: str
    read_only: bool
    timeout_s: float = 10.0
    root: str = ""
    allowed_posts: tuple[str, ...] = field(default=())
    retries: int = 1


def _bounded(seconds: object) -> bool:
    return (
        isinstance(seconds, int | float)
        and not isinstance(seconds, bool)
        and math.isfinite(seconds)
        and seconds > 0
    )


def timeout_problem(timeout: object) -> str:
    """Say why a requests `timeout=` does not bound the request ('' when both phases are bounded).

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


def _adapter_class() -> type:
    import requests.adapters

    class GuardedAdapter(requests.adapters.HTTPAdapter):
        """Refuses any request the target's policy does not allow, before a byte is sent."""

        def __init__(self, read_only: bool, allowed_posts: tuple[str, ...]) -> None:
            super().__init__(max_retries=0)
            self.read_only = read_only
            self.allowed_posts = allowed_posts

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            check_http_request(
                self.read_only, request.method or "GET", request.url or "", self.allowed_posts
            )
            problem = timeout_problem(kwargs.get("timeout"))
            if problem:
                raise GuardViolation(f"refused {request.method} {request.url}: {problem}")
            return super().send(request, *args, **kwargs)

    return GuardedAdapter


class WorkerClient:
    """Speaks contract v1 to one Worker base URL."""

    def __init__(
        self, target: WorkerTarget, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        import requests

        self.target = target
        # The pause between attempts; a test passes a recorder instead of waiting.
        self.sleep = sleep
        self.session: requests.Session = requests.Session()
        adapter = _adapter_class()(target.read_only, target.allowed_posts)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["user-agent"] = "sync-ci"
        if target.root:
            self.session.headers[ROOT_HEADER] = target.root

    def close(self) -> None:
        """Release pooled connections."""
        self.session.close()

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
        import requests

        url = f"{self.target.base_url}{path}"
        attempts = 1 + (self.target.retries if retry and method in ("GET", "HEAD") else 0)
        last_error = ""
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                response = self.session.request(
                    method,
                    url,
                    json=json_body,
                    data=data,
                    headers=headers,
                    timeout=self.target.timeout_s,
                    allow_redirects=False,
                )
            except requests.exceptions.Timeout:
                last_error = f"timed out after {self.target.timeout_s:g} s"
            except requests.exceptions.ConnectionError as exc:
                last_error = f"connection failed ({type(exc).__name__})"
            except requests.exceptions.RequestException as exc:
                raise WorkerError(f"{method} {url}: {exc}") from None
            else:
                answer = Answer(
                    status=response.status_code,
                    headers={k.lower(): v for k, v in response.headers.items()},
                    body=response.content,
                    elapsed_s=time.perf_counter() - started,
                    url=url,
                )
                if answer.status < 500 or attempt == attempts - 1:
                    return answer
                last_error = f"answered {answer.status}"
            if attempt < attempts - 1:
                self.sleep(RETRY_PAUSE_S * (attempt + 1))
        raise UnreachableError(f"Worker {method} {url} {last_error}")

    def get(self, path: str, **kwargs: Any) -> Answer:
        """GET a path."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Answer:
        """POST to a path (the adapter refuses it on read-only targets)."""
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
