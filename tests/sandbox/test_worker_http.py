"""Contract v1 endpoints of the reference Worker, over real sockets against a moto bucket."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import stat
import time
from typing import Any

import requests

from sync_ci import __version__, contract
from sync_ci.store import Store
from tests.sandbox.conftest import RefWorker

TIMEOUT = 10
COLOS = ("SJC", "IAD", "FRA", "SIN", "GRU")
TIMING_RE = re.compile(r"(\w+);dur=([0-9.]+)")


def timings(response: requests.Response) -> dict[str, float]:
    """Parse server-timing into {metric: ms}."""
    return {name: float(ms) for name, ms in TIMING_RE.findall(response.headers["server-timing"])}


def get(
    worker: RefWorker, path: str, root: str | None = None, colo: str = "SJC", **kw: Any
) -> requests.Response:
    headers = dict(kw.pop("headers", {}))
    if root:
        headers[contract.ROOT_HEADER] = root
    return requests.get(worker.url(colo) + path, headers=headers, timeout=TIMEOUT, **kw)


def post(worker: RefWorker, path: str, headers: dict[str, str], **kw: Any) -> requests.Response:
    return requests.post(worker.url() + path, headers=headers, timeout=TIMEOUT, **kw)


def seed_catalog(
    store: Store, root: str, files: dict[str, bytes], generation: int = 1
) -> contract.Catalog:
    catalog, blobs = contract.build_catalog(files, generation)
    store.put(
        contract.catalog_key(root), json.dumps(catalog.to_json()).encode(), "application/json"
    )
    for digest, data in blobs.items():
        store.put(contract.object_key(root, digest), data)
    return catalog


def alert_body(
    key: str, check: str = "doctor-failed", message: str = "boom", **extra: Any
) -> dict[str, Any]:
    return {
        "check": check,
        "message": message,
        "host": "h1",
        "version": "0.1.0",
        "ts": "2025-01-01T00:00:00Z",
        "idempotency_key": key,
        **extra,
    }


def assert_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status
    assert isinstance(body["error"], str)
    assert body["error"]
    assert contract.colo_from_ray(response.headers["cf-ray"])


def test_ready_file_is_private_and_names_five_regions(ref_worker: RefWorker) -> None:
    mode = stat.S_IMODE(os.stat(ref_worker.ready_file).st_mode)
    ready = ref_worker.ready
    assert mode == 0o600
    assert ready["pid"] == ref_worker.process.pid
    assert (ready["version"], ready["contract"], ready["root"]) == (__version__, 1, "snappy-os/")
    assert [r["colo"] for r in ready["regions"]] == list(COLOS)
    assert [r["name"] for r in ready["regions"]] == [c.lower() for c in COLOS]
    assert len({r["url"] for r in ready["regions"]}) == 5
    assert all(r["url"].startswith("http://127.0.0.1:") for r in ready["regions"])


def test_health_answers_with_each_regions_colo(ref_worker: RefWorker) -> None:
    for colo in COLOS:
        response = get(ref_worker, "/_health", colo=colo)
        assert response.status_code == 200
        assert response.json() == {
            "ok": True,
            "version": __version__,
            "root": "snappy-os/",
            "contract": 1,
            "colo": colo,
            "catalog_ttl_s": 3.0,
        }
        assert contract.colo_from_ray(response.headers["cf-ray"]) == colo
        assert response.headers["date"]
        assert "total" in timings(response)
        assert "x-cache" not in response.headers


def test_catalog_miss_then_hit_per_region(
    ref_worker: RefWorker, seed_store: Store, worker_root: str
) -> None:
    catalog = seed_catalog(seed_store, worker_root, {"a.txt": b"alpha", "b.bin": b"\x00beta"}, 7)
    first = get(ref_worker, "/catalog", worker_root)
    second = get(ref_worker, "/catalog", worker_root)
    other_region = get(ref_worker, "/catalog", worker_root, colo="GRU")
    assert first.status_code == second.status_code == other_region.status_code == 200
    assert first.json() == catalog.to_json() == second.json()
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    assert other_region.headers["x-cache"] == "miss"
    miss_timing, hit_timing = timings(first), timings(second)
    assert {"kv", "bucket", "total"} <= miss_timing.keys()
    assert "bucket" not in hit_timing
    assert miss_timing["kv"] >= 30  # SJC's cold-miss latency


def test_install_manifest_comes_from_the_cached_catalog(
    ref_worker: RefWorker, seed_store: Store, worker_root: str
) -> None:
    catalog = seed_catalog(seed_store, worker_root, {"tool": b"#!/bin/sh\n"}, 3)
    warm = get(ref_worker, "/catalog", worker_root, colo="IAD")
    install = get(ref_worker, "/install", worker_root, colo="IAD")
    assert warm.status_code == install.status_code == 200
    assert install.headers["x-cache"] == "hit"
    assert install.json() == {**catalog.to_json(), "object_base": "/o/"}


def test_catalog_missing_is_404_and_malformed_is_502(
    ref_worker: RefWorker, seed_store: Store, worker_root: str, ci_sha: str
) -> None:
    assert_error(get(ref_worker, "/catalog", worker_root), 404)
    assert_error(get(ref_worker, "/install", worker_root), 404)
    # The module bucket has nothing under the default root either.
    assert_error(get(ref_worker, "/catalog"), 404)
    bad_root = f"snappy-os-ci/{ci_sha[::-1]}/"
    seed_store.put(
        contract.catalog_key(bad_root), b'{"schema": 1, "generation": -1, "entries": {}}'
    )
    malformed = get(ref_worker, "/catalog", bad_root)
    assert_error(malformed, 502)
    assert "generation" in malformed.json()["error"]
    assert_error(get(ref_worker, "/install", bad_root), 502)


def test_a_missing_catalog_is_not_cached(
    ref_worker: RefWorker, seed_store: Store, worker_root: str
) -> None:
    assert get(ref_worker, "/catalog", worker_root).status_code == 404
    catalog = seed_catalog(seed_store, worker_root, {"late": b"x"})
    assert get(ref_worker, "/catalog", worker_root).json() == catalog.to_json()


def test_objects_are_served_cached_and_checked(
    ref_worker: RefWorker, seed_store: Store, worker_root: str
) -> None:
    data = os.urandom(3000)
    digest = contract.sha256_hex(data)
    seed_store.put(contract.object_key(worker_root, digest), data)
    first = get(ref_worker, f"/o/{digest}", worker_root, colo="FRA")
    second = get(ref_worker, f"/o/{digest}", worker_root, colo="FRA")
    assert first.content == second.content == data
    assert first.headers["content-type"] == "application/octet-stream"
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert contract.colo_from_ray(first.headers["cf-ray"]) == "FRA"

    missing = get(ref_worker, f"/o/{'0' * 64}", worker_root)
    assert_error(missing, 404)
    assert missing.headers["x-cache"] == "miss"
    for bad in ("abc", "A" * 64, "g" * 64):
        assert_error(get(ref_worker, f"/o/{bad}", worker_root), 400)
    liar = "1" * 64
    seed_store.put(contract.object_key(worker_root, liar), b"not what the name says")
    assert_error(get(ref_worker, f"/o/{liar}", worker_root), 502)


def test_probe_nonce_misses_once_per_region_then_hits(ref_worker: RefWorker, ci_sha: str) -> None:
    nonce = f"probe-{ci_sha[:12]}"
    first = get(ref_worker, f"/_probe/kv/{nonce}", colo="SIN")
    second = get(ref_worker, f"/_probe/kv/{nonce}", colo="SIN")
    elsewhere = get(ref_worker, f"/_probe/kv/{nonce}", colo="SJC")
    miss, hit, other = first.json(), second.json(), elsewhere.json()
    assert (miss["cache"], hit["cache"], other["cache"]) == ("miss", "hit", "miss")
    assert (miss["colo"], other["colo"]) == ("SIN", "SJC")
    assert miss["nonce"] == nonce
    assert miss["kv_ms"] >= 90 > hit["kv_ms"]
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    assert contract.colo_from_ray(second.headers["cf-ray"]) == "SIN"
    for bad in ("short", "x" * 129, "bad.nonce!"):
        assert_error(get(ref_worker, f"/_probe/kv/{bad}"), 400)


def test_root_header_accepts_default_and_full_ci_prefixes_only(
    ref_worker: RefWorker, worker_root: str
) -> None:
    assert get(ref_worker, "/_health", "snappy-os/").json()["root"] == "snappy-os/"
    assert get(ref_worker, "/_health", worker_root).json()["root"] == worker_root
    for bad in (
        "other/",
        "snappy-os-ci/",
        "snappy-os-ci/NOTHEX/",
        "snappy-os-ci/abc1234/x/",
        "../",
    ):
        assert_error(get(ref_worker, "/_health", bad), 400)


def test_push_stores_the_exact_body(
    ref_worker: RefWorker, seed_store: Store, worker_root: str
) -> None:
    body = b'{"tenant": "acme", "files": {"a": 1},   "note": "kept byte for byte"}'
    response = post(ref_worker, "/_push", ref_worker.tenant_headers("acme", worker_root), data=body)
    assert response.status_code == 201, response.text
    key = contract.tenant_state_key(worker_root, "acme")
    assert response.json() == {"key": key, "sha256": contract.sha256_hex(body)}
    assert seed_store.get(key) == body


def test_push_refusals(ref_worker: RefWorker, worker_root: str) -> None:
    good = ref_worker.tenant_headers("acme", worker_root)
    root_only = {contract.ROOT_HEADER: worker_root}
    forged = {**good, "authorization": "Bearer " + contract.tenant_token("wrong", "acme")}
    borrowed = {**ref_worker.tenant_headers("other", worker_root), "x-sync-tenant": "acme"}
    for headers in (root_only, forged, borrowed, {**good, "authorization": "Basic abc"}):
        response = post(ref_worker, "/_push", headers, data=b"{}")
        assert_error(response, 401)
    assert_error(post(ref_worker, "/_push", good, data=b'{"tenant": "mallory"}'), 403)
    assert_error(post(ref_worker, "/_push", good, data=b"not json"), 400)
    assert_error(post(ref_worker, "/_push", good, data=b"[1, 2]"), 400)
    assert_error(post(ref_worker, "/_push", good, data=b""), 400)


def test_push_size_limit(ref_worker: RefWorker, worker_root: str) -> None:
    headers = ref_worker.tenant_headers("acme", worker_root)
    filler = "x" * (contract.PUSH_LIMIT_BYTES - len('{"pad": ""}'))
    at_limit = json.dumps({"pad": filler}).encode()
    assert len(at_limit) == contract.PUSH_LIMIT_BYTES
    assert post(ref_worker, "/_push", headers, data=at_limit).status_code == 201
    assert_error(post(ref_worker, "/_push", headers, data=at_limit + b" "), 413)

    def chunked() -> Any:  # no content-length: the Worker must stop reading at the limit
        for _ in range(40):
            yield b" " * 4096

    assert_error(post(ref_worker, "/_push", headers, data=chunked()), 413)


def test_alert_is_stored_once_per_idempotency_key(
    ref_worker: RefWorker, seed_store: Store, worker_root: str
) -> None:
    headers = ref_worker.tenant_headers("acme", worker_root)
    body = alert_body("acme.doctor.1", rows=[{"id": "SA101", "status": "fail"}])
    first = post(ref_worker, "/_alert", headers, json=body)
    again = post(ref_worker, "/_alert", headers, json=body)
    assert (first.status_code, first.json()["stored"]) == (202, True)
    assert (again.status_code, again.json()["stored"]) == (200, False)
    stored = list(seed_store.list(f"{worker_root}_alerts/"))
    assert [o.key for o in stored] == [f"{worker_root}_alerts/acme/acme.doctor.1.json"]
    record = json.loads(seed_store.get(stored[0].key) or b"{}")
    assert record["tenant"] == "acme"
    assert record["rows"] == [{"id": "SA101", "status": "fail"}]
    status = get(ref_worker, "/_status", worker_root, headers=ref_worker.admin_headers()).json()
    assert status["checks"]["doctor-failed"]["count"] == 1


def test_alert_refusals(ref_worker: RefWorker, worker_root: str) -> None:
    headers = ref_worker.tenant_headers("acme", worker_root)
    assert_error(
        post(ref_worker, "/_alert", {contract.ROOT_HEADER: worker_root}, json=alert_body("k")), 401
    )
    assert_error(post(ref_worker, "/_alert", headers, json={"check": "x"}), 400)
    assert_error(post(ref_worker, "/_alert", headers, json=alert_body("bad/key")), 400)
    assert_error(post(ref_worker, "/_alert", headers, json=alert_body("k", rows="nope")), 400)
    # The contract types rows as an array: `null` is refused, not read as "no rows".
    assert_error(post(ref_worker, "/_alert", headers, json=alert_body("k", rows=None)), 400)
    assert_error(post(ref_worker, "/_alert", headers, json=alert_body("k", tenant="mallory")), 403)
    big = alert_body("k", message="m" * contract.ALERT_LIMIT_BYTES)
    assert_error(post(ref_worker, "/_alert", headers, json=big), 413)


def test_alert_rows_are_capped(ref_worker: RefWorker, worker_root: str) -> None:
    headers = ref_worker.tenant_headers("acme", worker_root)
    rows = [{"id": f"r{i}", "detail": "d" * 250} for i in range(30)]
    assert (
        post(ref_worker, "/_alert", headers, json=alert_body("rows.1", rows=rows)).status_code
        == 202
    )
    status = get(ref_worker, "/_status", worker_root, headers=ref_worker.admin_headers()).json()
    kept = status["checks"]["doctor-failed"]["last_rows"]
    assert len(kept) == 20
    assert all(len(row["detail"]) == 200 for row in kept)


def test_alert_rate_limit_is_per_tenant(ref_worker: RefWorker, worker_root: str) -> None:
    noisy = ref_worker.tenant_headers("noisy", worker_root)
    started = time.monotonic()
    answers = [
        post(ref_worker, "/_alert", noisy, json=alert_body(f"n{i}")).status_code for i in range(30)
    ]
    assert answers == [202] * 30  # the burst allowance
    # Tokens refill at 0.5/s, so a slow (loaded) machine earns a few more 202s before the 429:
    # never more than the refill over the time the posts really took.
    limited = None
    for i in range(30, 200):
        limited = post(ref_worker, "/_alert", noisy, json=alert_body(f"n{i}"))
        if limited.status_code == 429:
            break
        assert limited.status_code == 202
        answers.append(202)
    elapsed = time.monotonic() - started
    assert limited is not None
    assert_error(limited, 429)
    assert len(answers) <= 30 + math.ceil(elapsed * 30 / 60) + 1
    assert int(limited.headers["retry-after"]) >= 1
    # A key already stored is still acknowledged, and other tenants are unaffected.
    assert post(ref_worker, "/_alert", noisy, json=alert_body("n0")).status_code == 200
    quiet = ref_worker.tenant_headers("quiet", worker_root)
    assert post(ref_worker, "/_alert", quiet, json=alert_body("q0")).status_code == 202


def test_status_aggregates_by_check(ref_worker: RefWorker, worker_root: str) -> None:
    for tenant, key, check, message in (
        ("zeta", "z1", "doctor-failed", "first"),
        ("alpha", "a1", "doctor-failed", "second"),
        ("alpha", "a2", "cron-missing", "no cron line"),
    ):
        headers = ref_worker.tenant_headers(tenant, worker_root)
        assert (
            post(ref_worker, "/_alert", headers, json=alert_body(key, check, message)).status_code
            == 202
        )
    unauthorised = get(ref_worker, "/_status", worker_root)
    wrong = get(ref_worker, "/_status", worker_root, headers={"authorization": "Bearer nope"})
    assert_error(unauthorised, 401)
    assert_error(wrong, 401)
    status = get(ref_worker, "/_status", worker_root, headers=ref_worker.admin_headers()).json()
    doctor = status["checks"]["doctor-failed"]
    assert status["root"] == worker_root
    assert status["alert_count"] == 3
    assert (doctor["count"], doctor["tenants"], doctor["tenant_count"]) == (2, ["alpha", "zeta"], 2)
    assert doctor["last_message"] == "second"
    assert doctor["first_seen"] <= doctor["last_seen"]
    assert status["checks"]["cron-missing"]["tenants"] == ["alpha"]
    assert status["silent_tenants"] == []
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["generated_at"])


def test_heartbeat_and_silent_tenants_via_the_clock(
    ref_worker: RefWorker, worker_root: str
) -> None:
    admin = ref_worker.admin_headers()
    for tenant in ("quiet", "chatty"):
        beat = post(ref_worker, "/_heartbeat", ref_worker.tenant_headers(tenant, worker_root))
        assert beat.status_code == 204
        assert beat.content == b""
    assert_error(post(ref_worker, "/_heartbeat", {contract.ROOT_HEADER: worker_root}), 401)
    try:
        moved = requests.post(
            ref_worker.url() + "/_sandbox/clock",
            json={"offset_s": 13 * 3600},
            headers=admin,
            timeout=TIMEOUT,
        )
        assert moved.status_code == 200
        assert moved.json()["offset_s"] == 13 * 3600
        post(ref_worker, "/_heartbeat", ref_worker.tenant_headers("chatty", worker_root))
        status = get(ref_worker, "/_status", worker_root, headers=admin).json()
    finally:
        requests.post(
            ref_worker.url() + "/_sandbox/clock",
            json={"offset_s": 0},
            headers=admin,
            timeout=TIMEOUT,
        )
    assert [t["tenant"] for t in status["silent_tenants"]] == ["quiet"]
    assert status["silent_tenants"][0]["silent_for_s"] >= 13 * 3600
    assert status["reporting_tenants"] == ["chatty"]
    after = get(ref_worker, "/_status", worker_root, headers=admin).json()
    assert after["silent_tenants"] == []


def test_status_html_is_escaped_and_failing_checks_first(
    ref_worker: RefWorker, worker_root: str
) -> None:
    headers = ref_worker.tenant_headers("acme", worker_root)
    body = alert_body("html.1", check="doctor-failed", message="<script>alert(1)</script>")
    assert post(ref_worker, "/_alert", headers, json=body).status_code == 202
    page = get(
        ref_worker,
        "/_status",
        worker_root,
        headers={**ref_worker.admin_headers(), "accept": "text/html"},
    )
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "<title>Sync status</title>" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>" not in text
    # The page `sync-ci status --html` draws, from this Worker's /_status document alone.
    assert 'id="passes"' not in text
    assert text.index('id="alerts"') < text.index('id="silent"') < text.index('id="checks"')
    row = text[text.index('id="checks"') :]
    assert row.index('data-status="fail"') < row.index("doctor-failed")


def test_unknown_path_and_wrong_method_are_json_errors(ref_worker: RefWorker) -> None:
    assert_error(get(ref_worker, "/nope"), 404)
    wrong = get(ref_worker, "/_push")
    assert_error(wrong, 405)
    assert "POST" in wrong.headers["allow"]


def test_burst_of_installs_and_pushes(
    ref_worker: RefWorker, seed_store: Store, worker_root: str
) -> None:
    """1,000 concurrent GET /install plus 100 POST /_push on loopback, no errors."""
    import aiohttp

    seed_catalog(seed_store, worker_root, {"app": b"payload"})
    url = ref_worker.url("IAD")
    root_header = {contract.ROOT_HEADER: worker_root}
    pushes = [ref_worker.tenant_headers(f"t{i}", worker_root) for i in range(100)]
    payload = json.dumps({"pad": "p" * 10_000}).encode()

    async def burst() -> list[int]:
        timeout = aiohttp.ClientTimeout(total=60)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(method: str, headers: dict[str, str], data: bytes | None) -> int:
                async with session.request(
                    method, url + path_for[method], headers=headers, data=data
                ) as r:
                    await r.read()
                    return r.status

            path_for = {"GET": "/install", "POST": "/_push"}
            jobs = [one("GET", root_header, None) for _ in range(1000)]
            jobs += [one("POST", headers, payload) for headers in pushes]
            return list(await asyncio.gather(*jobs))

    statuses = asyncio.run(burst())
    assert statuses.count(200) == 1000
    assert statuses.count(201) == 100
