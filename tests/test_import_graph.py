"""No import circle in sync_ci/ and checks/, counting function-level and importlib imports."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sync_ci", "checks")

# Imports that close a circle and are being taken apart. The test drops these edges and fails on
# any circle left, so a new circle fails at once; remove an entry when its import goes. (Gone so
# far: the option helpers' edges up to `sync_ci.cli`, `store_server` <-> `seaweed`, the gates'
# cli <-> locust engine <-> locust worker, and conformance <-> smoke.)
KNOWN: frozenset[tuple[str, str]] = frozenset()


def module_name(path: Path) -> str:
    """Return the dotted module name of a source file below ROOT."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Return every module of PACKAGES by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _resolve(current: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, name] if name else base)


def imported_names(path: Path, current: str) -> Iterator[str]:
    """Yield every module name that the file imports anywhere, importlib strings included.

    A call of `import_module(name)` with a computed name (`COMMANDS[command]`) may import any
    module named by a string in that file, so each such string counts as an import too.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    dynamic = False
    strings: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(current, is_package, node.level, node.module)
            yield target
            for alias in node.names:
                yield f"{target}.{alias.name}"
        elif isinstance(node, ast.Call):
            func = node.func
            called = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if called in {"import_module", "__import__"} and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    yield first.value
                else:
                    dynamic = True
    if dynamic:
        yield from strings


def import_graph() -> dict[str, set[str]]:
    """Return module -> the project modules it imports (a name that is a module, not an attribute)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges = {target for target in imported_names(path, name) if target in known}
        edges.discard(name)
        # Importing a.b.c runs a/__init__ and a/b/__init__ too, but a package's __init__ is
        # not where the code under test lives; count only the module named.
        graph[name] = edges
    return graph


def circles(graph: Mapping[str, set[str]]) -> list[tuple[str, ...]]:
    """Return each strongly connected component of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_finds_a_circle_through_a_function_level_import_and_importlib(tmp_path: Path) -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert circles(graph) == [("p.a", "p.b", "p.c")]
    source = tmp_path / "mod.py"
    source.write_text(
        "import importlib\n"
        "def f():\n"
        "    from sync_ci.gates import load\n"
        "    importlib.import_module('sync_ci.report')\n",
        encoding="utf-8",
    )
    names = set(imported_names(source, "sync_ci.mod"))
    assert {"sync_ci.gates", "sync_ci.gates.load", "sync_ci.report"} <= names
    assert "sync_ci.doctor" not in names
    source.write_text(
        "import importlib\n"
        "TABLE = {'doctor': 'sync_ci.doctor'}\n"
        "def g(name):\n"
        "    return importlib.import_module(TABLE[name])\n",
        encoding="utf-8",
    )
    assert "sync_ci.doctor" in set(imported_names(source, "sync_ci.mod"))


def test_no_import_circle_in_sync_ci_and_checks() -> None:
    graph = import_graph()
    for source, target in KNOWN:
        graph.get(source, set()).discard(target)
    assert not circles(graph), f"import circles: {circles(graph)}"
