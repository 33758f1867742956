"""The workflow's own `run:` steps, read from .github/workflows/sync-ci.yml and executed in order.

Each job gets a fresh copy of the checkout (as `actions/checkout` gives it), a runner Python the
way `actions/setup-python` leaves one on PATH, and GitHub's environment; every `run:` step runs
as GitHub runs it (`bash --noprofile --norc -eo pipefail`), with `${{ vars.* }}`, `${{ secrets.* }}`
and `${{ github.* }}` standing in for a sandbox of the test's own. A `uses:` step is GitHub's own
and is skipped with a note. So a broken command line in the workflow fails here, not on GitHub.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sync_ci.config import Settings
from tests.conftest import FaultySandbox

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "sync-ci.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
# The machine's own network setup (CA bundles, proxies, package-index settings) reaches the steps,
# as a self-hosted runner's environment would; nothing else of this process's environment does.
NETWORK_ENV = re.compile(r"^(PIP_|UV_|SSL_CERT_|REQUESTS_CA_BUNDLE$|CURL_CA_BUNDLE$)|_PROXY$", re.I)
# What each job leaves in results/: the proof that its command really ran, not only exited 0.
RESULTS = {
    "check": ("check.json", "check.junit.xml"),
    "lint_sync": ("lint.json", "lint.junit.xml"),
    "smoke_sync": ("smoke.json", "smoke.junit.xml"),
    "cleanup": ("cleanup.json", "cleanup.junit.xml"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRun:
    """One executed `run:` step (or a skipped `uses:` step, with `note`)."""

    name: str
    returncode: int = 0
    output: str = ""
    note: str = ""


def load_workflow(path: Path = WORKFLOW) -> dict[str, Any]:
    """Parse the workflow file."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict) and isinstance(document.get("jobs"), dict)
    return document


def substitute(text: str, context: Mapping[str, str], where: str) -> str:
    """Replace each `${{ expr }}` with its stand-in; an expression without one fails the test."""

    def one(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression not in context:
            pytest.fail(f"{where}: nothing stands in for ${{{{ {expression} }}}}")
        return context[expression]

    return EXPRESSION.sub(one, text)


def run_script(
    script: Path, cwd: Path, env: Mapping[str, str], timeout_s: float
) -> tuple[int, str]:
    """Run one step as GitHub's default bash shell does; its whole process group ends with it."""
    process = subprocess.Popen(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return -signal.SIGKILL, f"{output}\n(stopped after the job's {timeout_s:g} s timeout)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # nothing a step started outlives it
    return process.returncode, output


def run_job(
    workflow: Mapping[str, Any],
    job_name: str,
    workspace: Path,
    runner_env: Mapping[str, str],
    context: Mapping[str, str],
) -> list[StepRun]:
    """Run a job's steps in order, stopping at the first failing `run:` step (as GitHub does)."""
    job = workflow["jobs"][job_name]
    timeout_s = float(job.get("timeout-minutes", 360)) * 60
    scripts = Path(runner_env["RUNNER_TEMP"])
    runs: list[StepRun] = []
    for index, step in enumerate(job["steps"], 1):
        name = str(step.get("name") or step.get("uses") or f"step {index}")
        where = f"jobs.{job_name}.steps[{index}] ({name})"
        if "uses" in step:
            runs.append(StepRun(name=name, note=f"skipped: `uses: {step['uses']}` is GitHub's"))
            continue
        assert "run" in step, f"{where} has neither run: nor uses:"
        declared = {**workflow.get("env", {}), **job.get("env", {}), **step.get("env", {})}
        env = {**runner_env, **{k: substitute(str(v), context, where) for k, v in declared.items()}}
        script = scripts / f"{job_name}-{index}.sh"
        script.write_text(substitute(str(step["run"]), context, where), encoding="utf-8")
        cwd = workspace / str(step.get("working-directory", "."))
        code, output = run_script(script, cwd, env, timeout_s)
        runs.append(StepRun(name=name, returncode=code, output=output))
        if code != 0:
            break
    return runs


def copy_checkout(destination: Path) -> Path:
    """Copy this checkout as `git status` sees it: tracked and new files, nothing ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    )
    for name in listed.stdout.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def failure_text(runs: list[StepRun]) -> str:
    """Say which step failed, with the end of its output."""
    last = runs[-1]
    return f"step {last.name!r} exited {last.returncode}:\n{last.output[-4000:]}"


@pytest.fixture(scope="module")
def runner_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What setup-python leaves: a Python 3.11 whose bin directory goes first on PATH.

    A venv over this interpreter's base, seeing its site-packages: `pip install nox uv` in the
    workflow is then a no-op where the base already has those pins, and installs into the venv
    (never into the base) where it does not.
    """
    base = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    if sys.version_info[:2] != (3, 11) or not base.exists():
        pytest.skip("the workflow pins Python 3.11; run the tests on 3.11")
    venv = tmp_path_factory.mktemp("runner") / "python"
    subprocess.run(
        [str(base), "-m", "venv", "--system-site-packages", str(venv)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return venv / "bin"


@pytest.fixture
def standing_in(faulty_sandbox: FaultySandbox) -> Settings:
    """A sandbox of this test's own standing in for the real bucket and preview Worker."""
    return faulty_sandbox()


def github_context(settings: Settings, sha: str) -> dict[str, str]:
    """The `${{ }}` values the workflow's run steps and their env use."""
    return {
        "github.sha": sha,
        "vars.SYNC_CI_BUCKET": settings.bucket,
        "vars.SYNC_CI_ENDPOINT_URL": settings.endpoint_url,
        "vars.SYNC_CI_REGION": settings.region_name,
        "vars.SYNC_CI_PREVIEW_URL": settings.worker_url,
        "secrets.SYNC_CI_ACCESS_KEY_ID": settings.secrets.access_key_id,
        "secrets.SYNC_CI_SECRET_ACCESS_KEY": settings.secrets.secret_access_key,
        "secrets.SYNC_CI_TENANT_SECRET": settings.secrets.tenant_secret,
    }


@pytest.fixture
def runner(runner_python: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh workspace and GitHub's environment for one job."""
    workspace = copy_checkout(tmp_path / "workspace")
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    home = Path(os.environ.get("HOME", "/root"))
    env = {
        "HOME": str(tmp_path / "runner-home"),
        "PATH": f"{runner_python}:{Path(sys.base_prefix) / 'bin'}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_STEP_SUMMARY": str(temp / "step-summary.md"),
        "GITHUB_OUTPUT": str(temp / "output"),
        "GITHUB_ENV": str(temp / "env"),
        "RUNNER_OS": "Linux",
        "RUNNER_TEMP": str(temp),
        # A runner with warm package caches (actions/cache would restore them).
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(home / ".cache" / "uv")),
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(home / ".cache" / "pip")),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.update({k: v for k, v in os.environ.items() if NETWORK_ENV.search(k) and k not in env})
    return workspace, env


def read_results(workspace: Path, job_name: str) -> dict[str, Any] | None:
    """The job's result document from results/, or None when its command never wrote one."""
    report_name, junit_name = RESULTS[job_name]
    try:
        document = json.loads((workspace / "results" / report_name).read_text())
    except (OSError, ValueError):
        return None
    assert (workspace / "results" / junit_name).stat().st_size > 0
    assert isinstance(document, dict) and document.get("schema") == "sync-ci/result@1"
    return document


@pytest.mark.slow
@pytest.mark.parametrize("job_name", ["check", "lint_sync", "smoke_sync", "cleanup"])
def test_job_run_steps_execute_in_order(
    job_name: str, runner: tuple[Path, dict[str, str]], standing_in: Settings
) -> None:
    workspace, env = runner
    sha = secrets.token_hex(20)
    env["GITHUB_SHA"] = sha
    workflow = load_workflow()
    runs = run_job(workflow, job_name, workspace, env, github_context(standing_in, sha))
    print("\n".join(f"{r.name}: {r.note or f'exit {r.returncode}'}" for r in runs))
    executed = [r for r in runs if not r.note]
    expected = [s for s in workflow["jobs"][job_name]["steps"] if "run" in s]
    document = read_results(workspace, job_name)
    lint_finding = job_name == "check" and executed[-1].returncode == 1 and document is not None
    if lint_finding:
        # The command line worked: checks.static ran and wrote its rows. A finding in the tree
        # is `nox -s check`'s to report, not a broken workflow step.
        assert document is not None and not document["ok"]
        assert {r["id"] for r in document["results"]} >= {"ruff-check", "mypy", "zizmor"}
    else:
        assert all(r.returncode == 0 for r in runs), failure_text(runs)
        assert document is not None and document["ok"] is True, document
    assert len(executed) == len(expected), f"every run: step executes: {failure_text(runs)}"
    if job_name == "smoke_sync":
        assert document is not None and document["target"] == "ci" and document["sha"] == sha
        # The write smoke's last phase ran on ci: the smoke group installs Schemathesis.
        last = document["results"][-1]
        assert (last["id"], last["status"]) == ("phase:conformance", "pass"), last
        assert Path(env["GITHUB_STEP_SUMMARY"]).read_text().strip(), "the step summary is written"


def test_a_broken_run_line_fails_its_job(
    runner: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """Fault injected into a copy of the workflow: a mistyped command stops the job there."""
    workspace, env = runner
    workflow = load_workflow()
    steps = workflow["jobs"]["lint_sync"]["steps"]
    install = next(s for s in steps if s.get("name") == "Install nox")
    install["run"] = install["run"].replace("pip install", "pip instal")
    runs = run_job(workflow, "lint_sync", workspace, env, {})
    assert [r.name for r in runs if not r.note] == ["Install nox"]
    assert runs[-1].returncode != 0 and "instal" in runs[-1].output
    assert read_results(workspace, "lint_sync") is None


def test_an_expression_without_a_stand_in_fails(runner: tuple[Path, dict[str, str]]) -> None:
    workspace, env = runner
    workflow = load_workflow()
    step = next(s for s in workflow["jobs"]["smoke_sync"]["steps"] if "env" in s)
    step["env"]["SYNC_CI_BUCKET"] = "${{ vars.SYNC_CI_BUKET }}"
    with pytest.raises(pytest.fail.Exception, match=r"nothing stands in for .*SYNC_CI_BUKET"):
        run_job(workflow, "smoke_sync", workspace, env, {"github.sha": "0" * 40})
