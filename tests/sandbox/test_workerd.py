"""The JavaScript reference Worker on workerd: it answers every contract probe as the Python one.

Both Workers are started by the launcher the sandbox uses, over one moto bucket, and sent the
same probes over real sockets; status codes, header shapes and body shapes must agree. The
write smoke then runs against `sync-ci sandbox --worker workerd` as a user would run it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sync_ci import contract
from sync_ci.errors import SettingsError
from sync_ci.sandbox import workerd
from sync_ci.sandbox.launcher import StoreInfo, start_worker
from sync_ci.sandbox.mutants import MUTANTS
from sync_ci.sandbox.processes import stop_process_group
from sync_ci.sandbox.store_server import StoreProcess
from sync_ci.store import Store, StoreEndpoint
from tests.conftest import STORE_KIND, sandbox_env_for
from tests.sandbox.conftest import RefWorker

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30.0
RUNTIMES: tuple[workerd.Runtime, ...] = ("python", "workerd")
RAY_RE = re.compile(r"^[0-9a-f]{16}-([A-Z]{3})$")


def _workerd_missing() -> str:
    try:
        workerd.check_runtime("workerd")
    except SettingsError as exc:
        return str(exc)
    return ""


needs_workerd = pytest.mark.skipif(bool(_workerd_missing()), reason=_workerd_missing())


def node_eval(script: str) -> Any:
    """Run an ES module snippet in worker/ with node and return what it prints, parsed as JSON."""
    done = subprocess.run(
        [workerd.node_binary(), "--input-type=module", "-e", script],
        cwd=workerd.WORKER_DIR,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    return json.loads(done.stdout)


# --- no Node, no packages: one line, exit 2 ---------------------------------------------------


def test_without_node_the_workerd_sandbox_is_one_line_naming_what_to_install(
    tmp_path: Path,
) -> None:
    env = sandbox_env_for(tmp_path / "ready.json", tmp_path / "home")
    env |= {"PATH": "/nonexistent", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "sync_ci", "sandbox", "--worker", "workerd", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("sync-ci: error: --worker workerd needs Node.js")
    assert "apt-get install nodejs npm" in done.stderr
    assert not (tmp_path / "ready.json").exists()


def test_without_node_modules_the_error_says_npm_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("node") is None:
        pytest.skip("no node on PATH")
    monkeypatch.setattr(workerd, "WORKER_DIR", tmp_path)
    with pytest.raises(SettingsError) as caught:
        workerd.check_runtime("workerd")
    assert f"run `cd {tmp_path} && npm ci`" in str(caught.value)
    assert "miniflare, esbuild, aws4fetch missing" in str(caught.value)
    with pytest.raises(SettingsError, match="unknown Worker runtime 'deno'"):
        workerd.check_runtime("deno")
    workerd.check_runtime("python")


# --- the JavaScript Worker agrees with its own project files ----------------------------------


@needs_workerd
def test_the_js_mutant_list_is_the_python_catalogue() -> None:
    names = node_eval(
        'import { MUTANTS } from "./src/mutants.js"; console.log(JSON.stringify(MUTANTS));'
    )
    assert sorted(names) == sorted(MUTANTS)


@needs_workerd
def test_the_launcher_runs_the_project_wrangler_toml_describes() -> None:
    built_in = node_eval(
        'import { REFERENCE_PROJECT } from "./sandbox.mjs";'
        "console.log(JSON.stringify(REFERENCE_PROJECT));"
    )
    described = workerd.project_description(workerd.WORKER_DIR / "wrangler.toml")
    for key in ("name", "main", "compatibility_date", "kv_namespaces", "durable_objects"):
        assert built_in[key] == described[key], key


def test_a_project_that_puts_a_secret_in_vars_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.js").write_text("export default {}\n")
    (tmp_path / "wrangler.toml").write_text(
        'name = "x"\nmain = "index.js"\ncompatibility_date = "2025-04-01"\n'
        '[vars]\nTENANT_SECRET = "oops"\n'
    )
    with pytest.raises(SettingsError, match="secrets are bindings"):
        workerd.project_description(tmp_path / "wrangler.toml")
    (tmp_path / "wrangler.toml").write_text('name = "x"\nmain = "gone.js"\n')
    with pytest.raises(SettingsError, match="does not exist"):
        workerd.project_description(tmp_path / "wrangler.toml")


# --- conformance: the same probes, the same answers -------------------------------------------


def start_runtime(
    runtime: workerd.Runtime, endpoint: StoreEndpoint, store: StoreProcess, workdir: Path
) -> RefWorker:
    """Start one reference Worker through the sandbox's launcher (root header and control on)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tenant_secret, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    info = StoreInfo(
        kind=STORE_KIND,
        endpoint_url=endpoint.endpoint_url,
        bucket=endpoint.bucket,
        access_key_id=endpoint.access_key_id,
        secret_access_key=endpoint.secret_access_key,
        pid=store.pid,
    )
    process, ready = start_worker(
        info,
        workdir=workdir,
        faults={},
        kv_miss_ms={},
        tenant_secret=tenant_secret,
        admin_token=admin_token,
        runtime=runtime,
    )
    return RefWorker(
        process=process,
        ready=ready,
        ready_file=workdir / "worker-ready.json",
        endpoint=endpoint,
        tenant_secret=tenant_secret,
        admin_token=admin_token,
        log_path=workdir / "worker.log",
    )


@pytest.fixture(scope="module")
def both_workers(
    worker_bucket: StoreEndpoint,
    store_server: StoreProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, RefWorker]]:
    """The Python and the workerd reference Worker over one bucket."""
    if _workerd_missing():
        pytest.skip(_workerd_missing())
    started: dict[str, RefWorker] = {}
    try:
        for runtime in RUNTIMES:
            started[runtime] = start_runtime(
                runtime, worker_bucket, store_server, tmp_path_factory.mktemp(runtime)
            )
        yield started
    finally:
        for worker in started.values():
            stop_process_group(worker.process)


def shape(value: Any) -> Any:
    """A JSON value's shape: object keys with the shapes of their values, lists by their items."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def answer_shape(answer: requests.Response, colo: str) -> dict[str, Any]:
    """What the contract fixes about one answer (never a message text or a timing)."""
    headers = answer.headers
    ray = RAY_RE.fullmatch(headers.get("cf-ray", ""))
    kind = headers.get("content-type", "").split(";")[0]
    body: Any = ""
    if not answer.content:
        pass
    elif kind == "application/json":
        body = shape(answer.json())
    elif kind == "text/html":
        body = "<title>Sync status</title>" in answer.text
    elif answer.content:
        body = len(answer.content)
    return {
        "status": answer.status_code,
        "cf-ray colo": ray.group(1) == colo if ray else None,
        "date": bool(headers.get("date", "").endswith(" GMT")),
        "x-cache": headers.get("x-cache"),
        "server-timing total": "total;dur=" in headers.get("server-timing", ""),
        "www-authenticate": headers.get("www-authenticate", "").split(" ")[0],
        "allow": headers.get("allow"),
        "retry-after": "retry-after" in headers,
        "content-type": kind,
        "body": body,
    }


Probe = tuple[str, str, str, Callable[[RefWorker, str], dict[str, Any]]]


def _seed(store: Store, root: str) -> tuple[str, bytes]:
    catalog, blobs = contract.build_catalog({"a.txt": b"alpha\n", "b/c.bin": b"\x00\x01"}, 4)
    for digest, data in blobs.items():
        store.put(contract.object_key(root, digest), data)
    body = json.dumps(catalog.to_json(), indent=1).encode()
    store.put(contract.catalog_key(root), body, "application/json")
    return next(iter(blobs)), body


def run_probes(worker: RefWorker, root: str, store: Store) -> tuple[list[Any], dict[str, Any]]:
    """Send the contract probes to one Worker under `root`; return each answer's shape."""
    colo = worker.ready["regions"][0]["colo"]
    base = worker.url(colo)
    tenant = "acme"
    auth = worker.tenant_headers(tenant, root)
    admin = worker.admin_headers(root)
    in_root = {contract.ROOT_HEADER: root}
    shapes: list[Any] = []
    facts: dict[str, Any] = {}

    def send(label: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        answer = requests.request(method, base + path, timeout=TIMEOUT_S, **kwargs)
        shapes.append((label, answer_shape(answer, colo)))
        return answer

    send("health", "GET", "/_health", headers=in_root)
    send("health head", "HEAD", "/_health", headers=in_root)
    send("catalog missing", "GET", "/catalog", headers=in_root)
    send("install missing", "GET", "/install", headers=in_root)
    digest, stored = _seed(store, root)
    catalog = send("catalog", "GET", "/catalog", headers=in_root)
    facts["catalog bytes"] = catalog.content == stored
    send("catalog again", "GET", "/catalog", headers=in_root)
    facts["install"] = send("install", "GET", "/install", headers=in_root).json()
    facts["object"] = send("object", "GET", f"/o/{digest}", headers=in_root).content
    send("object again", "GET", f"/o/{digest}", headers=in_root)
    send("object missing", "GET", f"/o/{'0' * 64}", headers=in_root)
    send("object bad name", "GET", "/o/NOT-A-SHA", headers=in_root)
    nonce = secrets.token_hex(8)
    send("probe miss", "GET", f"/_probe/kv/{nonce}", headers=in_root)
    send("probe hit", "GET", f"/_probe/kv/{nonce}", headers=in_root)
    send("probe bad nonce", "GET", "/_probe/kv/short", headers=in_root)
    push = {"tenant": tenant, "generation": 4}
    facts["push"] = send("push", "POST", "/_push", headers=auth, json=push).json()
    send("push anon", "POST", "/_push", headers=in_root, json=push)
    wrong = {**auth, "authorization": f"Bearer {'ab' * 32}"}
    send("push wrong token", "POST", "/_push", headers=wrong, json=push)
    send("push oversize", "POST", "/_push", headers=auth, data=b" " * (64 * 1024 + 1))
    send("push not json", "POST", "/_push", headers=auth, data=b"{nope")
    send("push array", "POST", "/_push", headers=auth, json=[1])
    send("push cross tenant", "POST", "/_push", headers=auth, json={"tenant": "zeta"})
    alert = {
        "check": "doctor-failed",
        "message": "2 lints failed",
        "host": "laptop",
        "version": "0.1.0",
        "ts": "2025-01-01T00:00:00Z",
        "idempotency_key": f"acme.{secrets.token_hex(4)}",
        "rows": [{"id": "SA101", "status": "fail", "detail": {"nested": [1]}}],
    }
    send("alert", "POST", "/_alert", headers=auth, json=alert)
    send("alert repeat", "POST", "/_alert", headers=auth, json=alert)
    send("alert controls", "POST", "/_alert", headers=auth, json={**alert, "message": "a\x1bb"})
    send("alert lacks", "POST", "/_alert", headers=auth, json={"check": "x"})
    send("alert bad key", "POST", "/_alert", headers=auth, json={**alert, "idempotency_key": "a/b"})
    send("alert rows", "POST", "/_alert", headers=auth, json={**alert, "rows": "no"})
    send("alert rows null", "POST", "/_alert", headers=auth, json={**alert, "rows": None})
    send("alert oversize", "POST", "/_alert", headers=auth, data=b" " * (16 * 1024 + 1))
    send("heartbeat", "POST", "/_heartbeat", headers=auth)
    send("heartbeat oversize", "POST", "/_heartbeat", headers=auth, data=b" " * 1025)
    status = send("status", "GET", "/_status", headers=admin)
    facts["status checks"] = {
        name: (row["count"], row["tenants"], row["last_rows"])
        for name, row in status.json()["checks"].items()
    }
    send("status html", "GET", "/_status", headers={**admin, "accept": "text/html"})
    send("status anon", "GET", "/_status", headers=in_root)
    send("unknown path", "GET", "/nope", headers=in_root)
    send("post to a GET route", "POST", "/catalog", headers=in_root)
    send("get a POST route", "GET", "/_push", headers=in_root)
    send("refused root", "GET", "/catalog", headers={contract.ROOT_HEADER: "elsewhere/"})
    send("faults", "GET", "/_sandbox/faults", headers=admin)
    send("faults bad key", "POST", "/_sandbox/faults", headers=admin, json={"nope": 1})
    send("faults anon", "GET", "/_sandbox/faults")
    send("clock", "GET", "/_sandbox/clock", headers=admin)
    return shapes, facts


def test_both_workers_answer_every_contract_probe_the_same_way(
    both_workers: dict[str, RefWorker], seed_store: Store
) -> None:
    results = {
        runtime: run_probes(worker, f"snappy-os-ci/{secrets.token_hex(20)}/", seed_store)
        for runtime, worker in both_workers.items()
    }
    (py_shapes, py_facts), (js_shapes, js_facts) = results["python"], results["workerd"]
    assert [label for label, _ in js_shapes] == [label for label, _ in py_shapes]
    for (label, py), (_, js) in zip(py_shapes, js_shapes, strict=True):
        assert js == py, f"{label}: workerd {js} != python {py}"
    assert py_facts["catalog bytes"] and js_facts["catalog bytes"]
    for fact in ("install", "object", "status checks"):
        assert js_facts[fact] == py_facts[fact], fact
    assert js_facts["push"]["sha256"] == py_facts["push"]["sha256"]
    assert js_facts["push"]["key"].endswith("/tenants/acme/state.json")


def test_the_probe_shapes_see_a_difference(both_workers: dict[str, RefWorker]) -> None:
    # The comparison above is only as good as answer_shape: a missing header must show.
    worker = both_workers["workerd"]
    colo = worker.ready["regions"][0]["colo"]
    answer = requests.get(worker.url(colo) + "/_health", timeout=TIMEOUT_S)
    good = answer_shape(answer, colo)
    del answer.headers["cf-ray"]
    assert answer_shape(answer, colo) != good
    assert good["cf-ray colo"] is True and good["date"] is True


def test_the_workerd_regions_have_their_own_kv_and_share_alerts(
    both_workers: dict[str, RefWorker], seed_store: Store
) -> None:
    worker = both_workers["workerd"]
    root = f"snappy-os-ci/{secrets.token_hex(20)}/"
    _seed(seed_store, root)
    in_root = {contract.ROOT_HEADER: root}
    caches = []
    for region in worker.ready["regions"]:
        first = requests.get(region["url"] + "/catalog", headers=in_root, timeout=TIMEOUT_S)
        second = requests.get(region["url"] + "/catalog", headers=in_root, timeout=TIMEOUT_S)
        caches.append((first.headers["x-cache"], second.headers["x-cache"]))
        assert first.headers["cf-ray"].endswith("-" + region["colo"])
    assert caches == [("miss", "hit")] * len(worker.ready["regions"])
    auth = worker.tenant_headers("acme", root)
    last = worker.ready["regions"][-1]["url"]
    assert requests.post(last + "/_heartbeat", headers=auth, timeout=TIMEOUT_S).status_code == 204
    first = worker.ready["regions"][0]["url"]
    status = requests.get(first + "/_status", headers=worker.admin_headers(root), timeout=60)
    assert status.json()["reporting_tenants"] == ["acme"]


def test_workerd_writes_only_under_its_write_prefixes(
    worker_bucket: StoreEndpoint,
    store_server: StoreProcess,
    seed_store: Store,
    tmp_path: Path,
) -> None:
    if _workerd_missing():
        pytest.skip(_workerd_missing())
    # A Worker over one CI prefix (as --target ci starts it) cannot be steered to write elsewhere.
    prefix = f"snappy-os-ci/{secrets.token_hex(20)}/"
    tenant_secret, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    ready = tmp_path / "ready.json"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SYNC_CI_WORKER_STORE_ENDPOINT": worker_bucket.endpoint_url,
        "SYNC_CI_WORKER_BUCKET": worker_bucket.bucket,
        "SYNC_CI_WORKER_ACCESS_KEY_ID": worker_bucket.access_key_id,
        "SYNC_CI_WORKER_SECRET_ACCESS_KEY": worker_bucket.secret_access_key,
        "SYNC_CI_WORKER_TENANT_SECRET": tenant_secret,
        "SYNC_CI_WORKER_ADMIN_TOKEN": admin_token,
    }
    command = [
        *workerd.workerd_command(),
        "--ready-file",
        str(ready),
        "--root",
        "snappy-os/",
        "--write-prefix",
        prefix,
        "--regions",
        "SJC",
    ]
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        url = json.loads(ready.read_text())["regions"][0]["url"]
        headers = {
            "x-sync-tenant": "acme",
            "authorization": f"Bearer {contract.tenant_token(tenant_secret, 'acme')}",
        }
        refused = requests.post(url + "/_push", headers=headers, json={}, timeout=TIMEOUT_S)
        assert refused.status_code == 403, refused.text
        assert "write policy" in refused.json()["error"]
        assert seed_store.get("snappy-os/tenants/acme/state.json") is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
