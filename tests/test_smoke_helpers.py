"""The smoke's pure helpers with plain values: file set, cf-ray, refusals, pull plan, sampling."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from sync_ci.contract import Catalog, CatalogEntry
from sync_ci.errors import ContractError, WorkerError
from sync_ci.smoke_catalog import declared_bound, served_catalog, smoke_files
from sync_ci.smoke_mirror import canonical_catalog, plan_pull, sample_entries
from sync_ci.smoke_run import FRESHNESS_BOUND_S, PhaseFailed, check_ray
from sync_ci.smoke_tenant import refused
from sync_ci.worker import Answer

SHA = "0123abc"
RAY = "0123456789abcdef-FRA"


def answer(status: int = 200, body: object = b"", **headers: str) -> Answer:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Answer(
        status=status,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
        body=data,
        elapsed_s=0.0,
        url="http://127.0.0.1:1/catalog",
    )


def catalog(*names: str) -> Catalog:
    return Catalog(
        generation=3,
        entries=tuple(
            CatalogEntry(name=n, sha256=hashlib.sha256(n.encode()).hexdigest(), size=len(n))
            for n in names
        ),
    )


def test_smoke_files_hold_one_file_unique_to_the_run() -> None:
    one, two = smoke_files(SHA, "n1"), smoke_files(SHA, "n2")
    assert set(one) == set(two)
    differing = [name for name in one if one[name] != two[name]]
    assert differing == ["run/nonce.txt"]
    assert one["run/nonce.txt"] == f"{SHA} n1\n".encode()
    assert one["share/empty"] == b""  # the empty file is a case of its own
    assert any(not name.isascii() for name in one)


def test_declared_bound_clamps_to_the_contract() -> None:
    assert declared_bound(12.5) == 12.5
    assert declared_bound(FRESHNESS_BOUND_S * 10) == FRESHNESS_BOUND_S
    assert declared_bound(False) == FRESHNESS_BOUND_S


def test_check_ray_accepts_the_region_it_asked() -> None:
    assert check_ray(answer(cf_ray=RAY), "FRA", "GET /catalog") == RAY
    assert check_ray(answer(cf_ray=RAY), "", "GET /catalog") == RAY


@pytest.mark.parametrize(
    ("ray", "colo", "message"),
    [
        ("", "", "cf-ray ''"),
        ("0123456789ABCDEF-FRA", "", "16 lowercase hex"),
        ("0123456789abcdef", "", "16 lowercase hex"),
        (RAY, "SIN", "via the SIN region answered with cf-ray 0123456789abcdef-FRA (colo FRA)"),
    ],
)
def test_check_ray_fails_a_malformed_or_foreign_ray(ray: str, colo: str, message: str) -> None:
    served = answer(cf_ray=ray) if ray else answer()
    with pytest.raises(PhaseFailed, match=re.escape(message)):
        check_ray(served, colo, "GET /catalog")


def test_served_catalog_reads_v1_and_treats_404_as_not_yet() -> None:
    document = {"schema": 1, "generation": 7, "entries": {"a": {"sha256": "e" * 64, "size": 1}}}
    parsed = served_catalog(answer(200, document), "/catalog")
    assert parsed == Catalog(
        generation=7, entries=(CatalogEntry(name="a", sha256="e" * 64, size=1),)
    )
    # /install carries more keys; only the catalog's are read.
    assert served_catalog(answer(200, {**document, "objects": "/o/"}), "/install") == parsed
    assert served_catalog(answer(404, {"error": "no catalog"}), "/catalog") is None


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, {"schema": 2, "generation": 1, "entries": {}}, ContractError),
        (200, ["not", "an", "object"], ContractError),
        (200, {"schema": 1, "generation": -1, "entries": {}}, ContractError),
        (500, {"error": "boom"}, WorkerError),
    ],
)
def test_served_catalog_refuses_what_is_not_a_v1_catalog(
    status: int, body: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        served_catalog(answer(status, body), "/catalog")


def test_refused_passes_the_wanted_status_and_names_the_reason() -> None:
    assert refused(answer(401, {"error": "bad token"}), 401, "a wrong token") == (
        "sent a wrong token; got 401 (bad token)"
    )
    with pytest.raises(PhaseFailed, match=r"sent a wrong token; got 201, contract v1 wants 401"):
        refused(answer(201, b""), 401, "a wrong token")


def test_canonical_catalog_ignores_formatting_only() -> None:
    pretty = b'{\n  "generation": 1,\n  "schema": 1, "entries": {}\n}'
    assert canonical_catalog(pretty) == canonical_catalog(
        b'{"schema":1,"entries":{},"generation":1}'
    )
    assert canonical_catalog(pretty) != canonical_catalog(
        b'{"schema":1,"entries":{},"generation":2}'
    )
    with pytest.raises(ContractError, match="catalog is not valid JSON"):
        canonical_catalog(b"{")


def test_plan_pull_counts_add_update_keep() -> None:
    cat = catalog("new", "absent", "same", "changed")
    same = cat.entries[2].sha256
    mirror: dict[str, str | None] = {"absent": "missing", "same": same, "changed": "0" * 64}
    assert plan_pull(cat, mirror) == {"add": 2, "update": 1, "keep": 1}
    assert plan_pull(catalog(), {}) == {"add": 0, "update": 0, "keep": 0}


def test_sample_entries_spreads_evenly_and_zero_means_all() -> None:
    cat = catalog(*(f"f{i:02d}" for i in range(10)))
    assert [e.name for e in sample_entries(cat, 5)] == ["f00", "f02", "f04", "f06", "f08"]
    assert [e.name for e in sample_entries(cat, 3)] == ["f00", "f03", "f06"]
    assert sample_entries(cat, 0) == cat.entries
    assert sample_entries(cat, 10) == sample_entries(cat, 99) == cat.entries
    assert sample_entries(cat, -1) == cat.entries
