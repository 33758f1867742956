"""A launch-gate threshold or scenario size is looser than the canonical table.

**Why:** gates are gates: the seed says failing thresholds block the launch and are never softened
to ship. The easiest way to soften one is in the same pull request that would otherwise fail it,
by editing `sync_ci/gates/thresholds.py` (p95 install 2 s, p95 push 5 s, zero 5xx, latency p95
500 ms / p99 1,500 ms over 5 regions, 3 platforms) or shrinking the scenario (1,000 installs + 100
pushes of 10 KB). This rule holds its own copy of that table, so loosening the code alone fails the
lint: a limit may be tightened (lower maximum, higher minimum, `at_most` to `below`), never
loosened, and deleting a threshold counts as loosening it. The code is read with `ast`, never
imported.

**Fix:** restore the value. If the product really changed, change this rule's table in a
separately reviewed pull request that says why, then the code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from checks.catalogue import Finding, Subject, example
from checks.pysource import dotted, keyword, nodes, number, parse

ID = "SA004"
TITLE = "gate threshold looser than the canonical table"
SCOPE = ("repo",)

THRESHOLDS = "sync_ci/gates/thresholds.py"
SCENARIO = "sync_ci/gates/scenario.py"
PLATFORMS = "sync_ci/gates/platforms.py"
KINDS = ("below", "at_most", "at_least")


@dataclass(frozen=True, slots=True)
class Limit:
    """A canonical limit: `below`/`at_most` cap a value, `at_least` floors it."""

    kind: str
    limit: float


# The "never soften" lock. Changing a number here needs its own reviewed pull request.
CANONICAL: Mapping[str, Limit] = {
    "load.install.p95_ms": Limit("below", 2000),
    "load.push.p95_ms": Limit("below", 5000),
    "load.5xx": Limit("at_most", 0),
    "latency.region.p95_ms": Limit("below", 500),
    "latency.region.p99_ms": Limit("below", 1500),
    "latency.regions": Limit("at_least", 5),
}
MIN_COUNTS: Mapping[str, float] = {"installs": 1000, "pushes": 100}
SCENARIO_FLOORS: Mapping[str, float] = {"installs": 1000, "pushes": 100, "body_bytes": 10 * 1024}
MIN_PLATFORMS = 3
PLATFORM_NAMES = frozenset({"PLATFORMS", "REQUIRED_PLATFORMS", "MIN_PLATFORMS"})


def looser(code: Limit, canon: Limit) -> bool:
    """True when `code` lets through something `canon` would block."""
    if code.kind not in KINDS or code.limit != code.limit:  # unknown kind, or not a number
        return True
    if canon.kind == "at_least":
        return code.kind != "at_least" or code.limit < canon.limit
    if code.kind == "at_least":
        return True
    if code.limit != canon.limit:
        return code.limit > canon.limit
    return canon.kind == "below" and code.kind == "at_most"


def _thresholds(tree: ast.AST) -> dict[str, tuple[Limit, int]]:
    found: dict[str, tuple[Limit, int]] = {}
    for node in nodes(tree):
        if isinstance(node, ast.Call) and dotted(node.func).endswith("Threshold"):
            ident, kind = keyword(node, "id"), keyword(node, "kind")
            limit = number(keyword(node, "limit"))
            if isinstance(ident, ast.Constant) and isinstance(ident.value, str):
                kind_text = kind.value if isinstance(kind, ast.Constant) else "?"
                found[ident.value] = (
                    Limit(str(kind_text), limit if limit is not None else float("nan")),
                    node.lineno,
                )
    return found


def _assigned(tree: ast.AST, name: str) -> tuple[ast.expr, int] | None:
    for node in nodes(tree):
        if isinstance(node, ast.Assign) and any(dotted(t) == name for t in node.targets):
            return node.value, node.lineno
        if (
            isinstance(node, ast.AnnAssign)
            and node.value is not None
            and dotted(node.target) == name
        ):
            return node.value, node.lineno
    return None


def _dict_numbers(node: ast.expr) -> dict[str, float]:
    if isinstance(node, ast.Call) and node.args:  # MappingProxyType({...}) and friends
        node = node.args[0]
    values: dict[str, float] = {}
    if isinstance(node, ast.Dict):
        for key, value in zip(node.keys, node.values, strict=True):
            amount = number(value)
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and amount is not None:
                values[key.value] = amount
    return values


def _check_thresholds(path: str, tree: ast.Module) -> Iterator[Finding]:
    found = _thresholds(tree)
    for ident, canon in CANONICAL.items():
        if ident not in found:
            yield Finding(
                path=path,
                line=1,
                message=f"threshold {ident} is missing (canonical "
                f"{canon.kind} {canon.limit:g}); removing a threshold loosens it",
            )
            continue
        code, line = found[ident]
        if looser(code, canon):
            yield Finding(
                path=path,
                line=line,
                message=f"threshold {ident} is {code.kind} "
                f"{code.limit:g}, looser than the canonical {canon.kind} {canon.limit:g}",
            )
    assigned = _assigned(tree, "MIN_COUNTS")
    counts = _dict_numbers(assigned[0]) if assigned else {}
    for name, floor in MIN_COUNTS.items():
        if counts.get(name, -1.0) < floor:
            yield Finding(
                path=path,
                line=assigned[1] if assigned else 1,
                message=f"MIN_COUNTS[{name!r}] is {counts.get(name, 'missing')}, "
                f"below the canonical {floor:g}",
            )


def _check_scenario(path: str, tree: ast.Module) -> Iterator[Finding]:
    for node in nodes(tree):
        if isinstance(node, ast.ClassDef) and node.name == "LoadScenario":
            defaults = {
                dotted(s.target): (number(s.value), s.lineno)
                for s in node.body
                if isinstance(s, ast.AnnAssign) and s.value is not None
            }
            for name, floor in SCENARIO_FLOORS.items():
                value, line = defaults.get(name, (None, node.lineno))
                if value is None or value < floor:
                    yield Finding(
                        path=path,
                        line=line,
                        message=f"LoadScenario.{name} default is "
                        f"{'missing' if value is None else f'{value:g}'}, "
                        f"below the canonical {floor:g}",
                    )


def _check_platforms(path: str, tree: ast.Module) -> Iterator[Finding]:
    for name in PLATFORM_NAMES:
        assigned = _assigned(tree, name)
        if assigned is None:
            continue
        value, line = assigned
        count = (
            len(value.elts) if isinstance(value, ast.Tuple | ast.List | ast.Set) else number(value)
        )
        if count is not None and count < MIN_PLATFORMS:
            yield Finding(
                path=path,
                line=line,
                message=f"{name} names {count:g} platforms, below the canonical {MIN_PLATFORMS}",
            )


def check(subject: Subject) -> Iterator[Finding]:
    """Compare the gate code's thresholds and sizes with this rule's canonical table."""
    for path, checker in (
        (THRESHOLDS, _check_thresholds),
        (SCENARIO, _check_scenario),
        (PLATFORMS, _check_platforms),
    ):
        text = subject.files.get(path)
        tree = parse(text) if text is not None else None
        if tree is not None:
            yield from checker(path, tree)
    if THRESHOLDS not in subject.files and (
        SCENARIO in subject.files or PLATFORMS in subject.files
    ):
        yield Finding(path=THRESHOLDS, message="the gates exist but their threshold table is gone")


_GOOD_TABLE = (
    "CANONICAL = (\n"
    "    Threshold(id='load.install.p95_ms', kind='below', limit=2000, unit='ms'),\n"
    "    Threshold(id='load.push.p95_ms', kind='below', limit=4000, unit='ms'),\n"
    "    Threshold(id='load.5xx', kind='at_most', limit=0, unit=''),\n"
    "    Threshold(id='latency.region.p95_ms', kind='below', limit=500, unit='ms'),\n"
    "    Threshold(id='latency.region.p99_ms', kind='below', limit=1500, unit='ms'),\n"
    "    Threshold(id='latency.regions', kind='at_least', limit=6, unit=''),\n"
    ")\n"
    "MIN_COUNTS = {'installs': 1000, 'pushes': 100}\n"
)
GOOD = (
    example(
        {
            THRESHOLDS: _GOOD_TABLE,
            SCENARIO: "class LoadScenario:\n    installs: int = 2000\n    pushes: int = 100\n"
            "    body_bytes: int = 10 * 1024\n",
            PLATFORMS: "PLATFORMS = ('ubuntu', 'macos', 'wsl2')\n",
        }
    ),
    example({"sync_ci/other.py": "LIMIT = 1\n"}),
)
BAD = (
    example(
        {THRESHOLDS: _GOOD_TABLE.replace("limit=2000", "limit=2500")},
        at=[("sync_ci/gates/thresholds.py", 2)],
    ),
    example(
        {THRESHOLDS: _GOOD_TABLE.replace("kind='below', limit=500,", "kind='at_most', limit=500,")},
        at=[("sync_ci/gates/thresholds.py", 5)],
    ),
    example(
        {
            THRESHOLDS: _GOOD_TABLE.replace(
                "'load.5xx', kind='at_most', limit=0", "'load.5xx', kind='at_most', limit=3"
            )
        },
        at=[("sync_ci/gates/thresholds.py", 4)],
    ),
    example(
        {THRESHOLDS: _GOOD_TABLE.replace("limit=6", "limit=4")},
        at=[("sync_ci/gates/thresholds.py", 7)],
    ),
    example(
        {THRESHOLDS: _GOOD_TABLE.replace("'pushes': 100", "'pushes': 10")},
        at=[("sync_ci/gates/thresholds.py", 9)],
    ),
    example(
        {THRESHOLDS: "\n".join(line for line in _GOOD_TABLE.splitlines() if "p99" not in line)},
        at=[("sync_ci/gates/thresholds.py", 1)],
    ),
    example(
        {
            SCENARIO: "class LoadScenario:\n    installs: int = 1000\n    pushes: int = 100\n"
            "    body_bytes: int = 1024\n",
            THRESHOLDS: _GOOD_TABLE,
        },
        at=[("sync_ci/gates/scenario.py", 4)],
    ),
    example(
        {PLATFORMS: "PLATFORMS = ('ubuntu', 'macos')\n"},
        at=[("sync_ci/gates/platforms.py", 1), ("sync_ci/gates/thresholds.py", 0)],
    ),
)
