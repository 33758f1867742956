"""A test writes to S3 other than through a guarded store, or names the production root in a write.

**Why:** CI runs the tests with credentials for the real bucket. The prefix firewall in
`sync_ci.guards` stops a write outside `snappy-os-ci/<sha>/` at run time, but only for clients
built by `sync_ci.store` (the `ci_store`/`admin_store` fixtures and `open_store`). A test that
builds its own client with `boto3.client(...)`, `boto3.resource(...)` or a `Session` goes around
the firewall, and a write whose key resolves to the production root (`snappy-os/...`, through a
constant, an f-string, a concatenation or `settings.live_root`) is exactly the mistake the seed
says must be rejected before it runs. Aliases are followed (`s3 = boto3.client("s3")`,
`obj = s3r.Object(bucket, key)`, `obj.put()`, `upload_file`, `.meta.client`). Two writes are
allowed: one inside `with pytest.raises(...)` (a refusal test), and one through the `admin_store`
fixture or another store built with `sandbox_admin_policy()`, which `build_client` accepts only for
a loopback endpoint, so its `snappy-os/` is the sandbox's stand-in for production.

**Fix:** write through the per-commit fixture (`ci_store`, whose keys live under
`snappy-os-ci/<sha>/`), or `admin_store` to arrange a sandbox bucket, and build keys from the
fixture's prefix, never from the production root. If a test must show that such a write is
refused, put it inside `with pytest.raises(GuardViolation):`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from checks.catalogue import Finding, Subject, example
from checks.pysource import (
    UNKNOWN,
    constant_strings,
    dotted,
    import_aliases,
    nodes,
    parse,
    qualified,
)

ID = "SA001"
TITLE = "test writes to S3 outside the per-commit CI prefix"
SCOPE = ("repo",)

PATTERNS = ("tests/*.py", "test_*.py", "*/test_*.py", "conftest.py", "*/conftest.py")
PRODUCTION_ROOT = "snappy-os"
PRODUCTION_NAMES = frozenset({"live_root", "LIVE_ROOT", "PRODUCTION_ROOT", "PROD_ROOT"})
WRITE_METHODS = frozenset(
    {
        "put_object",
        "upload_file",
        "upload_fileobj",
        "copy_object",
        "copy",
        "copy_from",
        "delete_object",
        "delete_objects",
        "create_multipart_upload",
        "upload_part",
        "upload_part_copy",
        "complete_multipart_upload",
        "put",
        "delete",
        "delete_many",
        "put_object_acl",
        "put_object_tagging",
        "put_bucket_policy",
        "put_bucket_lifecycle_configuration",
        "put_bucket_versioning",
        "put_bucket_cors",
        "initiate_multipart_upload",
    }
)
# Which positional argument holds the key, per method, for calls that take it positionally.
KEY_POSITION = {"upload_file": 2, "upload_fileobj": 2, "put": 0, "delete": 0}
RAW_FACTORIES = frozenset(
    {
        "boto3.client",
        "boto3.resource",
        "boto3.session.Session.client",
        "boto3.Session",
        "boto3.session.Session",
        "botocore.session.get_session",
        "botocore.session.Session",
    }
)


# Fixtures whose client build_client() only accepts for a loopback endpoint (sandbox_admin_policy):
# they arrange the sandbox's stand-in for production and can never reach a real bucket.
LOOPBACK_FIXTURES = frozenset({"admin_store"})


@dataclass(frozen=True, slots=True)
class Handle:
    """What a name is bound to: a raw boto3 client/resource/object (with an Object's key), or a
    loopback-only sandbox admin store."""

    raw: bool
    key: ast.expr | None = None
    loopback: bool = False


def _is_production(value: str) -> bool:
    return value == PRODUCTION_ROOT or value.startswith(PRODUCTION_ROOT + "/")


class _Scanner:
    def __init__(self, tree: ast.Module) -> None:
        self.aliases = import_aliases(tree)
        self.strings = constant_strings(tree)
        for name in PRODUCTION_NAMES:
            self.strings.setdefault(name, PRODUCTION_ROOT + "/")
        self.handles: dict[str, Handle] = {}
        self.refusals: list[tuple[int, int]] = []

    def handle(self, node: ast.expr) -> Handle | None:
        if isinstance(node, ast.Name):
            if node.id in LOOPBACK_FIXTURES:
                return Handle(raw=False, loopback=True)
            return self.handles.get(node.id)
        if isinstance(node, ast.Attribute):
            if node.attr == "client" and dotted(node).endswith("meta.client"):
                inner = node.value.value if isinstance(node.value, ast.Attribute) else node.value
                return self.handle(inner)
            return self.handles.get(dotted(node))
        if isinstance(node, ast.Call):
            name = qualified(node.func, self.aliases)
            if name in RAW_FACTORIES or name.startswith("boto3."):
                return Handle(raw=True)
            if any(
                dotted(n.func).endswith("sandbox_admin_policy")
                for n in ast.walk(node)
                if isinstance(n, ast.Call)
            ):
                return Handle(raw=False, loopback=True)
            if isinstance(node.func, ast.Attribute):
                base = self.handle(node.func.value)
                if base is not None and base.raw:
                    if node.func.attr in ("Object", "ObjectSummary"):
                        key = node.args[1] if len(node.args) > 1 else None
                        key = next((k.value for k in node.keywords if k.arg == "key"), key)
                        return Handle(raw=True, key=key)
                    if node.func.attr in ("client", "resource", "Bucket", "create_client"):
                        return Handle(raw=True)
        return None

    def bind(self, target: ast.expr, value: ast.expr) -> None:
        handle = self.handle(value)
        name = dotted(target)
        if name and handle is not None:
            self.handles[name] = handle
        if isinstance(target, ast.Name):
            text = _resolve(value, self.strings)
            if isinstance(value, ast.JoinedStr | ast.BinOp) and not text.startswith(UNKNOWN):
                self.strings[target.id] = text

    def refused(self, line: int) -> bool:
        return any(start <= line <= end for start, end in self.refusals)

    def key_of(self, call: ast.Call, method: str, handle: Handle | None) -> ast.expr | None:
        for name in ("Key", "key", "Prefix"):
            for kw in call.keywords:
                if kw.arg == name:
                    return kw.value
        if handle is not None and handle.key is not None:
            return handle.key
        position = KEY_POSITION.get(method)
        if position is not None and len(call.args) > position:
            return call.args[position]
        if method == "delete_many" and call.args:
            return call.args[0]
        return None


def _resolve(node: ast.expr | None, names: dict[str, str]) -> str:
    from checks.pysource import resolve_str

    if isinstance(node, ast.List | ast.Tuple) and node.elts:
        return _resolve(node.elts[0], names)
    return resolve_str(node, names)


def _scan(path: str, tree: ast.Module) -> Iterator[Finding]:
    scanner = _Scanner(tree)
    for node in nodes(tree):
        if isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                expr = item.context_expr
                if isinstance(expr, ast.Call) and dotted(expr.func).split(".")[-1] == "raises":
                    scanner.refusals.append((node.lineno, node.end_lineno or node.lineno))
    # Bind names in source order so an alias is known before the calls that use it.
    ordered = sorted(
        (
            n
            for n in nodes(tree)
            if isinstance(n, ast.Assign | ast.AnnAssign | ast.Call | ast.withitem)
        ),
        key=lambda n: (
            getattr(n, "lineno", getattr(getattr(n, "context_expr", None), "lineno", 0)),
            getattr(n, "col_offset", 0),
        ),
    )
    for node in ordered:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                scanner.bind(target, node.value)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            scanner.bind(node.target, node.value)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            scanner.bind(node.optional_vars, node.context_expr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method not in WRITE_METHODS or scanner.refused(node.lineno):
                continue
            handle = scanner.handle(node.func.value)
            key = _resolve(scanner.key_of(node, method, handle), scanner.strings)
            if _is_production(key) and not (handle is not None and handle.loopback):
                yield Finding(
                    path=path,
                    line=node.lineno,
                    message=f"{method}() writes to the production root "
                    f"({key.replace(UNKNOWN, '…')!r}); "
                    "tests write only under snappy-os-ci/<sha>/ through the ci_store fixture",
                )
            elif handle is not None and handle.raw:
                yield Finding(
                    path=path,
                    line=node.lineno,
                    message=f"{method}() on a client built with boto3 directly bypasses the prefix "
                    "firewall; write through the ci_store fixture",
                )


def check(subject: Subject) -> Iterator[Finding]:
    """Report S3 writes in tests that bypass the CI-prefix fixture or target the production root."""
    for path, text in subject.matching(*PATTERNS):
        tree = parse(text)
        if tree is not None:
            yield from _scan(path, tree)


GOOD = (
    example(
        {
            "tests/test_smoke.py": (
                "from sync_ci.errors import GuardViolation\n"
                "import pytest\n"
                "def test_put(ci_store, ci_prefix):\n"
                "    ci_store.put(f'{ci_prefix}objects/abc', b'x')\n"
                "def test_refused(ci_store):\n"
                "    with pytest.raises(GuardViolation):\n"
                "        ci_store.put('snappy-os/catalog.json', b'{}')\n"
                "def test_seeds_sandbox_live(admin_store):\n"
                "    admin_store.put('snappy-os/catalog.json', b'{}')\n"
            )
        }
    ),
    example(
        {
            "sync_ci/seed.py": "import boto3\n"
            "boto3.client('s3').put_object(Bucket='b', Key='snappy-os/x')\n"
        }
    ),
)
BAD = (
    example(
        {
            "tests/test_raw.py": (
                "import boto3\n"
                "def test_raw(ci_prefix):\n"
                "    s3 = boto3.client('s3')\n"
                "    s3.put_object(Bucket='b', Key=f'{ci_prefix}x', Body=b'')\n"
            )
        }
    ),
    example(
        {
            "tests/test_root.py": (
                "ROOT = 'snappy-os/'\n"
                "def test_seed(ci_store):\n"
                "    ci_store.put(f'{ROOT}catalog.json', b'{}')\n"
            )
        }
    ),
    example(
        {
            "tests/test_resource.py": (
                "from boto3 import resource\n"
                "def test_obj():\n"
                "    s3r = resource('s3')\n"
                "    obj = s3r.Object('bucket', 'snappy-os/' + 'objects/abc')\n"
                "    obj.put(Body=b'x')\n"
            )
        }
    ),
    example(
        {
            "tests/test_upload.py": (
                "import boto3\n"
                "def test_up(settings, tmp_path):\n"
                "    client = boto3.session.Session().client('s3')\n"
                "    client.upload_file(str(tmp_path / 'f'), 'bucket', settings.live_root + 'f')\n"
            )
        }
    ),
)
