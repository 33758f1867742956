"""An HTTP or S3 client is built outside the guarded builders.

**Why:** production safety holds only if every request to a target passes the guards: the prefix
firewall and read-only hook that `sync_ci.store.build_client` installs on each boto3 client, the
check the Worker client's `http.client` connection (`sync_ci.worker._connection_class`) makes
before each request line, the adapter `sync_ci.worker.guarded_session` mounts on the requests
session conformance sends through, and the policy
`sync_ci.gates.http.new_session` puts in front of the gates' aiohttp session (Locust workers wrap
their session in `GuardedSession` the same way). A `requests.get`, `requests.Session()`,
`aiohttp.ClientSession()`, `urlopen`, `http.client` connection, `httpx`/`urllib3` client,
Locust `FastHttpSession` or boto3/botocore client built anywhere else in `sync_ci/` sends without
them, so a read-only run could write, and a CI run could write outside `snappy-os-ci/<sha>/`.
This rule reports such a construction in every module of `sync_ci/` outside those builders;
`build_client` no longer calling `install_s3_guard`; the Worker connection or `guarded_session`
no longer calling `check_http_request` (the session also mounting its adapter); `new_session` no
longer wrapping its session in
`GuardedSession`; and, in `ci_loop.py` (the schedule-time loop, read-only always), a write policy
(`prefix_policy`, `cleanup_policy`, `sandbox_admin_policy`, `WritePolicy(...)`) or a literal
`read_only=False`. Data flow beyond that (a policy chosen by a variable) is left to the runtime
guards and their tests.

**Fix:** build clients only through `sync_ci.store.open_store(endpoint, policy)`,
`WorkerClient(WorkerTarget(...))` (or `worker.guarded_session(target)` where requests' API is
needed) and `sync_ci.gates.http.new_session(policy, timeout_s)`; keep
the guard calls in those builders. ci-loop asks for `guards.read_only_policy()` and
`read_only=True` only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from checks.catalogue import Finding, Subject, example
from checks.pysource import dotted, import_aliases, nodes, parse, qualified

ID = "SA003"
TITLE = "client built outside the guarded builders"
SCOPE = ("repo",)

ENTRY = "sync_ci/ci_loop.py"
# The functions allowed to build a raw client, per module, and the calls each must make.
GUARDED_BUILDERS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "sync_ci/store.py": (("build_client", ("install_s3_guard",)),),
    "sync_ci/worker.py": (
        ("_connection_class", ("check_http_request",)),
        ("guarded_session", (".mount", "check_http_request")),
    ),
    "sync_ci/gates/http.py": (("new_session", ("GuardedSession",)),),
}
BUILDER_NAMES = (
    "store.build_client, worker.WorkerClient, worker.guarded_session, gates.http.new_session"
)

RAW_CLIENTS = (
    "boto3.",
    "botocore.session",
    "requests.Session",
    "requests.session",
    "requests.sessions.Session",
    "requests.get",
    "requests.post",
    "requests.put",
    "requests.delete",
    "requests.head",
    "requests.options",
    "requests.request",
    "requests.patch",
    "requests.api.",
    "aiohttp.ClientSession",
    "aiohttp.client.ClientSession",
    "aiohttp.request",
    "urllib.request.urlopen",
    "urllib.request.build_opener",
    "urllib.request.OpenerDirector",
    "http.client.HTTP",
    "httpx.",
    "urllib3.PoolManager",
    "urllib3.request",
    "urllib3.connection_from_url",
    "urllib3.HTTPConnectionPool",
    "urllib3.HTTPSConnectionPool",
    "locust.contrib.fasthttp.FastHttpSession",
    "geventhttpclient.",
)
WRITE_POLICIES = frozenset(
    {"prefix_policy", "cleanup_policy", "sandbox_admin_policy", "WritePolicy"}
)


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (n for n in nodes(tree) if isinstance(n, ast.Call))


def _function(tree: ast.AST, name: str) -> ast.AST | None:
    for node in nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return node
    return None


def _builder_span(tree: ast.AST, name: str) -> tuple[int, int]:
    node = _function(tree, name)
    if node is None:
        return (0, -1)
    return (getattr(node, "lineno", 0), getattr(node, "end_lineno", 0) or 0)


def _raw_clients(path: str, tree: ast.Module) -> Iterator[Finding]:
    aliases = import_aliases(tree)
    spans = [_builder_span(tree, name) for name, _ in GUARDED_BUILDERS.get(path, ())]
    for call in _calls(tree):
        name = qualified(call.func, aliases)
        if name.startswith(RAW_CLIENTS) and not any(a <= call.lineno <= b for a, b in spans):
            yield Finding(
                path=path,
                line=call.lineno,
                message=f"{name}() builds a client outside the guarded builders "
                f"({BUILDER_NAMES}), so the prefix firewall and the read-only guard are not on it",
            )


def _ci_loop_policies(tree: ast.Module) -> Iterator[Finding]:
    for call in _calls(tree):
        name = dotted(call.func).rsplit(".", 1)[-1]
        if name in WRITE_POLICIES:
            yield Finding(
                path=ENTRY,
                line=call.lineno,
                message=f"ci-loop asks for a write policy ({name}); it is read-only",
            )
        for kw in call.keywords:
            if (
                kw.arg == "read_only"
                and isinstance(kw.value, ast.Constant)
                and kw.value.value is False
            ):
                yield Finding(
                    path=ENTRY,
                    line=call.lineno,
                    message="ci-loop passes read_only=False; it is read-only",
                )


def _builders_guard(path: str, tree: ast.Module) -> Iterator[Finding]:
    for name, guards in GUARDED_BUILDERS[path]:
        builder = _function(tree, name)
        called = [dotted(c.func) for c in _calls(builder)] if builder is not None else []
        if not all(any(c.endswith(guard) for c in called) for guard in guards):
            yield Finding(
                path=path,
                line=getattr(builder, "lineno", 1),
                message=f"{name}() no longer applies its guard "
                f"({', '.join(g.lstrip('.') for g in guards)})",
            )


def check(subject: Subject) -> Iterator[Finding]:
    """Report clients built outside the guarded builders, and builders that lost their guard."""
    for path, text in subject.matching("sync_ci/*.py"):
        tree = parse(text)
        if tree is None:
            continue
        yield from _raw_clients(path, tree)
        if path == ENTRY:
            yield from _ci_loop_policies(tree)
        if path in GUARDED_BUILDERS:
            yield from _builders_guard(path, tree)


_STORE = (
    "from sync_ci.guards import install_s3_guard\n"
    "def build_client(endpoint, policy):\n"
    "    import boto3\n"
    "    client = boto3.session.Session().client('s3')\n"
    "    install_s3_guard(client, policy)\n"
    "    return client\n"
)
_HTTP = (
    "import aiohttp\n"
    "class GuardedSession:\n"
    "    def __init__(self, session, policy): ...\n"
    "def new_session(policy, timeout_s):\n"
    "    return GuardedSession(aiohttp.ClientSession(timeout=timeout_s), policy)\n"
)
GOOD = (
    example(
        {
            "sync_ci/ci_loop.py": (
                "from sync_ci import guards\n"
                "from sync_ci.store import open_store\n"
                "def run(endpoint):\n"
                "    return open_store(endpoint, guards.read_only_policy())\n"
            ),
            "sync_ci/store.py": _STORE,
            "sync_ci/guards.py": "def install_s3_guard(c, p): ...\n",
            "sync_ci/gates/http.py": _HTTP,
            "sync_ci/gates/load.py": (
                "from sync_ci.gates.http import new_session\n"
                "async def fire(policy):\n"
                "    async with new_session(policy, 10) as session:\n"
                "        return await session.get('http://w/install')\n"
            ),
        }
    ),
    example({"tests/test_x.py": "import requests\nrequests.Session()\n"}),
    example(
        {
            "sync_ci/worker.py": (
                "import requests\n"
                "from sync_ci.guards import check_http_request\n"
                "def _connection_class(https):\n"
                "    import http.client\n"
                "    class Guarded(http.client.HTTPConnection):\n"
                "        def putrequest(self, method, url):\n"
                "            check_http_request(True, method, url, ())\n"
                "    return Guarded\n"
                "def guarded_session(target):\n"
                "    class Adapter:\n"
                "        def send(self, request):\n"
                "            check_http_request(True, request.method, request.url, ())\n"
                "    session = requests.Session()\n"
                "    session.mount('http://', Adapter())\n"
                "    return session\n"
            )
        }
    ),
)
BAD = (
    example(
        {"sync_ci/fetch.py": "import boto3\ndef pull():\n    return boto3.client('s3')\n"},
        at=[("sync_ci/fetch.py", 3)],
    ),
    example(
        {
            "sync_ci/smoke.py": "import requests\n\ndef ping(u):\n    return requests.get(u, timeout=5)\n"
        },
        at=[("sync_ci/smoke.py", 4)],
    ),
    example(
        {
            "sync_ci/gates/load.py": (
                "from aiohttp import ClientSession as CS\n"
                "async def fire():\n"
                "    async with CS() as session:\n"
                "        return await session.post('http://w/_push')\n"
            )
        },
        at=[("sync_ci/gates/load.py", 3)],
    ),
    example(
        {
            "sync_ci/verify.py": (
                "import urllib.request\nimport http.client\n"
                "urllib.request.urlopen('http://w/_alert', b'{}', 5)\n"
                "http.client.HTTPSConnection('w', timeout=5)\n"
            )
        },
        at=[("sync_ci/verify.py", 3), ("sync_ci/verify.py", 4)],
    ),
    example(
        {
            "sync_ci/gates/locust_user.py": (
                "from locust.contrib.fasthttp import FastHttpSession\n"
                "session = FastHttpSession('http://w', request_event=None, user=None)\n"
            )
        },
        at=[("sync_ci/gates/locust_user.py", 2)],
    ),
    example(
        {
            "sync_ci/gates/http.py": (
                "import aiohttp\n"
                "def new_session(policy, timeout_s):\n"
                "    return aiohttp.ClientSession(timeout=timeout_s)\n"
            )
        },
        at=[("sync_ci/gates/http.py", 2)],
    ),
    example(
        {
            "sync_ci/ci_loop.py": (
                "from sync_ci import guards\n"
                "def run(b, sha):\n"
                "    return guards.prefix_policy(b, 'snappy-os-ci/' + sha + '/')\n"
            )
        },
        at=[("sync_ci/ci_loop.py", 3)],
    ),
    example(
        {
            "sync_ci/ci_loop.py": "from sync_ci.worker import WorkerClient, WorkerTarget\n"
            "w = WorkerClient(WorkerTarget(base_url='u', read_only=False))\n",
            "sync_ci/worker.py": "import requests\n"
            "def _connection_class(https):\n"
            "    import http.client\n"
            "    return http.client.HTTPConnection\n"
            "def guarded_session(target):\n"
            "    session = requests.Session()\n"
            "    session.mount('http://', object())\n"
            "    return session\n",
        },
        at=[("sync_ci/ci_loop.py", 2), ("sync_ci/worker.py", 2), ("sync_ci/worker.py", 5)],
    ),
    example(
        {
            "sync_ci/store.py": "def build_client(endpoint, policy):\n    import boto3\n"
            "    return boto3.client('s3')\n",
        },
        at=[("sync_ci/store.py", 1)],
    ),
)
