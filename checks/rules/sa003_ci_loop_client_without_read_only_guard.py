"""Code reachable from ci-loop builds a client without the read-only guard.

**Why:** the schedule-time loop runs every six hours against the live bucket and the production
Worker and must never write (a write-cron risks CI write, catalog rebuild, CI again, in a loop).
The guards hold only if every client on that path is built by `sync_ci.store.build_client` (which
installs the botocore hook) or `sync_ci.worker.WorkerClient` (which mounts the guarded adapter),
and if ci-loop itself never asks for a write policy. This rule follows the imports from
`sync_ci/ci_loop.py` through `sync_ci`, and reports: any module on that path that builds a boto3,
botocore, requests, aiohttp or urllib client itself; `build_client` no longer calling
`install_s3_guard`; `WorkerClient` no longer mounting the adapter that calls `check_http_request`;
and, in `ci_loop.py`, a write policy (`prefix_policy`, `cleanup_policy`, `sandbox_admin_policy`,
`WritePolicy(...)`) or a literal `read_only=False`. Data flow beyond that (a policy chosen by a
variable in another module) is left to the runtime guard and its tests.

**Fix:** build clients only through `sync_ci.store.open_store(..., guards.read_only_policy())` and
`WorkerClient(WorkerTarget(..., read_only=True))`; keep the guard calls in `build_client` and
`WorkerClient`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from checks.catalogue import Finding, Subject, example
from checks.pysource import dotted, import_aliases, nodes, parse, qualified

ID = "SA003"
TITLE = "ci-loop path builds a client without the read-only guard"
SCOPE = ("repo",)

ENTRY = "sync_ci/ci_loop.py"
GUARDED_MODULES = {"sync_ci/store.py", "sync_ci/worker.py"}
RAW_CLIENTS = (
    "boto3.",
    "botocore.session",
    "requests.Session",
    "requests.session",
    "requests.get",
    "requests.post",
    "requests.put",
    "requests.delete",
    "requests.request",
    "requests.patch",
    "aiohttp.ClientSession",
    "aiohttp.request",
    "urllib.request.urlopen",
    "http.client.HTTP",
)
WRITE_POLICIES = frozenset(
    {"prefix_policy", "cleanup_policy", "sandbox_admin_policy", "WritePolicy"}
)


def _module_path(name: str, files: set[str]) -> str:
    base = name.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if candidate in files:
            return candidate
    return ""


def _imports(path: str, tree: ast.Module, files: set[str]) -> Iterator[str]:
    package = path.rsplit("/", 1)[0].replace("/", ".")
    for node in nodes(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*parts, node.module] if node.module else parts)
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("sync_ci"):
                found = _module_path(name, files)
                if found:
                    yield found


def reachable(subject: Subject) -> dict[str, ast.Module]:
    """Return the parsed sync_ci modules reachable by import from ci_loop.py."""
    files = set(subject.files)
    seen: dict[str, ast.Module] = {}
    todo = [ENTRY] if ENTRY in files else []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        tree = parse(subject.files[path])
        if tree is None:
            continue
        seen[path] = tree
        todo.extend(p for p in _imports(path, tree, files) if p not in seen)
    return seen


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (n for n in nodes(tree) if isinstance(n, ast.Call))


def _function(tree: ast.AST, name: str) -> ast.AST | None:
    for node in nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return node
    return None


def check(subject: Subject) -> Iterator[Finding]:
    """Report unguarded client construction on the ci-loop import path."""
    modules = reachable(subject)
    for path, tree in sorted(modules.items()):
        aliases = import_aliases(tree)
        if path not in GUARDED_MODULES:
            for call in _calls(tree):
                name = qualified(call.func, aliases)
                if name.startswith(RAW_CLIENTS):
                    yield Finding(
                        path=path,
                        line=call.lineno,
                        message=f"{name}() builds a client outside sync_ci.store/sync_ci.worker, "
                        "so the read-only guard is not installed on it",
                    )
        if path == ENTRY:
            for call in _calls(tree):
                name = dotted(call.func).rsplit(".", 1)[-1]
                if name in WRITE_POLICIES:
                    yield Finding(
                        path=path,
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
                            path=path,
                            line=call.lineno,
                            message="ci-loop passes read_only=False; it is read-only",
                        )
    store = modules.get("sync_ci/store.py")
    if store is not None:
        build = _function(store, "build_client")
        if build is None or not any(
            dotted(c.func).endswith("install_s3_guard") for c in _calls(build)
        ):
            yield Finding(
                path="sync_ci/store.py",
                line=getattr(build, "lineno", 1),
                message="build_client() does not call install_s3_guard()",
            )
    worker = modules.get("sync_ci/worker.py")
    if worker is not None:
        client = _function(worker, "WorkerClient")
        mounts = client is not None and any(
            dotted(c.func).endswith(".mount") for c in _calls(client)
        )
        checks = any(dotted(c.func).endswith("check_http_request") for c in _calls(worker))
        if not (mounts and checks):
            yield Finding(
                path="sync_ci/worker.py",
                line=getattr(client, "lineno", 1),
                message="WorkerClient does not mount the guarded adapter (check_http_request)",
            )


_STORE = (
    "from sync_ci.guards import install_s3_guard\n"
    "def build_client(endpoint, policy):\n"
    "    import boto3\n"
    "    client = boto3.session.Session().client('s3')\n"
    "    install_s3_guard(client, policy)\n"
    "    return client\n"
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
        }
    ),
    example({"sync_ci/smoke.py": "import requests\nrequests.Session()\n"}),
)
BAD = (
    example(
        {
            "sync_ci/ci_loop.py": "from sync_ci.fetch import pull\n",
            "sync_ci/fetch.py": "import boto3\ndef pull():\n    return boto3.client('s3')\n",
        }
    ),
    example(
        {
            "sync_ci/ci_loop.py": (
                "from sync_ci import guards\n"
                "def run(b, sha):\n"
                "    return guards.prefix_policy(b, 'snappy-os-ci/' + sha + '/')\n"
            )
        }
    ),
    example(
        {
            "sync_ci/ci_loop.py": "from sync_ci.worker import WorkerClient, WorkerTarget\n"
            "w = WorkerClient(WorkerTarget(base_url='u', read_only=False))\n",
            "sync_ci/worker.py": "class WorkerClient:\n    pass\nclass WorkerTarget:\n    pass\n",
        }
    ),
    example(
        {
            "sync_ci/ci_loop.py": "from . import store\n",
            "sync_ci/store.py": "def build_client(endpoint, policy):\n    import boto3\n"
            "    return boto3.client('s3')\n",
        }
    ),
)
