"""The JavaScript reference Worker (worker/) on workerd, through miniflare: its command and checks.

`worker/sandbox.mjs` takes the options and SYNC_CI_WORKER_* environment of `worker_main` and
writes the same ready file, so the launcher swaps one command for the other. A user's own
Worker project is described to it as JSON built here from the project's wrangler.toml.
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from sync_ci.errors import SettingsError

Runtime = Literal["python", "workerd"]
RUNTIMES: tuple[Runtime, ...] = ("python", "workerd")
WORKER_DIR = Path(__file__).resolve().parents[2] / "worker"
LAUNCHER = WORKER_DIR / "sandbox.mjs"
# What `npm ci` in worker/ installs and the launcher imports.
NODE_PACKAGES = ("miniflare", "esbuild", "aws4fetch")
MIN_NODE_MAJOR = 18
INSTALL_HINT = "install Node.js 18+ and npm (e.g. `apt-get install nodejs npm`)"
# The binding names a user's Worker reads its settings from, as the reference Worker does.
PLAIN_BINDINGS = ("ROOT", "CI_ROOT", "WRITE_PREFIXES", "STORE_ENDPOINT", "BUCKET", "STORE_REGION")
SECRET_BINDINGS = ("STORE_ACCESS_KEY_ID", "STORE_SECRET_ACCESS_KEY", "TENANT_SECRET", "ADMIN_TOKEN")


def node_binary(env: Mapping[str, str] | None = None) -> str:
    """Return the path of `node`, or raise SettingsError saying what to install (exit 2)."""
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    node = shutil.which("node", path=path)
    if node is None:
        raise SettingsError(f"--worker workerd needs Node.js, which is not on PATH: {INSTALL_HINT}")
    return node


def missing_packages(worker_dir: Path = WORKER_DIR) -> list[str]:
    """The npm packages of worker/package.json that `npm ci` has not installed."""
    modules = worker_dir / "node_modules"
    return [name for name in NODE_PACKAGES if not (modules / name / "package.json").is_file()]


def check_runtime(runtime: str, env: Mapping[str, str] | None = None) -> None:
    """Refuse an unknown runtime, and a workerd one whose Node or packages are missing (exit 2)."""
    if runtime not in RUNTIMES:
        raise SettingsError(
            f"unknown Worker runtime {runtime!r}; use one of: {', '.join(RUNTIMES)}"
        )
    if runtime == "python":
        return
    node_binary(env)
    missing = missing_packages(WORKER_DIR)
    if missing:
        raise SettingsError(
            f"--worker workerd needs the npm packages of {WORKER_DIR} ({', '.join(missing)} "
            f"missing): run `cd {WORKER_DIR} && npm ci`"
        )


def workerd_command(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The command that serves the JavaScript Worker on workerd, after checking it can run."""
    check_runtime("workerd", env)
    return (node_binary(env), str(LAUNCHER))


def project_description(wrangler_toml: Path) -> dict[str, Any]:
    """Read a Worker project's wrangler.toml into the launcher's project JSON (entry, bindings)."""
    where = f"Worker project {wrangler_toml}"
    try:
        data = tomllib.loads(wrangler_toml.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(
            f"{where} does not exist; point [worker] project at a wrangler.toml"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read {where}: {exc}") from None
    main = data.get("main")
    if not isinstance(main, str) or not main:
        raise SettingsError(f"{where} has no `main` (the Worker's entry module)")
    entry = (wrangler_toml.parent / main).resolve()
    if not entry.is_file():
        raise SettingsError(f"{where}: main = {main!r} names {entry}, which does not exist")
    date = data.get("compatibility_date")
    if not isinstance(date, str) or not date:
        raise SettingsError(f"{where} has no compatibility_date")
    flags = data.get("compatibility_flags", [])
    kv = [
        item.get("binding")
        for item in _tables(data.get("kv_namespaces", []), where, "kv_namespaces")
    ]
    objects = _tables(data.get("durable_objects", {}).get("bindings", []), where, "durable_objects")
    durable = [{"name": item.get("name"), "class_name": item.get("class_name")} for item in objects]
    plain_vars = data.get("vars", {})
    problems = [
        *("a kv_namespaces entry has no binding name" for b in kv if not isinstance(b, str)),
        *(
            "a durable_objects binding lacks name or class_name"
            for d in durable
            if not (isinstance(d["name"], str) and isinstance(d["class_name"], str))
        ),
    ]
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        problems.append("compatibility_flags is not a list of strings")
    if not isinstance(plain_vars, dict):
        problems.append("[vars] is not a table")
    if problems:
        raise SettingsError(f"{where}: {problems[0]}")
    secret_vars = sorted(set(plain_vars) & set(SECRET_BINDINGS))
    if secret_vars:
        raise SettingsError(
            f"{where} sets {', '.join(secret_vars)} in [vars]; secrets are bindings set by "
            "`wrangler secret put` (sync-ci passes its own), never values in wrangler.toml"
        )
    return {
        "name": str(data.get("name", "worker")),
        "main": str(entry),
        "compatibility_date": date,
        "compatibility_flags": flags,
        "kv_namespaces": kv,
        "durable_objects": durable,
        "vars": {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in plain_vars.items()},
    }


def _tables(raw: object, where: str, what: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise SettingsError(f"{where}: {what} is not a list of tables")
    return raw


def write_project_file(wrangler_toml: Path, workdir: Path) -> Path:
    """Write the project JSON the launcher's --project reads; return its path."""
    path = workdir / "worker-project.json"
    document = project_description(wrangler_toml)
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path
