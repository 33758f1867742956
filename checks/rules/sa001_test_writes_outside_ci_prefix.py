"""A test writes to S3 other than through a guarded store, or names the production root in a write.

**Why:** CI runs the tests with credentials for the real bucket. The prefix firewall in
`sync_ci.guards` stops a write outside `snappy-os-ci/<sha>/` at run time, but only for clients
built by `sync_ci.store` (the `ci_store`/`admin_store` fixtures and `open_store`). A test that
builds its own client with `boto3.client(...)`, `boto3.resource(...)` or a `Session` goes around
the firewall, and a write whose key resolves to the production root (`snappy-os/...`, through a
constant, an f-string, a concatenation or `settings.live_root`) is exactly the mistake the seed
says must be rejected before it runs. Aliases are followed (`s3 = boto3.client("s3")`,
`obj = s3r.Object(bucket, key)`, `obj.put()`, `upload_file`, `.meta.client`), and so are clients
a helper function or fixture returns (`def s3(): return boto3.client("s3")`, in any test file).
Writes that hide from a method-name scan count too: a resource collection's batch delete
(`bucket.objects.all().delete()`, `.filter(Prefix=...).delete()`), `delete_bucket*` and the other
bucket-level writes, `getattr(client, "put_object")` and `client._make_api_call("PutObject", ...)`.
Two writes are allowed: one inside `with pytest.raises(...)` (a refusal test), and one through the `admin_store`
fixture or another store built with `sandbox_admin_policy()`, which `build_client` accepts only for
a loopback endpoint, so its `snappy-os/` is the sandbox's stand-in for production.

**Fix:** write through the per-commit fixture (`ci_store`, whose keys live under
`snappy-os-ci/<sha>/`), or `admin_store` to arrange a sandbox bucket, and build keys from the
fixture's prefix, never from the production root. If a test must show that such a write is
refused, put it inside `with pytest.raises(GuardViolation):`.
"""

# Over 400 lines because its GOOD and BAD examples, one for each way around the firewall listed
# above, live with the rule they prove (the docstring above is what `--explain` prints).

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
# Method prefixes that change a bucket or its objects, whatever boto3 adds under them later.
WRITE_PREFIXES = ("put_", "delete_", "copy_", "create_", "upload_", "restore_", "abort_")
# Resource collections whose batch `delete()` removes every object they yield.
COLLECTIONS = frozenset({"objects", "object_versions", "multipart_uploads"})
COLLECTION_STEPS = frozenset({"all", "filter", "limit", "page_size"})
# `_make_api_call` operations that only read.
READ_OPERATIONS = ("Get", "Head", "List")
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


def is_write_method(name: str) -> bool:
    """True for a boto3 method name that changes the store."""
    return name in WRITE_METHODS or (name.startswith(WRITE_PREFIXES) and name != "create_client")


def _collection_base(receiver: ast.expr) -> ast.expr | None:
    """For `X.objects.all()` / `X.objects.filter(...)` / `X.objects`, return X."""
    node = receiver
    while (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in COLLECTION_STEPS
    ):
        node = node.func.value
    if isinstance(node, ast.Attribute) and node.attr in COLLECTIONS:
        return node.value
    return None


class _Scanner:
    def __init__(self, tree: ast.Module, factories: frozenset[str] = frozenset()) -> None:
        # Functions and fixtures (from any test file) that return a raw boto3 client.
        self.factories = set(factories)
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
            if node.id not in self.handles and node.id in self.factories:
                return Handle(raw=True)  # a fixture parameter named after a raw-client fixture
            return self.handles.get(node.id)
        if isinstance(node, ast.Attribute):
            if dotted(node).split(".")[0] in LOOPBACK_FIXTURES:
                return Handle(raw=False, loopback=True)
            if node.attr == "client" and dotted(node).endswith("meta.client"):
                inner = node.value.value if isinstance(node.value, ast.Attribute) else node.value
                return self.handle(inner)
            return self.handles.get(dotted(node))
        if isinstance(node, ast.Call):
            name = qualified(node.func, self.aliases)
            if name in RAW_FACTORIES or name.startswith("boto3."):
                return Handle(raw=True)
            if name and name.rsplit(".", 1)[-1] in self.factories:
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


def _owners(tree: ast.Module) -> dict[int, str]:
    """Map each return/yield node to the name of the innermost function holding it."""
    owners: dict[int, str] = {}
    for node in nodes(tree):  # breadth first: an inner function's claim comes later and wins
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return | ast.Yield):
                    owners[id(inner)] = node.name
    return owners


def _scan(
    path: str, tree: ast.Module, factories: frozenset[str] = frozenset()
) -> Iterator[Finding]:
    """Yield the findings of one file; `factories` name functions that return raw clients."""
    scanner = _Scanner(tree, factories)
    yield from _walk(path, tree, scanner)


def factories_of(tree: ast.Module, known: frozenset[str] = frozenset()) -> set[str]:
    """Return the functions of a module (helpers, fixtures) that return or yield a raw client."""
    scanner = _Scanner(tree, known)
    for _ in _walk("", tree, scanner):
        pass
    return scanner.factories


def _walk(path: str, tree: ast.Module, scanner: _Scanner) -> Iterator[Finding]:
    owners = _owners(tree)
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
            if isinstance(
                n, ast.Assign | ast.AnnAssign | ast.Call | ast.withitem | ast.Return | ast.Yield
            )
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
        elif isinstance(node, ast.Return | ast.Yield):
            handle = scanner.handle(node.value) if node.value is not None else None
            if handle is not None and handle.raw and id(node) in owners:
                scanner.factories.add(owners[id(node)])
        elif isinstance(node, ast.Call) and not scanner.refused(node.lineno):
            yield from _hidden_write(path, node, scanner)
            if not isinstance(node.func, ast.Attribute):
                continue
            method = node.func.attr
            if not is_write_method(method) or method == "_make_api_call":
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


def _hidden_write(path: str, call: ast.Call, scanner: _Scanner) -> Iterator[Finding]:
    """Writes a method-name scan misses: collection deletes, getattr, _make_api_call."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "delete":
        base = _collection_base(func.value)
        handle = scanner.handle(base) if base is not None else None
        if base is not None and not (handle is not None and handle.loopback):
            yield Finding(
                path=path,
                line=call.lineno,
                message=f"{ast.unparse(func.value)}.delete() deletes a whole resource collection "
                "around the prefix firewall; delete through ci_store (delete_many) instead",
            )
        return
    if isinstance(func, ast.Attribute) and func.attr == "_make_api_call":
        operation = call.args[0] if call.args else None
        name = operation.value if isinstance(operation, ast.Constant) else None
        handle = scanner.handle(func.value)
        reads = isinstance(name, str) and name.startswith(READ_OPERATIONS)
        if not reads and not (handle is not None and handle.loopback):
            yield Finding(
                path=path,
                line=call.lineno,
                message=f"_make_api_call({name or '…'!r}) sends an S3 operation by name, around "
                "the checks of this lint; write through the ci_store fixture",
            )
        return
    if isinstance(func, ast.Name) and func.id == "getattr" and len(call.args) >= 2:
        attribute = call.args[1]
        name = attribute.value if isinstance(attribute, ast.Constant) else None
        handle = scanner.handle(call.args[0])
        if (
            isinstance(name, str)
            and is_write_method(name)
            and not (handle is not None and handle.loopback)
        ):
            yield Finding(
                path=path,
                line=call.lineno,
                message=f"getattr(..., {name!r}) hides an S3 write from this lint; "
                "write through the ci_store fixture",
            )


def check(subject: Subject) -> Iterator[Finding]:
    """Report S3 writes in tests that bypass the CI-prefix fixture or target the production root."""
    trees = [(path, parse(text)) for path, text in subject.matching(*PATTERNS)]
    parsed = [(path, tree) for path, tree in trees if tree is not None]
    factories: set[str] = set()
    for _ in range(2):  # a helper may wrap a helper defined in another file
        for _path, tree in parsed:
            factories |= factories_of(tree, frozenset(factories))
    for path, tree in parsed:
        yield from _scan(path, tree, frozenset(factories))


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
    example(
        {
            "tests/test_reads.py": (
                "def test_reads(ci_store, admin_store, ci_prefix):\n"
                "    ci_store.delete_many([f'{ci_prefix}x'])\n"
                "    getattr(ci_store, 'get')(f'{ci_prefix}x')\n"
                "    admin_store.client._make_api_call('PutObject', {'Key': 'snappy-os/x'})\n"
                "    admin_store.client._make_api_call('ListObjectsV2', {'Bucket': 'b'})\n"
            )
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
        },
        at=[("tests/test_raw.py", 4)],
    ),
    example(
        {
            "tests/test_root.py": (
                "ROOT = 'snappy-os/'\n"
                "def test_seed(ci_store):\n"
                "    ci_store.put(f'{ROOT}catalog.json', b'{}')\n"
            )
        },
        at=[("tests/test_root.py", 3)],
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
        },
        at=[("tests/test_resource.py", 5)],
    ),
    example(
        {
            "tests/test_upload.py": (
                "import boto3\n"
                "def test_up(settings, tmp_path):\n"
                "    client = boto3.session.Session().client('s3')\n"
                "    client.upload_file(str(tmp_path / 'f'), 'bucket', settings.live_root + 'f')\n"
            )
        },
        at=[("tests/test_upload.py", 4)],
    ),
    example(
        {
            "tests/test_collection.py": (
                "import boto3\n"
                "def test_wipe():\n"
                "    bucket = boto3.resource('s3').Bucket('b')\n"
                "    bucket.objects.all().delete()\n"
                "    bucket.objects.filter(Prefix='snappy-os/').delete()\n"
                "    bucket.object_versions.delete()\n"
            )
        },
        at=[
            ("tests/test_collection.py", 4),
            ("tests/test_collection.py", 5),
            ("tests/test_collection.py", 6),
        ],
    ),
    example(
        {
            "tests/test_bucket.py": (
                "import boto3\n"
                "def test_drop():\n"
                "    s3 = boto3.client('s3')\n"
                "    s3.delete_bucket_policy(Bucket='b')\n"
                "    s3.delete_bucket(Bucket='b')\n"
            )
        },
        at=[("tests/test_bucket.py", 4), ("tests/test_bucket.py", 5)],
    ),
    example(
        {
            "tests/test_dynamic.py": (
                "def test_dynamic(store_client, ci_prefix):\n"
                "    getattr(store_client, 'put_object')(Bucket='b', Key=f'{ci_prefix}x')\n"
                "    store_client._make_api_call('PutObject', {'Bucket': 'b', 'Key': 'k'})\n"
            )
        },
        at=[("tests/test_dynamic.py", 2), ("tests/test_dynamic.py", 3)],
    ),
    example(
        {
            "tests/conftest.py": (
                "import boto3\n"
                "import pytest\n"
                "@pytest.fixture\n"
                "def raw_s3():\n"
                "    yield boto3.client('s3')\n"
                "def make_client():\n"
                "    client = boto3.client('s3')\n"
                "    return client\n"
            ),
            "tests/test_helper.py": (
                "from tests.conftest import make_client\n"
                "def test_helper(ci_prefix):\n"
                "    c = make_client()\n"
                "    c.put_object(Bucket='b', Key=f'{ci_prefix}x', Body=b'')\n"
                "def test_fixture(raw_s3, ci_prefix):\n"
                "    raw_s3.upload_file('f', 'b', f'{ci_prefix}f')\n"
            ),
        },
        at=[("tests/test_helper.py", 4), ("tests/test_helper.py", 6)],
    ),
)
