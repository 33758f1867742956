"""`nox -s check`: ruff, mypy, zizmor, the workflow schema and runtime drift, one result row each.

Runtime drift has two rows. `python-drift`: the Python version in `pyproject.toml` (the lower bound
of requires-python, mypy's python_version, ruff's target-version), the noxfile (`PYTHON` and
`python=`), every `python-version:` in the workflows, `.python-version` and the lock's
`--python-version` agree on major.minor. `lock-drift`: `requirements/lock.txt` is the lock, made
by the `uv pip compile` command in its header (all PEP 735 groups, Python 3.11, linux x86_64);
every requirement in `[project] dependencies` and `[dependency-groups]` must be in it with a
version its specifier accepts (so a `==` pin must match exactly), and no entry may still say it
is there "via sync-ci (pyproject.toml...)" once pyproject no longer asks for it. Regenerate the
lock with the header's command after changing pyproject.

Just over 400 lines: each tool's row (its command line, its output read back into findings) is
short, and keeping them together keeps `nox -s check` one module a reader can follow.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sync_ci.errors import ExitCode
from sync_ci.report import Result, make_report
from sync_ci.report_emit import emit

SCHEMA = Path(__file__).with_name("schemas") / "sync-ci-workflow.schema.json"
WORKFLOW_GLOBS = ("*.yml", "*.yaml")
LOCK = Path("requirements/lock.txt")
TOOL_TIMEOUT_S = 600.0
DETAIL_LINES = 25
VERSION = re.compile(r"(\d+)\.(\d+)")
PYTHON_NAMES = ("PYTHON", "PYTHON_VERSION")
CHECK_IDS = (
    "ruff-check",
    "ruff-format",
    "mypy",
    "zizmor",
    "workflow-schema",
    "python-drift",
    "lock-drift",
)


def workflows(root: Path) -> list[Path]:
    """Return the workflow files under `root/.github/workflows`, sorted."""
    folder = root / ".github" / "workflows"
    return sorted(p for pattern in WORKFLOW_GLOBS for p in folder.glob(pattern))


def run_tool(
    check_id: str, title: str, argv: Sequence[str], cwd: Path, timeout_s: float = TOOL_TIMEOUT_S
) -> Result:
    """Run one tool and turn its exit status and output into a result row."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        return Result(
            id=check_id,
            title=title,
            status="error",
            detail=f"{argv[0]} is not installed; install the `lint` dependency group",
        )
    except subprocess.TimeoutExpired:
        return Result(
            id=check_id,
            title=title,
            status="error",
            duration_s=time.perf_counter() - started,
            detail=f"{argv[0]} did not finish within {timeout_s:g} s",
        )
    output = (done.stdout + done.stderr).strip().splitlines()
    tail = "\n".join(output[-DETAIL_LINES:])
    return Result(
        id=check_id,
        title=title,
        status="pass" if done.returncode == 0 else "fail",
        duration_s=time.perf_counter() - started,
        detail="" if done.returncode == 0 else tail,
        observed={"exit_code": done.returncode, "command": " ".join(argv)},
    )


def _module_tool(name: str) -> list[str]:
    return [sys.executable, "-m", name]


def load_workflow(text: str) -> Any:
    """Parse a workflow, giving back the `on` key that YAML 1.1 reads as the boolean True."""
    import yaml

    doc = yaml.safe_load(text)
    if isinstance(doc, dict) and True in doc:
        doc["on"] = doc.pop(True)
    return doc


def evaluate_workflow_schema(documents: Mapping[str, Any], schema: Mapping[str, Any]) -> Result:
    """Validate each parsed workflow against the project's compact workflow schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for name, doc in documents.items():
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            problems.append(f"{name}: {where}: {error.message}")
    if not documents:
        problems.append("no workflow under .github/workflows")
    return Result(
        id="workflow-schema",
        title="workflow matches the required schema",
        status="fail" if problems else "pass",
        detail="\n".join(problems[:DETAIL_LINES]),
        observed={"workflows": sorted(documents), "problems": len(problems)},
    )


def _major_minor(text: str) -> str:
    match = VERSION.search(text)
    return f"{match.group(1)}.{match.group(2)}" if match else ""


def python_versions(root: Path) -> dict[str, str]:
    """Collect the declared Python version (major.minor) from every place that names one."""
    found: dict[str, str] = {}
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        requires = str(data.get("project", {}).get("requires-python", ""))
        bound = re.search(r"(?:>=|~=|==)\s*(\d+\.\d+)", requires)
        found["pyproject requires-python"] = bound.group(1) if bound else requires or "(missing)"
        tool = data.get("tool", {})
        if "python_version" in tool.get("mypy", {}):
            found["pyproject tool.mypy python_version"] = _major_minor(
                str(tool["mypy"]["python_version"])
            )
        target = str(tool.get("ruff", {}).get("target-version", ""))
        if re.fullmatch(r"py3\d+", target):
            found["pyproject tool.ruff target-version"] = f"3.{target[3:]}"
    noxfile = root / "noxfile.py"
    if noxfile.is_file():
        found.update(_noxfile_versions(noxfile.read_text(encoding="utf-8")))
    for path in workflows(root):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = re.match(r"\s*python-version:\s*['\"]?([^'\"\s#]+)", line)
            if match:
                found[f"{path.relative_to(root).as_posix()}:{number} python-version"] = (
                    _major_minor(match.group(1))
                )
    dot = root / ".python-version"
    if dot.is_file():
        found[".python-version"] = _major_minor(
            dot.read_text(encoding="utf-8").splitlines()[0]
            if dot.read_text(encoding="utf-8").strip()
            else ""
        )
    lock = root / LOCK
    if lock.is_file():
        match = re.search(r"--python-version[= ](\S+)", lock.read_text(encoding="utf-8")[:2000])
        if match:
            found[f"{LOCK.as_posix()} --python-version"] = _major_minor(match.group(1))
    return found


def _noxfile_versions(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {"noxfile.py": "(does not parse)"}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and any(isinstance(t, ast.Name) and t.id.upper() in PYTHON_NAMES for t in node.targets)
        ):
            found["noxfile.py PYTHON"] = _major_minor(node.value.value)
        if isinstance(node, ast.keyword) and node.arg == "python":
            values = (
                node.value.elts if isinstance(node.value, ast.List | ast.Tuple) else [node.value]
            )
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found[f"noxfile.py:{value.lineno} python="] = _major_minor(value.value)
    return found


def evaluate_python_drift(versions: Mapping[str, str]) -> Result:
    """Pass when every declared Python version agrees on major.minor."""
    distinct = sorted(set(versions.values()))
    detail = (
        ""
        if len(distinct) == 1
        else "versions disagree:\n"
        + "\n".join(
            f"{source}: {value or '(unreadable)'}" for source, value in sorted(versions.items())
        )
    )
    if not versions:
        detail = "no Python version declared in pyproject.toml, noxfile.py or the workflow"
    return Result(
        id="python-drift",
        title="Python version agrees across pyproject, noxfile, workflow",
        status="pass" if len(distinct) == 1 else "fail",
        detail=detail,
        observed={"versions": dict(versions)},
    )


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requested(pyproject: Mapping[str, Any]) -> list[str]:
    """Return every requirement string in [project] dependencies and [dependency-groups]."""
    found = [str(r) for r in pyproject.get("project", {}).get("dependencies", [])]
    for entries in pyproject.get("dependency-groups", {}).values():
        found.extend(str(e) for e in entries if isinstance(e, str))
    return found


def parse_lock(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Return ({name: version}, {name: via lines}) from a `uv pip compile` requirements file."""
    pins: dict[str, str] = {}
    via: dict[str, set[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;\\]+)", line)
        if match:
            current = _normalize(match.group(1))
            pins[current] = match.group(2)
            via[current] = set()
        elif current and line.startswith("#"):
            via[current].add(line.lstrip("# ").removeprefix("via").strip())
    return pins, via


def evaluate_lock(
    pyproject: Mapping[str, Any], lock_text: str | None, lock_name: str = LOCK.as_posix()
) -> Result:
    """Pass when the lock pins every requirement pyproject asks for, with an accepted version."""
    from packaging.requirements import InvalidRequirement, Requirement

    title = "locked dependencies match pyproject.toml"
    if lock_text is None:
        return Result(
            id="lock-drift",
            title=title,
            status="fail",
            detail=f"{lock_name} is missing; generate it with the `uv pip compile` command "
            "documented in checks/static.py",
        )
    pins, via = parse_lock(lock_text)
    problems: list[str] = []
    wanted: set[str] = set()
    for text in requested(pyproject):
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(f"pyproject requirement {text!r} does not parse: {exc}")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate(
            {"python_version": "3.11"}
        ):
            continue
        name = _normalize(requirement.name)
        wanted.add(name)
        if name not in pins:
            problems.append(f"{text}: not in {lock_name}")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{text}: {lock_name} has {name}=={pins[name]}")
    for name, sources in sorted(via.items()):
        if name not in wanted and any("sync-ci (pyproject.toml" in s for s in sources):
            problems.append(
                f"{name}=={pins[name]}: locked for pyproject, which no longer asks for it"
            )
    if problems:
        problems.append(f"regenerate with the command in the header of {lock_name}")
    return Result(
        id="lock-drift",
        title=title,
        status="fail" if problems else "pass",
        detail="\n".join(problems[:DETAIL_LINES]),
        observed={"requirements": len(wanted), "locked": len(pins)},
    )


def _schema_row(root: Path) -> Result:
    docs: dict[str, Any] = {}
    parse_errors: list[str] = []
    for path in workflows(root):
        try:
            docs[path.relative_to(root).as_posix()] = load_workflow(
                path.read_text(encoding="utf-8")
            )
        except Exception as exc:  # yaml.YAMLError and decoding errors alike become a failing row
            parse_errors.append(f"{path.name}: {exc}")
    row = evaluate_workflow_schema(docs, json.loads(SCHEMA.read_text(encoding="utf-8")))
    if parse_errors:
        return Result(
            id=row.id,
            title=row.title,
            status="fail",
            detail="\n".join([*parse_errors, row.detail]).strip(),
        )
    return row


def _lock_row(root: Path) -> Result:
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    lock = root / LOCK
    return evaluate_lock(pyproject, lock.read_text(encoding="utf-8") if lock.is_file() else None)


def plan(root: Path) -> dict[str, Callable[[], Result]]:
    """Return each check's id and the call that produces its row, in run order."""
    flows = [str(p.relative_to(root)) for p in workflows(root)]
    # Beside the interpreter first: a venv run without its bin/ on PATH still finds its own zizmor.
    beside = Path(sys.executable).parent / "zizmor"
    zizmor = str(beside) if beside.is_file() else shutil.which("zizmor") or "zizmor"
    return {
        "ruff-check": lambda: run_tool(
            "ruff-check", "ruff check", [*_module_tool("ruff"), "check", "."], root
        ),
        "ruff-format": lambda: run_tool(
            "ruff-format",
            "ruff format --check",
            [*_module_tool("ruff"), "format", "--check", "."],
            root,
        ),
        "mypy": lambda: run_tool(
            "mypy", "mypy --strict (files from pyproject)", _module_tool("mypy"), root
        ),
        "zizmor": lambda: run_tool(
            "zizmor", "zizmor --offline on the workflows", [zizmor, "--offline", *flows], root
        ),
        "workflow-schema": lambda: _schema_row(root),
        "python-drift": lambda: evaluate_python_drift(python_versions(root)),
        "lock-drift": lambda: _lock_row(root),
    }


def run_checks(root: Path, select: Iterable[str] = ()) -> list[Result]:
    """Run the chosen checks (all by default) over the tree at `root`."""
    chosen = set(select)
    rows = []
    for check_id, produce in plan(root).items():
        if chosen and check_id not in chosen:
            continue
        started = time.perf_counter()
        row = produce()
        if not row.duration_s:
            row = Result(
                id=row.id,
                title=row.title,
                status=row.status,
                detail=row.detail,
                observed=row.observed,
                duration_s=time.perf_counter() - started,
            )
        rows.append(row)
    return rows


def command(args: argparse.Namespace) -> int:
    """Run `python -m checks.static` and report one row per check."""
    from sync_ci.errors import UsageError

    root = Path(args.root)
    if not (root / "pyproject.toml").is_file():
        raise UsageError(f"{root} has no pyproject.toml; pass the repository root with --root")
    select = [s.strip() for s in args.select.split(",") if s.strip()]
    unknown = sorted(set(select) - set(CHECK_IDS))
    if unknown:
        raise UsageError(
            f"--select: unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECK_IDS)}"
        )
    started_at = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    rows = run_checks(root, select)
    report = make_report(
        suite="check",
        target="repo",
        mode="static",
        sha=os.environ.get("GITHUB_SHA", ""),
        started_at=started_at,
        duration_s=time.perf_counter() - started,
        results=rows,
    )
    from sync_ci.options import outputs

    return emit(report, outputs(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the static checks."""
    from sync_ci.options import Parser
    from sync_ci.running import run_handler

    parser = Parser(prog="python -m checks.static", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="repository root (default: .)")
    parser.add_argument(
        "--select", default="", help=f"comma-separated subset of: {', '.join(CHECK_IDS)}"
    )
    parser.add_argument(
        "--json", metavar="PATH", dest="json_path", help="also write the result document"
    )
    parser.add_argument(
        "--junit", metavar="PATH", dest="junit_path", help="also write a JUnit XML report"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    args = parser.parse_args(argv)
    return run_handler(command, args)


if __name__ == "__main__":
    sys.exit(int(main() or ExitCode.OK))
