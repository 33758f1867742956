"""The prefix firewall and read-only guard refuse before a byte leaves the process."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from sync_ci import guards
from sync_ci.errors import GuardViolation
from sync_ci.store import Store, StoreEndpoint, build_client, open_store
from sync_ci.worker import WorkerClient, WorkerTarget

BUCKET = "guarded-bucket"
READS = frozenset({"GET", "HEAD"})


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 200 to everything and records each request line it received."""

    seen: list[str]

    def _answer(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _answer

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request line reaching it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def dummy(shape: Any, name: str, key: str) -> Any:
    """Build a plausible value for a botocore shape (required members only)."""
    if name == "Bucket":
        return BUCKET
    if name in ("Key", "CopySource"):
        return key if name == "Key" else f"{BUCKET}/{key}"
    kind = shape.type_name
    if kind == "structure":
        return {m: dummy(shape.members[m], m, key) for m in shape.required_members}
    if kind == "list":
        return [dummy(shape.member, "", key)]
    if kind in ("integer", "long"):
        return 1
    if kind == "boolean":
        return False
    if kind == "blob":
        return b"x"
    if kind == "timestamp":
        return datetime.now(UTC)
    if kind == "map":
        return {}
    return "x"


def mutating_operations() -> list[tuple[str, str]]:
    """Every S3 operation whose HTTP method is not GET or HEAD, with its method."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("s3")
    ops = []
    for name in model.operation_names:
        method = model.operation_model(name).http.get("method", "POST")
        if method not in READS:
            ops.append((name, method))
    return ops


MUTATING = mutating_operations()


def params_for(operation: str, key: str) -> dict[str, Any]:
    """Required parameters for an operation, with `key` as its object key."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("s3").operation_model(operation)
    params = dummy(model.input_shape, "", key) if model.input_shape is not None else {}
    if operation == "DeleteObjects":
        params["Delete"] = {"Objects": [{"Key": key}]}
    return dict(params)


def call(client: Any, operation: str, params: dict[str, Any]) -> None:
    """Invoke an operation by its API name."""
    method = client.meta.method_to_api_mapping
    python_name = next(k for k, v in method.items() if v == operation)
    getattr(client, python_name)(**params)


def endpoint(url: str) -> StoreEndpoint:
    return StoreEndpoint(
        bucket=BUCKET,
        endpoint_url=url,
        region_name="us-east-1",
        access_key_id="k",
        secret_access_key="s",
    )


def test_model_has_many_mutating_operations() -> None:
    names = {name for name, _ in MUTATING}
    assert {
        "PutObject",
        "DeleteObjects",
        "CreateMultipartUpload",
        "PutBucketPolicy",
        "PutBucketLifecycleConfiguration",
        "PutBucketVersioning",
        "PutBucketCors",
    } <= names
    assert len(MUTATING) > 50


def refused_all(client: Any, key: str) -> list[str]:
    """Try every mutating operation; return the ones that were NOT refused by the guard."""
    leaked = []
    for operation, method in MUTATING:
        try:
            call(client, operation, params_for(operation, key))
        except GuardViolation:
            continue
        except Exception as exc:  # anything else means the request was built and maybe sent
            leaked.append(f"{operation} {method}: {type(exc).__name__}")
        else:
            leaked.append(f"{operation} {method}: sent")
    return leaked


def test_read_only_refuses_every_mutating_operation(recorder: tuple[str, list[str]]) -> None:
    url, seen = recorder
    client = build_client(endpoint(url), guards.read_only_policy())
    assert refused_all(client, "snappy-os/catalog.json") == []
    assert refused_all(client, "snappy-os-ci/abc1234/x") == []
    assert seen == []


def test_ci_prefix_refuses_every_write_outside_it(recorder: tuple[str, list[str]]) -> None:
    url, seen = recorder
    client = build_client(endpoint(url), guards.prefix_policy(BUCKET, "snappy-os-ci/abc1234/"))
    assert refused_all(client, "snappy-os/catalog.json") == []
    assert refused_all(client, "snappy-os-ci/abc1235/x") == []
    assert seen == []


def test_ci_prefix_allows_only_reviewed_writes_inside_it(recorder: tuple[str, list[str]]) -> None:
    url, seen = recorder
    client = build_client(endpoint(url), guards.prefix_policy(BUCKET, "snappy-os-ci/abc1234/"))
    allowed: set[str] = set()
    unparsed: list[str] = []
    for operation, _method in MUTATING:
        try:
            call(client, operation, params_for(operation, "snappy-os-ci/abc1234/x"))
        except GuardViolation:
            continue
        except (
            Exception
        ) as exc:  # the stand-in server's empty answers do not parse for every operation
            unparsed.append(f"{operation}: {type(exc).__name__}")
        allowed.add(operation)
    assert allowed <= set(guards.KEYED_WRITE_OPS), allowed - set(guards.KEYED_WRITE_OPS)
    assert {"PutObject", "DeleteObjects", "CreateMultipartUpload"} <= allowed
    assert len(seen) >= len(allowed)


@pytest.mark.parametrize(
    "key",
    [
        "snappy-os-ci/abc1235/x",
        "snappy-os-ci/abc1234",
        "snappy-os-ci/abc1234/../x",
        "snappy-os-ci/abc1234//x",
        "/snappy-os-ci/abc1234/x",
        "snappy-os-cix/abc1234/x",
    ],
)
def test_ci_prefix_refuses_lookalike_keys(key: str, recorder: tuple[str, list[str]]) -> None:
    url, seen = recorder
    client = build_client(endpoint(url), guards.prefix_policy(BUCKET, "snappy-os-ci/abc1234/"))
    with pytest.raises(GuardViolation):
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    assert seen == []


def test_bucket_settings_refused_inside_prefix_too(recorder: tuple[str, list[str]]) -> None:
    url, seen = recorder
    client = build_client(endpoint(url), guards.prefix_policy(BUCKET, "snappy-os-ci/abc1234/"))
    for operation in (
        "PutBucketPolicy",
        "PutBucketLifecycleConfiguration",
        "PutBucketVersioning",
        "PutBucketCors",
        "DeleteBucket",
        "PutObjectAcl",
        "PutObjectLegalHold",
    ):
        with pytest.raises(GuardViolation):
            call(client, operation, params_for(operation, "snappy-os-ci/abc1234/x"))
    assert seen == []


def test_other_bucket_refused(recorder: tuple[str, list[str]]) -> None:
    url, seen = recorder
    client = build_client(endpoint(url), guards.prefix_policy(BUCKET, "snappy-os-ci/abc1234/"))
    with pytest.raises(GuardViolation):
        client.put_object(Bucket="someone-else", Key="snappy-os-ci/abc1234/x", Body=b"x")
    assert seen == []


def test_presigned_writes_refused_reads_allowed(recorder: tuple[str, list[str]]) -> None:
    url, _ = recorder
    for policy in (
        guards.read_only_policy(),
        guards.prefix_policy(BUCKET, "snappy-os-ci/abc1234/"),
    ):
        client = build_client(endpoint(url), policy)
        with pytest.raises(GuardViolation):
            client.generate_presigned_url(
                "put_object", Params={"Bucket": BUCKET, "Key": "snappy-os-ci/abc1234/x"}
            )
        with pytest.raises(GuardViolation):
            client.generate_presigned_url(
                "get_object",
                Params={"Bucket": BUCKET, "Key": "snappy-os-ci/abc1234/x"},
                HttpMethod="PUT",
            )
        with pytest.raises(GuardViolation):
            client.generate_presigned_post(BUCKET, "snappy-os-ci/abc1234/x")
        assert "X-Amz-Signature" in client.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": "snappy-os/catalog.json"}
        )


def test_cleanup_policy_deletes_only_under_a_full_sha_prefix(
    recorder: tuple[str, list[str]],
) -> None:
    url, seen = recorder
    client = build_client(endpoint(url), guards.cleanup_policy(BUCKET, "snappy-os-ci/"))
    for key in (
        "snappy-os/catalog.json",
        "snappy-os-ci/not-hex/x",
        "snappy-os-ci/loose",
        "snappy-os-ci/abc1234/",
    ):
        with pytest.raises(GuardViolation):
            client.delete_objects(
                Bucket=BUCKET, Delete={"Objects": [{"Key": "snappy-os-ci/abc1234/a"}, {"Key": key}]}
            )
    with pytest.raises(GuardViolation):
        client.put_object(Bucket=BUCKET, Key="snappy-os-ci/abc1234/x", Body=b"x")
    with pytest.raises(GuardViolation):
        client.put_bucket_lifecycle_configuration(
            Bucket=BUCKET, LifecycleConfiguration={"Rules": []}
        )
    assert seen == []
    client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "snappy-os-ci/abc1234/a"}]})
    assert len(seen) == 1 and seen[0].startswith("POST")


def test_admin_policy_only_for_loopback() -> None:
    with pytest.raises(GuardViolation):
        build_client(endpoint("https://fra1.digitaloceanspaces.com"), guards.sandbox_admin_policy())


@pytest.mark.strict_store
def test_real_store_unchanged_by_refused_writes(
    store_endpoint: StoreEndpoint, admin_store: Store, ci_sha: str
) -> None:
    admin_store.put("snappy-os/catalog.json", b"{}")
    before = [(o.key, o.etag) for o in admin_store.list("")]
    live = open_store(store_endpoint, guards.read_only_policy())
    ci = open_store(
        store_endpoint, guards.prefix_policy(store_endpoint.bucket, f"snappy-os-ci/{ci_sha}/")
    )
    for store in (live, ci):
        with pytest.raises(GuardViolation):
            store.put("snappy-os/catalog.json", b"overwritten")
        with pytest.raises(GuardViolation):
            store.delete_many(["snappy-os/catalog.json"])
    assert [(o.key, o.etag) for o in admin_store.list("")] == before
    assert live.get("snappy-os/catalog.json") == b"{}"
    ci.put(f"snappy-os-ci/{ci_sha}/ok", b"1")
    assert admin_store.get(f"snappy-os-ci/{ci_sha}/ok") == b"1"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_read_only_worker_client_refuses_non_get(
    method: str, recorder: tuple[str, list[str]]
) -> None:
    url, seen = recorder
    with WorkerClient(WorkerTarget(base_url=url, read_only=True)) as client:
        with pytest.raises(GuardViolation):
            client.request(method, "/_alert", json_body={})
        with pytest.raises(GuardViolation):  # the connection itself refuses it, too
            client.connection().request(method, "/_push")
        assert seen == []
        assert client.get("/catalog").status == 200
    assert seen == ["GET /catalog"]


def test_writing_worker_client_allows_only_listed_posts(recorder: tuple[str, list[str]]) -> None:
    url, seen = recorder
    with WorkerClient(
        WorkerTarget(base_url=url, read_only=False, allowed_posts=("/_alert",))
    ) as client:
        assert client.post("/_alert", json_body={}).status == 200
        for method, path in (("POST", "/_push"), ("PUT", "/_alert"), ("DELETE", "/catalog")):
            with pytest.raises(GuardViolation):
                client.request(method, path)
        with pytest.raises(GuardViolation):  # past the client, the connection refuses it
            client.connection().request("POST", "/_push")
    assert seen == ["POST /_alert"]


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a/.", "a\\b", "a\nb"])
def test_validate_key_refuses(key: str) -> None:
    with pytest.raises(GuardViolation):
        guards.validate_key(key)


@pytest.mark.parametrize("sha", ["", "abc", "ABCDEF1", "g123456", "a" * 41, "abc1234/"])
def test_ci_prefix_refuses_bad_sha(sha: str) -> None:
    with pytest.raises(GuardViolation):
        guards.ci_prefix("snappy-os-ci/", sha)
    assert not guards.is_full_ci_prefix(f"snappy-os-ci/{sha}/", "snappy-os-ci/")


def test_full_ci_prefix() -> None:
    assert guards.ci_prefix("snappy-os-ci/", "abc1234") == "snappy-os-ci/abc1234/"
    assert guards.is_full_ci_prefix("snappy-os-ci/" + "f" * 40 + "/", "snappy-os-ci/")
    assert not guards.is_full_ci_prefix("snappy-os-ci/", "snappy-os-ci/")


@pytest.mark.parametrize(
    "build",
    [
        lambda: guards.WritePolicy(read_only=False),
        lambda: guards.WritePolicy(read_only=False, write_prefixes=("",)),
        lambda: guards.WritePolicy(read_only=False, write_prefixes=("snappy-os-ci",)),
        lambda: guards.WritePolicy(read_only=False, write_prefixes=("ok/", "a/../b/")),
        lambda: guards.WritePolicy(read_only=False, cleanup_root="/"),
        lambda: guards.WritePolicy(
            read_only=False, cleanup_root="snappy-os-ci/", write_prefixes=("x/",)
        ),
        lambda: guards.prefix_policy(BUCKET, ""),
        lambda: guards.prefix_policy(BUCKET, "snappy-os-ci/abc1234"),
        lambda: guards.cleanup_policy(BUCKET, ""),
        lambda: guards.cleanup_policy(BUCKET, "snappy-os-ci"),
    ],
)
def test_a_write_policy_refuses_an_empty_or_partial_prefix(build: Any) -> None:
    with pytest.raises(GuardViolation, match="refused write p"):
        build()


def test_a_hand_built_empty_prefix_policy_cannot_allow_every_key() -> None:
    # Before the check, WritePolicy(write_prefixes=("",)) let any key through.
    with pytest.raises(GuardViolation):
        guards.WritePolicy(read_only=False, bucket=BUCKET, write_prefixes=("",))
    assert guards.WritePolicy().read_only
    assert guards.sandbox_admin_policy().loopback_admin


@pytest.mark.parametrize(
    ("url", "allow_path", "problem"),
    [
        ("https://fra1.digitaloceanspaces.com", False, ""),
        ("http://127.0.0.1:9000/", False, ""),
        ("https://sync.example.com/base", True, ""),
        ("https://sync.example.com/base", False, "has a path"),
        ("https://u:p@host", True, "user info"),
        ("https://host/?a=1", True, "query"),
        ("https://host/#x", True, "fragment"),
        ("https://host?", True, "query"),
        ("ftp://host", True, "https://host"),
        ("https://host:99999", True, "not a valid URL"),
        ("https://host/a//b", True, "segment"),
        ("https://host/a/../b", True, "segment"),
        ("https://host/a b", True, "whitespace"),
    ],
)
def test_url_problem(url: str, allow_path: bool, problem: str) -> None:
    found = guards.url_problem(url, allow_path=allow_path)
    assert (problem in found) if problem else found == ""
    assert "p@" not in found


def test_display_url_hides_user_info() -> None:
    assert guards.display_url("https://AKID:pw@host:1/x") == "https://***@host:1/x"
    assert guards.display_url("https://host/x") == "https://host/x"
