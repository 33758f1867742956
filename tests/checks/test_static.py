"""`python -m checks.static`: drift in a copy fails, the tree as it is passes; pure evaluators."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from checks.static import (
    SCHEMA,
    evaluate_lock,
    evaluate_python_drift,
    evaluate_workflow_schema,
    load_workflow,
    python_versions,
)
from tests.checks.conftest import REPO

WORKFLOW = ".github/workflows/sync-ci.yml"
DRIFT = "python-drift,lock-drift,workflow-schema,zizmor"


def static(root: Path, select: str = DRIFT) -> tuple[int, dict[str, str]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "checks.static",
            "--root",
            str(root),
            "--select",
            select,
            "--json",
            str(root / "check.json"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    document = json.loads((root / "check.json").read_text(encoding="utf-8"))
    return done.returncode, {r["id"]: r["status"] for r in document["results"]}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_the_tree_as_it_is_has_no_drift(repo_copy: Path) -> None:
    code, rows = static(repo_copy)
    assert rows == dict.fromkeys(DRIFT.split(","), "pass")
    assert code == 0


@pytest.mark.parametrize(
    ("file", "old", "new", "failing"),
    [
        pytest.param(".python-version", "3.11", "3.12", "python-drift", id="dot-python-version"),
        pytest.param(
            "noxfile.py", 'PYTHON = "3.11"', 'PYTHON = "3.12"', "python-drift", id="noxfile"
        ),
        pytest.param(
            WORKFLOW,
            'python-version: "3.11"',
            'python-version: "3.13"',
            "python-drift",
            id="workflow-python",
        ),
        pytest.param(
            "pyproject.toml",
            'requires-python = ">=3.11"',
            'requires-python = ">=3.10"',
            "python-drift",
            id="requires-python",
        ),
        pytest.param(
            "pyproject.toml", '"pytest==9.0.3",', '"pytest==9.0.2",', "lock-drift", id="pin-changed"
        ),
        pytest.param(
            "pyproject.toml",
            '"tabulate>=0.9,<1",',
            '"tabulate>=0.9,<1", "left-pad-never-locked>=1",',
            "lock-drift",
            id="dependency-added",
        ),
        pytest.param(
            "requirements/lock.txt", "\nboto3==", "\nboto3-old==", "lock-drift", id="lock-edited"
        ),
        pytest.param(WORKFLOW, "    timeout-minutes: 10\n", "", "workflow-schema", id="no-timeout"),
        pytest.param(
            WORKFLOW,
            "run: python -m pip install -c requirements/lock.txt .",
            'run: echo "${{ github.event.pull_request.title }}"',
            "zizmor",
            id="zizmor-template-injection",
        ),
    ],
)
def test_each_kind_of_drift_fails(
    repo_copy: Path, file: str, old: str, new: str, failing: str
) -> None:
    edit(repo_copy / file, old, new)
    code, rows = static(repo_copy)
    assert code == 1
    assert {k for k, v in rows.items() if v != "pass"} == {failing}


def test_missing_lock_fails(repo_copy: Path) -> None:
    (repo_copy / "requirements/lock.txt").unlink()
    code, rows = static(repo_copy, "lock-drift")
    assert (code, rows) == (1, {"lock-drift": "fail"})


def test_python_versions_names_every_source() -> None:
    versions = python_versions(REPO)
    assert {"pyproject requires-python", "noxfile.py PYTHON", ".python-version"} <= versions.keys()
    assert any(k.startswith(WORKFLOW) for k in versions)
    assert set(versions.values()) == {"3.11"}


def test_evaluate_python_drift_lists_the_disagreement() -> None:
    row = evaluate_python_drift({"noxfile.py PYTHON": "3.11", ".python-version": "3.12"})
    assert row.status == "fail"
    assert ".python-version: 3.12" in row.detail
    assert evaluate_python_drift({"a": "3.11", "b": "3.11"}).status == "pass"
    assert evaluate_python_drift({}).status == "fail"


LOCK = """# header
boto3==1.40.1
    # via sync-ci (pyproject.toml:runtime)
botocore==1.40.1
    # via boto3
left-pad==1.0
    # via
    #   sync-ci (pyproject.toml:lint)
"""


def test_evaluate_lock() -> None:
    pyproject = {"dependency-groups": {"runtime": ["boto3>=1.36,<2"], "lint": ["left-pad==1.0"]}}
    assert evaluate_lock(pyproject, LOCK).status == "pass"
    assert "boto3" in evaluate_lock({"project": {"dependencies": ["boto3>=2"]}}, LOCK).detail
    stale = evaluate_lock({"dependency-groups": {"runtime": ["boto3"]}}, LOCK)
    assert stale.status == "fail"
    assert "left-pad==1.0" in stale.detail
    assert evaluate_lock(pyproject, None).status == "fail"


def test_schema_rejects_an_unpinned_step() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    doc = load_workflow((REPO / WORKFLOW).read_text(encoding="utf-8"))
    assert evaluate_workflow_schema({"w.yml": doc}, schema).status == "pass"
    doc["jobs"]["check"]["steps"][0]["uses"] = "actions/checkout@v4"
    row = evaluate_workflow_schema({"w.yml": doc}, schema)
    assert row.status == "fail"
    assert "jobs/check/steps/0" in row.detail
