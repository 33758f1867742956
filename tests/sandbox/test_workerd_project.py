"""A user's own Worker project under test: `--target ci` without a preview URL runs THAT project.

The project is a wrangler.toml plus its modules in a directory of the test's own; `[worker]
project` (here SYNC_CI_WORKER_PROJECT) names it, the smoke starts it on workerd over the run's
CI prefix and tests it. A project that drops cf-ray shows the smoke tests the project's code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync_ci.sandbox import workerd
from sync_ci.store import Store, StoreEndpoint
from tests.sandbox.test_workerd import _workerd_missing
from tests.test_smoke import run_cli, snapshot

pytestmark = pytest.mark.skipif(bool(_workerd_missing()), reason=_workerd_missing())

REFERENCE = workerd.WORKER_DIR / "src" / "index.js"
GOOD = f"""
import reference, {{ SyncBook }} from {json.dumps(str(REFERENCE))};
export {{ SyncBook }};
export default {{ fetch: (request, env, ctx) => reference.fetch(request, env, ctx) }};
"""
# The regression a pull request could bring: every answer loses its cf-ray header.
NO_CF_RAY = f"""
import reference, {{ SyncBook }} from {json.dumps(str(REFERENCE))};
export {{ SyncBook }};
export default {{
  async fetch(request, env, ctx) {{
    const answer = await reference.fetch(request, env, ctx);
    const headers = new Headers(answer.headers);
    headers.delete("cf-ray");
    return new Response(answer.body, {{ status: answer.status, headers }});
  }},
}};
"""
WRANGLER = """\
name = "acme-sync"
main = "src/worker.js"
compatibility_date = "2025-04-01"

[vars]
GREETING = "hello"

[[kv_namespaces]]
binding = "CACHE"
id = "0123"

[[durable_objects.bindings]]
name = "BOOK"
class_name = "SyncBook"
"""


def user_project(root: Path, code: str) -> Path:
    """Write a Worker project (wrangler.toml, src/worker.js); return its wrangler.toml."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "worker.js").write_text(code, encoding="utf-8")
    toml = root / "wrangler.toml"
    toml.write_text(WRANGLER, encoding="utf-8")
    return toml


def ci_env(endpoint: StoreEndpoint, sha: str, home: Path, project: Path) -> dict[str, str]:
    """A `--target ci` run without a preview URL, over the test's bucket, testing `project`."""
    return {
        "HOME": str(home),
        "SYNC_CI_TARGET": "ci",
        "GITHUB_SHA": sha,
        "SYNC_CI_BUCKET": endpoint.bucket,
        "SYNC_CI_ENDPOINT_URL": endpoint.endpoint_url,
        "SYNC_CI_ACCESS_KEY_ID": endpoint.access_key_id,
        "SYNC_CI_SECRET_ACCESS_KEY": endpoint.secret_access_key,
        "SYNC_CI_STATE_DIR": str(home / "state"),
        "SYNC_CI_WORKER_PROJECT": str(project),
    }


def test_the_project_description_reads_bindings_from_wrangler_toml(tmp_path: Path) -> None:
    described = workerd.project_description(user_project(tmp_path, GOOD))
    assert described["kv_namespaces"] == ["CACHE"]
    assert described["durable_objects"] == [{"name": "BOOK", "class_name": "SyncBook"}]
    assert described["vars"] == {"GREETING": "hello"}
    assert described["main"] == str(tmp_path / "src" / "worker.js")


@pytest.mark.slow
def test_ci_target_runs_the_users_project_and_writes_only_its_prefix(
    store_endpoint: StoreEndpoint, admin_store: Store, ci_sha: str, tmp_path: Path
) -> None:
    admin_store.put("snappy-os/catalog.json", b'{"schema": 1, "generation": 7, "entries": {}}')
    before = snapshot(admin_store)
    project = user_project(tmp_path / "project", GOOD)
    out = run_cli(ci_env(store_endpoint, ci_sha, tmp_path, project), "smoke", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    after = snapshot(admin_store)
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith(f"snappy-os-ci/{ci_sha}/") for k in after.keys() - before.keys())
    assert f"snappy-os-ci/{ci_sha}/tenants/ci-smoke/state.json" in after


@pytest.mark.slow
def test_the_users_project_passes_conformance_on_ci(
    store_endpoint: StoreEndpoint, admin_store: Store, ci_sha: str, tmp_path: Path
) -> None:
    """The other suite a pull request runs against its Worker; a read-only pass needs a preview."""
    admin_store.put("snappy-os/catalog.json", b'{"schema": 1, "generation": 7, "entries": {}}')
    before = snapshot(admin_store)
    env = ci_env(store_endpoint, ci_sha, tmp_path, user_project(tmp_path / "project", GOOD))
    checked = run_cli(env, "conformance", "--max-examples", "2", "--seed", "7", timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "seed 7" in checked.stderr
    smoked = run_cli(env, "smoke", "--read-only", timeout=600)
    assert (smoked.returncode, smoked.stdout) == (2, ""), smoked.stderr
    assert smoked.stderr.startswith("sync-ci: error: --read-only on ci reads the production root")
    assert "SYNC_CI_PREVIEW_URL" in smoked.stderr and len(smoked.stderr.splitlines()) == 1
    after = snapshot(admin_store)
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith(f"snappy-os-ci/{ci_sha}/") for k in after.keys() - before.keys())


@pytest.mark.slow
def test_a_project_that_breaks_the_contract_fails_the_smoke(
    store_endpoint: StoreEndpoint, ci_sha: str, tmp_path: Path
) -> None:
    project = user_project(tmp_path / "project", NO_CF_RAY)
    out = run_cli(ci_env(store_endpoint, ci_sha, tmp_path, project), "smoke", timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    failing = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert failing and "phase:preflight" in failing[0], out.stdout
    assert "cf-ray" in out.stdout


def test_a_missing_project_is_one_settings_line(tmp_path: Path, ci_sha: str) -> None:
    env = {
        "HOME": str(tmp_path),
        "SYNC_CI_TARGET": "sandbox",
        "SYNC_CI_SHA": ci_sha,
        "SYNC_CI_WORKER_PROJECT": str(tmp_path / "nowhere" / "wrangler.toml"),
    }
    out = run_cli(env, "smoke")
    assert out.returncode == 2
    assert out.stderr.startswith("sync-ci: error: worker project = ")
    assert "must name an existing wrangler.toml" in out.stderr and "Traceback" not in out.stderr
