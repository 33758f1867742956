"""A network call in `sync_ci/` has no timeout.

**Why:** every loop of the seed runs unattended: a PR job, a cron pass every six hours on the
maintainer's machine, doctor on every tenant. A request without a timeout can hang forever on a
half-open connection, and a hung cron pass holds its lock, so every later pass is skipped and no
alert is ever sent. `requests` has no default timeout at all, `urlopen`, `http.client` and
`socket.create_connection` wait for the OS (minutes), an `aiohttp.ClientSession` without
`timeout=` waits five minutes, and a botocore `Config` without `connect_timeout`/`read_timeout`
waits 60 s per attempt. A timeout that is there but bounds nothing counts as none:
`timeout=None`, `timeout=(None, None)` or `(5, None)` (requests then waits forever for that
phase), `0` or a negative number, `math.inf`, and `aiohttp.ClientTimeout()` without `total=`.

**Fix:** pass `timeout=` on every `requests` call (or go through `sync_ci.worker.WorkerClient`,
which always does), `timeout=` to `urlopen`, `HTTPConnection` and `create_connection`, an
`aiohttp.ClientTimeout(total=...)` to the session (`sync_ci.gates.http.new_session` does), and
build S3 clients with `sync_ci.store.build_client` (its `Config` sets both timeouts). Every value
is a finite, positive number of seconds, for both halves of a `(connect, read)` pair.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from checks.catalogue import Finding, Subject, example
from checks.pysource import (
    dotted,
    has_keyword,
    import_aliases,
    keyword,
    nodes,
    number,
    parse,
    qualified,
)

ID = "SA002"
TITLE = "network call without a timeout"
SCOPE = ("repo",)

VERBS = frozenset({"get", "post", "put", "delete", "head", "patch", "options", "request"})
# Callable -> (keywords that satisfy it, positional index that would carry it, or -1).
NEEDS_TIMEOUT: dict[str, tuple[tuple[str, ...], int]] = {
    "urllib.request.urlopen": (("timeout",), 2),
    "http.client.HTTPConnection": (("timeout",), 2),
    "http.client.HTTPSConnection": (("timeout",), -1),
    "socket.create_connection": (("timeout",), 1),
    "aiohttp.ClientSession": (("timeout",), -1),
    "aiohttp.request": (("timeout",), -1),
    "botocore.config.Config": (("connect_timeout", "read_timeout"), -1),
}
SESSION_FACTORIES = frozenset({"requests.Session", "requests.session", "requests.sessions.Session"})
TIMEOUT_KEYWORDS = ("timeout", "connect_timeout", "read_timeout", "total")
CLIENT_TIMEOUTS = frozenset({"aiohttp.ClientTimeout", "aiohttp.client.ClientTimeout"})


def _unbounded(value: ast.expr, aliases: dict[str, str]) -> bool:
    """True when a literal timeout value bounds nothing (None, <= 0, infinity, a half-open pair)."""
    if isinstance(value, ast.Constant) and value.value is None:
        return True
    if isinstance(value, ast.Tuple):
        return any(_unbounded(part, aliases) for part in value.elts)
    if qualified(value, aliases) in ("math.inf", "numpy.inf"):
        return True
    if (
        isinstance(value, ast.Call)
        and qualified(value.func, aliases) == "float"
        and value.args
        and isinstance(value.args[0], ast.Constant)
        and str(value.args[0].value).lower().lstrip("+-") in ("inf", "infinity", "nan")
    ):
        return True
    seconds = number(value)
    return seconds is not None and seconds <= 0


def _unbounded_value(call: ast.Call, aliases: dict[str, str]) -> str:
    for name in TIMEOUT_KEYWORDS:
        value = keyword(call, name)
        if value is not None and _unbounded(value, aliases):
            return f"{name}={ast.unparse(value)} bounds nothing (give finite, positive seconds)"
    name = qualified(call.func, aliases)
    if (
        name in CLIENT_TIMEOUTS
        and keyword(call, "total") is None
        and not call.args
        and not has_keyword(call, "sock_read", "sock_connect", "connect")
    ):
        return f"{name}() without total= bounds nothing"
    return ""


def _sessions(tree: ast.AST, aliases: dict[str, str]) -> set[str]:
    """Names and attributes bound to a requests session (assigned or annotated)."""
    names: set[str] = set()
    for node in nodes(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            if qualified(node.value.func, aliases) in SESSION_FACTORIES:
                names.update(dotted(t) for t in node.targets if dotted(t))
        elif isinstance(node, ast.AnnAssign):
            annotation = (
                qualified(node.annotation, aliases)
                if isinstance(node.annotation, ast.Name | ast.Attribute)
                else ""
            )
            value = node.value
            made = (
                isinstance(value, ast.Call) and qualified(value.func, aliases) in SESSION_FACTORIES
            )
            if annotation in SESSION_FACTORIES or made:
                names.add(dotted(node.target))
        elif (
            isinstance(node, ast.withitem)
            and isinstance(node.context_expr, ast.Call)
            and qualified(node.context_expr.func, aliases) in SESSION_FACTORIES
            and node.optional_vars
        ):
            names.add(dotted(node.optional_vars))
    names.discard("")
    return names


def _problem(call: ast.Call, aliases: dict[str, str], sessions: set[str]) -> str:
    unbounded = _unbounded_value(call, aliases)
    if unbounded:
        return unbounded
    name = qualified(call.func, aliases)
    if name in NEEDS_TIMEOUT:
        keywords, position = NEEDS_TIMEOUT[name]
        if has_keyword(call, *keywords) or 0 <= position < len(call.args):
            return ""
        if any(isinstance(a, ast.Starred) for a in call.args):
            return ""
        return f"{name}() without {' / '.join(keywords)}"
    if name in ("boto3.client", "boto3.resource") and not has_keyword(call, "config"):
        return f"{name}() without config= (botocore's default is a 60 s wait per attempt)"
    if isinstance(call.func, ast.Attribute) and call.func.attr in VERBS:
        receiver = dotted(call.func.value)
        is_requests = name.startswith("requests.") and name.count(".") == 1
        if (is_requests or receiver in sessions) and not has_keyword(call, "timeout"):
            return f"{name or call.func.attr}() without timeout="
    return ""


def check(subject: Subject) -> Iterator[Finding]:
    """Report network calls under sync_ci/ that can wait forever."""
    for path, text in subject.matching("sync_ci/*.py"):
        tree = parse(text)
        if tree is None:
            continue
        aliases = import_aliases(tree)
        sessions = _sessions(tree, aliases)
        for node in nodes(tree):
            if isinstance(node, ast.Call):
                problem = _problem(node, aliases, sessions)
                if problem:
                    yield Finding(path=path, line=node.lineno, message=problem)


GOOD = (
    example(
        {
            "sync_ci/fetch.py": (
                "import requests\n"
                "from urllib.request import urlopen\n"
                "def fetch(url: str) -> bytes:\n"
                "    session = requests.Session()\n"
                "    session.get(url, timeout=5)\n"
                "    urlopen(url, timeout=5).read()\n"
                "    return requests.get(url, timeout=(3, 10)).content\n"
            ),
            "sync_ci/aio.py": (
                "import aiohttp\n"
                "def make() -> aiohttp.ClientSession:\n"
                "    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))\n"
            ),
            "tests/test_x.py": "import requests\nrequests.get('http://127.0.0.1')\n",
        }
    ),
)
BAD = (
    example(
        {"sync_ci/a.py": "import requests\ndef f(u):\n    return requests.post(u, json={})\n"},
        at=[("sync_ci/a.py", 3)],
    ),
    example(
        {
            "sync_ci/b.py": (
                "import requests\n"
                "class C:\n"
                "    def __init__(self):\n"
                "        self.http = requests.Session()\n"
                "    def go(self, u):\n"
                "        return self.http.get(u)\n"
            )
        },
        at=[("sync_ci/b.py", 6)],
    ),
    example(
        {"sync_ci/c.py": "from urllib.request import urlopen\nurlopen('http://x')\n"},
        at=[("sync_ci/c.py", 2)],
    ),
    example(
        {"sync_ci/d.py": "import aiohttp\ns = aiohttp.ClientSession()\n"}, at=[("sync_ci/d.py", 2)]
    ),
    example(
        {"sync_ci/e.py": "from botocore.config import Config\nc = Config(retries={})\n"},
        at=[("sync_ci/e.py", 2)],
    ),
    example(
        {
            "sync_ci/f.py": (
                "import math\n"
                "import requests\n"
                "def f(s: requests.Session, u: str) -> None:\n"
                "    requests.get(u, timeout=(None, None))\n"
                "    requests.get(u, timeout=(3, None))\n"
                "    requests.get(u, timeout=None)\n"
                "    s.get(u, timeout=0)\n"
                "    s.get(u, timeout=-1)\n"
                "    s.get(u, timeout=math.inf)\n"
                "    s.get(u, timeout=float('inf'))\n"
            )
        },
        at=[("sync_ci/f.py", line) for line in range(4, 11)],
    ),
    example(
        {
            "sync_ci/g.py": (
                "import aiohttp\n"
                "from botocore.config import Config\n"
                "s = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout())\n"
                "t = aiohttp.ClientTimeout(total=None)\n"
                "c = Config(connect_timeout=0, read_timeout=30)\n"
            )
        },
        at=[("sync_ci/g.py", 3), ("sync_ci/g.py", 4), ("sync_ci/g.py", 5)],
    ),
)
