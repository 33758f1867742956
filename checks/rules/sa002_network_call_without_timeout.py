"""A network call in `sync_ci/` has no timeout.

**Why:** every loop of the seed runs unattended: a PR job, a cron pass every six hours on the
maintainer's machine, doctor on every tenant. A request without a timeout can hang forever on a
half-open connection, and a hung cron pass holds its lock, so every later pass is skipped and no
alert is ever sent. `requests` has no default timeout at all, `urlopen`, `http.client` and
`socket.create_connection` wait for the OS (minutes), an `aiohttp.ClientSession` without
`timeout=` waits five minutes, and a botocore `Config` without `connect_timeout`/`read_timeout`
waits 60 s per attempt.

**Fix:** pass `timeout=` on every `requests` call (or go through `sync_ci.worker.WorkerClient`,
which always does), `timeout=` to `urlopen`, `HTTPConnection` and `create_connection`, an
`aiohttp.ClientTimeout` to the session, and build S3 clients with `sync_ci.store.build_client`
(its `Config` sets both timeouts).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from checks.catalogue import Finding, Subject, example
from checks.pysource import dotted, has_keyword, import_aliases, nodes, parse, qualified

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
    example({"sync_ci/a.py": "import requests\ndef f(u):\n    return requests.post(u, json={})\n"}),
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
        }
    ),
    example({"sync_ci/c.py": "from urllib.request import urlopen\nurlopen('http://x')\n"}),
    example({"sync_ci/d.py": "import aiohttp\ns = aiohttp.ClientSession()\n"}),
    example({"sync_ci/e.py": "from botocore.config import Config\nc = Config(retries={})\n"}),
)
