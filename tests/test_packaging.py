"""Packaging: every third-party import is declared, and a missing extra is named in one line.

The scan reads `sync_ci/` and `checks/` with `ast`; pyproject.toml's `[project]` dependencies and
extras are what `pip install 'sync-ci[...]'` installs; `sync_ci.extras.require_extra` is what each
optional import point calls first.
"""

from __future__ import annotations

import ast
import importlib.metadata
import itertools
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from sync_ci import extras
from sync_ci.errors import ExitCode, MissingExtra

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sync_ci", "checks")
# The `nox -s check` tool, run with the `lint` dependency group and never by the `sync-ci` CLI.
DEV_ONLY = {"checks/static.py"}
OWN = {"sync_ci", "checks"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements() -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    base = [Requirement(r) for r in project["dependencies"]]
    optional = {
        extra: [Requirement(r) for r in reqs]
        for extra, reqs in project["optional-dependencies"].items()
    }
    return base, optional


def _extra_closure(extra: str, optional: dict[str, list[Requirement]]) -> set[str]:
    """The distributions `sync-ci[extra]` installs beyond the base (self-references followed)."""
    names: set[str] = set()
    for requirement in optional[extra]:
        if _normalize(requirement.name) == "sync-ci":
            for inner in requirement.extras:
                names |= _extra_closure(inner, optional)
        else:
            names.add(_normalize(requirement.name))
    return names


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines under `if TYPE_CHECKING:`: stubs for mypy, never imported at run time."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative not in DEV_ONLY:
                yield relative, ast.parse(path.read_text(encoding="utf-8"))


def _run_as_module(node: ast.List | ast.Tuple) -> list[str]:
    words = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
    return [
        str(name)
        for flag, name in itertools.pairwise(words)
        if flag == "-m" and isinstance(name, str)
    ]


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the files importing it (or running it with -m) at run time."""
    found: dict[str, set[str]] = {}
    for relative, tree in _sources():
        skip = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.List | ast.Tuple):
                names = _run_as_module(node)  # a child process imports it: [python, "-m", name]
            else:
                continue
            if node.lineno in skip:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN | {"__future__"}:
                    found.setdefault(top, set()).add(relative)
    return found


def require_extra_calls() -> dict[str, set[str]]:
    """Module -> the extras named by every `require_extra(module, extra, ...)` call."""
    calls: dict[str, set[str]] = {}
    for _, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "require_extra"
            ):
                module, extra = (
                    arg.value for arg in node.args[:2] if isinstance(arg, ast.Constant)
                )
                calls.setdefault(str(module), set()).add(str(extra))
    return calls


def _distribution(module: str) -> str:
    found = importlib.metadata.packages_distributions().get(module)
    assert found, f"{module} is imported but no installed distribution provides it"
    return _normalize(found[0])


def test_the_scan_sees_the_optional_imports() -> None:
    """The scan is not vacuous: it finds what the gates, the sandbox and the lint rules import."""
    imports = third_party_imports()
    assert {"aiohttp", "moto", "hdrh", "locust", "yaml", "boto3", "requests"} <= set(imports)
    assert "mypy_boto3_s3" not in imports  # typing-only, under TYPE_CHECKING
    assert "packaging" not in imports and "jsonschema" not in imports  # checks/static.py only


def test_every_third_party_import_is_declared() -> None:
    """Each module sync_ci/ and checks/ import comes from a base dependency or an extra."""
    base, optional = _requirements()
    declared = {_normalize(r.name) for r in base}
    for extra in optional:
        declared |= _extra_closure(extra, optional)
    missing = {
        module: sorted(files)
        for module, files in third_party_imports().items()
        if _distribution(module) not in declared
    }
    assert not missing, f"imported but declared nowhere in pyproject.toml: {missing}"


def test_lint_needs_only_the_base_install() -> None:
    """`pip install sync-ci` then `sync-ci lint`: the rules' YAML parser is a base dependency."""
    base, _ = _requirements()
    names = {_normalize(r.name) for r in base}
    assert {"pyyaml", "python-crontab", "tabulate", "boto3", "requests"} <= names


def test_each_optional_import_is_guarded_by_the_extra_declaring_it() -> None:
    """A module outside the base is checked by `require_extra` naming the extra that installs it."""
    base, optional = _requirements()
    in_base = {_normalize(r.name) for r in base}
    calls = require_extra_calls()
    unguarded = sorted(
        module
        for module in third_party_imports()
        if _distribution(module) not in in_base and module not in calls
    )
    assert not unguarded, f"optional imports without a require_extra(...) before them: {unguarded}"
    for module, named in calls.items():
        for extra in named:
            assert extra in optional, f"require_extra({module!r}, {extra!r}): no such extra"
            assert _distribution(module) in _extra_closure(extra, optional), (
                f"require_extra({module!r}, {extra!r}): sync-ci[{extra}] does not install "
                f"{_distribution(module)}"
            )
        assert module in extras.REQUIREMENTS, f"{module}: add the requirement it names"
        assert _normalize(Requirement(extras.REQUIREMENTS[module]).name) == _distribution(module)


def test_all_installs_every_extra() -> None:
    """`sync-ci[all]` is the union of the others."""
    _, optional = _requirements()
    every = set().union(*(_extra_closure(e, optional) for e in optional if e != "all"))
    assert _extra_closure("all", optional) == every


def test_declared_versions_agree_with_the_lock() -> None:
    """Every base and extra requirement accepts the version requirements/lock.txt pins."""
    lock = (REPO / "requirements" / "lock.txt").read_text(encoding="utf-8")
    pins = {
        _normalize(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock, re.MULTILINE)
    }
    base, optional = _requirements()
    problems = []
    for requirement in [*base, *(r for reqs in optional.values() for r in reqs)]:
        name = _normalize(requirement.name)
        if name == "sync-ci":
            continue
        if name not in pins:
            problems.append(f"{requirement}: not in the lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement}: the lock has {pins[name]}")
    assert not problems


def test_a_missing_module_is_one_usage_error_naming_the_extra() -> None:
    """The helper itself: a module that is not installed is a MissingExtra, exit 2."""
    extras.require_extra("json", "sandbox", needed_by="x")  # installed: nothing happens
    with pytest.raises(MissingExtra) as caught:
        extras.require_extra("no_such_module_here", "gates", needed_by="the gates")
    assert str(caught.value) == (
        "the gates needs no_such_module_here (pip install 'sync-ci[gates]')"
    )
    assert caught.value.exit_code == ExitCode.USAGE


def _hidden(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment whose Python finds none of `modules`, as if they were not installed."""
    site = tmp_path / "site"
    site.mkdir()
    # None in sys.modules: `import` raises ModuleNotFoundError and find_spec answers None.
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor _name in {modules!r}:\n    sys.modules[_name] = None\n",
        encoding="utf-8",
    )
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_CI_", "GITHUB_"))}
    (tmp_path / "home").mkdir()
    return {
        **keep,
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
        "XDG_STATE_HOME": str(tmp_path / "home" / ".state"),
    }


@pytest.mark.parametrize(
    ("hidden", "argv", "line"),
    [
        pytest.param(
            "moto",
            ["sandbox"],
            "the sandbox needs moto[server] (pip install 'sync-ci[sandbox]')",
            id="sandbox-without-moto",
        ),
        pytest.param(
            "aiohttp",
            ["smoke"],
            "the sandbox needs aiohttp (pip install 'sync-ci[sandbox]')",
            id="smoke-without-aiohttp",
        ),
        pytest.param(
            "locust",
            ["gate", "load", "--engine", "locust"],
            "--engine locust needs locust (pip install 'sync-ci[locust]')",
            id="locust-engine-without-locust",
        ),
    ],
)
def test_a_command_without_its_extra_says_which_to_install(
    hidden: str, argv: list[str], line: str, tmp_path: Path
) -> None:
    """One `sync-ci: error:` line naming the extra, exit 2, no traceback, no child left."""
    env = _hidden(tmp_path, hidden)
    probe = subprocess.run(
        [sys.executable, "-c", f"import {hidden}"], env=env, capture_output=True, timeout=120
    )
    assert probe.returncode != 0, "the module is not hidden: the test would prove nothing"
    done = subprocess.run(
        [sys.executable, "-m", "sync_ci", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert done.stderr == f"sync-ci: error: {line}\n"
    assert done.stdout == ""
    assert not list((tmp_path / "home").rglob("sandbox.json"))
