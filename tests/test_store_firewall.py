"""The test firewall (tests/conftest.py): a client that gets past the lint still cannot write
outside its test's prefix, on the real object store over 127.0.0.1."""

from __future__ import annotations

import secrets
from typing import Any

import boto3
import pytest

from sync_ci import guards
from sync_ci.errors import GuardViolation
from sync_ci.store import Store, StoreEndpoint, build_client


def raw_client(endpoint: StoreEndpoint) -> Any:
    """A boto3 client built the way a careless test would: no sync-ci guard of its own."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=endpoint.access_key_id,
        aws_secret_access_key=endpoint.secret_access_key,
    )


def keys(admin_store: Store) -> list[str]:
    return sorted(o.key for o in admin_store.list(""))


def test_a_raw_client_writes_only_under_its_tests_prefix(
    store_endpoint: StoreEndpoint, admin_store: Store, ci_sha: str
) -> None:
    s3, bucket = raw_client(store_endpoint), store_endpoint.bucket
    own = f"snappy-os-ci/{ci_sha}/ok"
    s3.put_object(Bucket=bucket, Key=own, Body=b"x")  # sync-ci: allow SA001 (the allowed write)
    other = f"snappy-os-ci/{secrets.token_hex(20)}/x"
    for key in ("snappy-os/catalog.json", other, "snappy-os-ci/x", f"snappy-os-ci/{ci_sha}"):
        with pytest.raises(GuardViolation, match="test firewall"):
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    with pytest.raises(GuardViolation, match="test firewall"):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "snappy-os/a"}]})
    with pytest.raises(GuardViolation, match="test firewall"):
        s3.copy_object(Bucket=bucket, Key="snappy-os/b", CopySource=f"{bucket}/{own}")
    with pytest.raises(GuardViolation, match="test firewall"):
        s3.delete_bucket(Bucket=bucket)
    with pytest.raises(GuardViolation, match="test firewall"):
        getattr(s3, "put_object")(Bucket=bucket, Key="snappy-os/c", Body=b"")  # noqa: B009
    assert keys(admin_store) == [own]  # nothing refused reached the store
    assert s3.get_object(Bucket=bucket, Key=own)["Body"].read() == b"x"


def test_a_test_without_a_sha_may_not_write_at_all(store_endpoint: StoreEndpoint) -> None:
    s3 = raw_client(store_endpoint)
    with pytest.raises(GuardViolation, match="read-only"):
        s3.put_object(Bucket=store_endpoint.bucket, Key="snappy-os-ci/0123abc/x", Body=b"")


def test_a_guarded_client_with_a_production_shaped_prefix_is_refused(
    store_endpoint: StoreEndpoint, admin_store: Store
) -> None:
    # The store's own guard allows what its (hand-made) policy names; the firewall does not.
    prefix = f"snappy-os/{secrets.token_hex(4)}/"
    client = build_client(store_endpoint, guards.prefix_policy(store_endpoint.bucket, prefix))
    with pytest.raises(GuardViolation, match="test firewall"):
        client.put_object(Bucket=store_endpoint.bucket, Key=f"{prefix}x", Body=b"")
    assert keys(admin_store) == []


def test_guarded_ci_clients_and_the_admin_client_keep_working(
    store_endpoint: StoreEndpoint, admin_store: Store, ci_store: Store, ci_sha: str
) -> None:
    ci_store.put(f"snappy-os-ci/{ci_sha}/a", b"a")
    guarded = build_client(
        store_endpoint, guards.prefix_policy(store_endpoint.bucket, "snappy-os-ci/abc1234/")
    )
    guarded.put_object(Bucket=store_endpoint.bucket, Key="snappy-os-ci/abc1234/b", Body=b"")
    admin_store.put("snappy-os/catalog.json", b"{}")  # the sandbox's stand-in for production
    assert keys(admin_store) == sorted(
        ["snappy-os-ci/abc1234/b", f"snappy-os-ci/{ci_sha}/a", "snappy-os/catalog.json"]
    )


@pytest.mark.unguarded_store
def test_the_opt_out_marker_lifts_the_firewall(
    store_endpoint: StoreEndpoint, admin_store: Store
) -> None:
    s3 = raw_client(store_endpoint)
    s3.put_object(Bucket=store_endpoint.bucket, Key="snappy-os/x", Body=b"")  # sync-ci: allow SA001
    assert keys(admin_store) == ["snappy-os/x"]
