"""nox sessions for sync-ci: each one installs a PEP 735 group and calls into the package."""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["check", "lint_sync", "smoke_sync", "tests"]
nox.options.reuse_venv = "yes"

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"
# Every install is constrained by the lock, so CI resolves the same versions every time.
LOCK = ("-c", "requirements/lock.txt")


@nox.session(python=PYTHON)
def check(session: nox.Session) -> None:
    """Typecheck, lint, workflow audit and runtime drift.

    Arguments after `--` go to `python -m checks.static`: `--select IDS`, `--json PATH`,
    `--junit PATH`, `-q`.
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"), *LOCK)
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "checks.static", *session.posargs)


@nox.session(python=PYTHON)
def lint_sync(session: nox.Session) -> None:
    """Run the section-A lint catalogue over the repository.

    Arguments after `--` replace the default `--scope repo .` and take `sync-ci lint`'s options:
    paths, `--scope repo|field|all`, `--select IDS`, `--format table|json|github`, `--json PATH`,
    `--junit PATH`, `--list`, `--explain ID`.
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "smoke"), *LOCK)
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "checks", *(session.posargs or ["--scope", "repo", "."]))


@nox.session(python=PYTHON)
def smoke_sync(session: nox.Session) -> None:
    """Run the phase-mirror smoke (sandbox by default; writes only under snappy-os-ci/<sha>/).

    Arguments after `--` take `sync-ci smoke`'s options: `--target sandbox|ci|live`,
    `--read-only`, `--fault KEY=VALUE`, `--sample N`, `--budget SECONDS`, `--json PATH`,
    `--junit PATH`, `-q`.
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "smoke"), *LOCK)
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "sync_ci", "smoke", *session.posargs)


@nox.session(python=PYTHON, tags=["conformance"])
def conformance(session: nox.Session) -> None:
    """Check the target's Worker against docs/contract.openapi.yaml (Schemathesis).

    Arguments after `--` take `sync-ci conformance`'s options: `--target`, `--max-examples N`,
    `--budget SECONDS`, `--seed N`, `--json PATH`, `--junit PATH`, `-q`.
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "conformance"), *LOCK)
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "sync_ci", "conformance", *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite against real servers on 127.0.0.1.

    Arguments after `--` replace the default `-n 2` and go to pytest (e.g. `-- tests/field -x`).
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "test"), *LOCK)
    session.install("--no-deps", "-e", ".")
    session.run("pytest", *(session.posargs or ["-n", "2"]))


@nox.session(python=PYTHON, default=False, tags=["strict"])
def tests_strict(session: nox.Session) -> None:
    """Run the storage-facing tests against SeaweedFS, the strict store.

    Arguments after `--` go to pytest, after `-m strict_store`.
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "strict"), *LOCK)
    session.install("--no-deps", "-e", ".")
    session.run(
        "pytest", "-m", "strict_store", *session.posargs, env={"SYNC_CI_TEST_STORE": "seaweedfs"}
    )


@nox.session(python=PYTHON, default=False, tags=["bench"])
def bench(session: nox.Session) -> None:
    """Run the benchmarks and print ratios against their references.

    Arguments after `--` pick benchmarks by name part (e.g. `-- doctor cleanup`); none: all.
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "bench"), *LOCK)
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON, default=False, tags=["gates"])
def gates(session: nox.Session) -> None:
    """Run every pre-launch gate (fails closed).

    Arguments after `--` replace the default `all` and take `sync-ci gate`'s: a gate (`load`,
    `latency`, `platforms`, `all`) then its options, e.g. `-- load --target ci --json PATH`.
    """
    session.install(*nox.project.dependency_groups(PYPROJECT, "runtime"), *LOCK)
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "sync_ci", "gate", *(session.posargs or ["all"]))
