"""Small AST readers the rules share: dotted names, import aliases, constant strings and numbers."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator, Mapping

UNKNOWN = "\x00"


@functools.lru_cache(maxsize=512)
def parse(text: str) -> ast.Module | None:
    """Parse Python source (cached: rules share trees and never change them), or None if invalid."""
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError):
        return None


@functools.lru_cache(maxsize=512)
def nodes(tree: ast.AST) -> tuple[ast.AST, ...]:
    """Return every node under `tree` (cached: `ast.walk` dominates the lint's run time)."""
    return tuple(ast.walk(tree))


def dotted(node: ast.expr) -> str:
    """Return 'a.b.c' for a Name/Attribute chain, '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


@functools.lru_cache(maxsize=512)
def _import_aliases(tree: ast.AST) -> tuple[tuple[str, str], ...]:
    return tuple(_find_aliases(tree).items())


def import_aliases(tree: ast.AST) -> dict[str, str]:
    """Map each local name bound by an import anywhere in the module to its full dotted origin."""
    return dict(_import_aliases(tree))


def _find_aliases(tree: ast.AST) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for node in nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    aliases[head] = head
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def qualified(node: ast.expr, aliases: Mapping[str, str]) -> str:
    """Return the dotted name of `node` with its first part replaced by its import origin."""
    name = dotted(node)
    if not name:
        return ""
    head, _, rest = name.partition(".")
    origin = aliases.get(head, head)
    return f"{origin}.{rest}" if rest else origin


def has_keyword(call: ast.Call, *names: str) -> bool:
    """True when the call passes one of `names` by keyword, or uses `**kwargs` (might pass it)."""
    return any(k.arg is None or k.arg in names for k in call.keywords)


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    """Return the expression passed as keyword `name`, if any."""
    return next((k.value for k in call.keywords if k.arg == name), None)


def constant_strings(tree: ast.AST) -> dict[str, str]:
    """Map NAME -> value for every `NAME = "literal"` (or annotated) assignment in the tree."""
    found: dict[str, str] = {}
    for node in nodes(tree):
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = value.value
    return found


def resolve_str(node: ast.expr | None, names: Mapping[str, str]) -> str:
    """Best-effort static value of a string expression; unknown parts become UNKNOWN."""
    if node is None:
        return UNKNOWN
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id, UNKNOWN)
    if isinstance(node, ast.Attribute):
        return names.get(node.attr, names.get(dotted(node), UNKNOWN))
    if isinstance(node, ast.JoinedStr):
        return "".join(resolve_str(v, names) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return resolve_str(node.value, names)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return resolve_str(node.left, names) + resolve_str(node.right, names)
    return UNKNOWN


def string_literals(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Yield (line, text) for every string constant and f-string (placeholders as '{}')."""
    inside_fstrings = set()
    for node in nodes(tree):
        if isinstance(node, ast.JoinedStr):
            for value in node.values:
                inside_fstrings.add(id(value))
            text = "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                for v in node.values
            )
            yield node.lineno, text
    for node in nodes(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in inside_fstrings
        ):
            yield node.lineno, node.value


def number(node: ast.expr | None) -> float | None:
    """Return the numeric value of a literal (allowing unary minus and simple arithmetic)."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            return None
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = number(node.operand)
        return -inner if inner is not None else None
    if isinstance(node, ast.BinOp):
        left, right = number(node.left), number(node.right)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div) and right:
            return left / right
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
    return None
