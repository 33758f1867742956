"""The public names of the invoke tasks and nox sessions are an interface: pin them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TASKS = {
    "ci-loop",
    "smoke",
    "cleanup",
    "cleanup-lifecycle",
    "install-cron",
    "uninstall-cron",
    "cron-show",
    "doctor",
    "status",
    "verify",
    "alert",
    "config",
    "lint",
    "sandbox",
    "sandbox-fault",
    "record-cast",
    "conformance",
    "gates.load",
    "gates.latency",
    "gates.platforms",
    "gates.all",
}
SESSIONS = {
    "check",
    "lint_sync",
    "smoke_sync",
    "tests",
    "conformance",
    "tests_strict",
    "bench",
    "gates",
}
DEFAULT_SESSIONS = {"check", "lint_sync", "smoke_sync", "tests"}


def test_invoke_task_names() -> None:
    spec = importlib.util.spec_from_file_location("sync_ci_tasks", ROOT / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = set(module.ns.task_names)
    assert names == TASKS
    for name in TASKS:
        task = module.ns[name]
        assert task.__doc__, f"task {name} has no docstring"
        params = [p for p in task.get_arguments() if p.name != "c"]
        assert all(p.help for p in params), f"task {name} lacks help for a parameter"


def test_nox_session_names() -> None:
    def nox(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "nox", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=True,
        ).stdout

    selected = json.loads(nox("-l", "--json"))
    assert {s["session"] for s in selected} == DEFAULT_SESSIONS
    assert all(s["description"] for s in selected)
    listed = {
        line[2:].split(" ", 1)[0]
        for line in nox("-l").splitlines()
        if line.startswith(("* ", "- "))
    }
    assert listed == SESSIONS
    noxfile = (ROOT / "noxfile.py").read_text()
    assert "import sync_ci" not in noxfile and "from sync_ci" not in noxfile


def test_every_session_forwards_and_documents_its_arguments() -> None:
    """`nox -s NAME -- ARGS` reaches the command, and the session's docstring says what ARGS are."""
    import ast

    tree = ast.parse((ROOT / "noxfile.py").read_text())
    sessions = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(d) for d in node.decorator_list)
    ]
    assert {s.name for s in sessions} == SESSIONS
    for node in sessions:
        doc = ast.get_docstring(node) or ""
        assert "Arguments after `--`" in doc, node.name
        assert "session.posargs" in ast.unparse(node), node.name
