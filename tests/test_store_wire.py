"""The guard judges the request that goes on the wire: a recording proxy in front of the store."""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sync_ci import guards
from sync_ci.errors import GuardViolation, SettingsError
from sync_ci.sandbox.store_server import StoreProcess
from sync_ci.store import Store, StoreEndpoint, build_client, open_store
from tests.test_config import run_sync_ci

READS = frozenset({"GET", "HEAD"})


@dataclass(slots=True)
class Recording:
    """What reached the proxy: (method, raw path) of every request, in order."""

    url: str
    seen: list[tuple[str, str]] = field(default_factory=list)

    def writes(self) -> list[tuple[str, str]]:
        """Every request that was not a GET or HEAD."""
        return [(method, path) for method, path in self.seen if method not in READS]


class Forwarder(http.server.BaseHTTPRequestHandler):
    """Records each request, then forwards it unchanged to the store and relays the answer."""

    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        server: Any = self.server
        server.recording.seen.append((self.command, self.path))
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(server.upstream, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def proxy(store_server: StoreProcess) -> Iterator[Recording]:
    """A recording HTTP proxy on 127.0.0.1 in front of the test store."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forwarder)
    server.daemon_threads = True
    recording = Recording(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.recording = recording  # type: ignore[attr-defined]
    server.upstream = urlsplit(store_server.endpoint_url).netloc  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recording
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def via_proxy(store_endpoint: StoreEndpoint, proxy: Recording) -> StoreEndpoint:
    """This test's bucket, reached through the recording proxy."""
    return replace(store_endpoint, endpoint_url=proxy.url)


def test_proxy_sees_an_allowed_write(
    via_proxy: StoreEndpoint, proxy: Recording, admin_store: Store, ci_sha: str
) -> None:
    key = f"snappy-os-ci/{ci_sha}/ok"
    ci = open_store(via_proxy, guards.prefix_policy(via_proxy.bucket, f"snappy-os-ci/{ci_sha}/"))
    ci.put(key, b"1")
    ci.delete_many([key])
    assert proxy.writes() == [
        ("PUT", f"/{via_proxy.bucket}/{key}"),
        ("POST", f"/{via_proxy.bucket}?delete"),
    ]


@pytest.mark.parametrize(
    "suffix", ["/snappy-os", "/other-bucket/snappy-os/", "/?x=1", "/#f", "?x", "/a/../b"]
)
def test_endpoint_with_a_path_is_refused_by_the_builder(
    via_proxy: StoreEndpoint, proxy: Recording, suffix: str, ci_sha: str
) -> None:
    moved = replace(via_proxy, endpoint_url=proxy.url + suffix)
    with pytest.raises(SettingsError, match="endpoint_url") as caught:
        build_client(moved, guards.prefix_policy(moved.bucket, f"snappy-os-ci/{ci_sha}/"))
    assert "\n" not in str(caught.value)
    assert proxy.seen == []


def test_endpoint_user_info_is_refused_and_never_shown(via_proxy: StoreEndpoint) -> None:
    with_user = via_proxy.endpoint_url.replace("http://", "http://AKIDWIRE:wire-pass-123@")
    with pytest.raises(SettingsError, match="user info") as caught:
        build_client(replace(via_proxy, endpoint_url=with_user), guards.read_only_policy())
    assert "wire-pass-123" not in str(caught.value) and "AKIDWIRE" not in str(caught.value)


def rewrite_url_before_call(client: Any, old: str, new: str) -> None:
    """A hook registered after the guard that moves the request to another key on the wire."""

    def before_call(params: dict[str, Any], **_: Any) -> None:
        params["url"] = params["url"].replace(old, new)

    client.meta.events.register("before-call.s3", before_call)


def rewrite_url_before_sign(client: Any, old: str, new: str) -> None:
    """A signing hook that runs after the guard's own and rewrites the final URL."""

    def before_sign(request: Any, **_: Any) -> None:
        request.url = request.url.replace(old, new)

    client.meta.events.register("before-sign.s3", before_sign)


@pytest.mark.parametrize("rewrite", [rewrite_url_before_call, rewrite_url_before_sign])
def test_a_write_moved_on_the_wire_is_refused(
    via_proxy: StoreEndpoint, proxy: Recording, admin_store: Store, ci_sha: str, rewrite: Any
) -> None:
    prefix = f"snappy-os-ci/{ci_sha}/"
    client = build_client(via_proxy, guards.prefix_policy(via_proxy.bucket, prefix))
    rewrite(client, f"/{prefix}", "/snappy-os/")
    with pytest.raises(GuardViolation, match=r"snappy-os/catalog\.json") as caught:
        client.put_object(Bucket=via_proxy.bucket, Key=f"{prefix}catalog.json", Body=b"x")
    assert "\n" not in str(caught.value)
    assert proxy.writes() == []
    assert admin_store.get("snappy-os/catalog.json") is None


def test_a_write_turned_into_another_sub_resource_on_the_wire_is_refused(
    via_proxy: StoreEndpoint, proxy: Recording, ci_sha: str
) -> None:
    prefix = f"snappy-os-ci/{ci_sha}/"
    client = build_client(via_proxy, guards.prefix_policy(via_proxy.bucket, prefix))

    def add_acl(request: Any, **_: Any) -> None:
        request.url += ("&" if "?" in request.url else "?") + "acl="

    client.meta.events.register("before-sign.s3", add_acl)
    with pytest.raises(GuardViolation, match="adds acl to the query"):
        client.put_object(Bucket=via_proxy.bucket, Key=f"{prefix}x", Body=b"x")
    assert proxy.writes() == []


def test_a_write_moved_to_another_bucket_on_the_wire_is_refused(
    via_proxy: StoreEndpoint, proxy: Recording, ci_sha: str
) -> None:
    prefix = f"snappy-os-ci/{ci_sha}/"
    client = build_client(via_proxy, guards.prefix_policy(via_proxy.bucket, prefix))
    rewrite_url_before_sign(client, f"/{via_proxy.bucket}/", "/production-bucket/")
    with pytest.raises(GuardViolation, match="outside bucket"):
        client.put_object(Bucket=via_proxy.bucket, Key=f"{prefix}x", Body=b"x")
    assert proxy.writes() == []


def test_a_batch_delete_rewritten_on_the_wire_is_refused(
    via_proxy: StoreEndpoint, proxy: Recording, admin_store: Store, ci_sha: str
) -> None:
    admin_store.put("snappy-os/catalog.json", b"{}")
    prefix = f"snappy-os-ci/{ci_sha}/"
    client = build_client(via_proxy, guards.prefix_policy(via_proxy.bucket, prefix))

    def swap_body(request: Any, **_: Any) -> None:
        request.data = request.body.replace(f"{prefix}a".encode(), b"snappy-os/catalog.json")

    client.meta.events.register("before-sign.s3.DeleteObjects", swap_body)
    with pytest.raises(GuardViolation, match=r"snappy-os/catalog\.json"):
        client.delete_objects(Bucket=via_proxy.bucket, Delete={"Objects": [{"Key": f"{prefix}a"}]})
    assert proxy.writes() == []
    assert admin_store.get("snappy-os/catalog.json") == b"{}"


def test_a_read_only_client_sends_no_write_even_when_rewritten(
    via_proxy: StoreEndpoint, proxy: Recording
) -> None:
    client = build_client(via_proxy, guards.read_only_policy())

    def to_put(request: Any, **_: Any) -> None:
        request.method = "PUT"

    client.meta.events.register("before-sign.s3.GetObject", to_put)
    with pytest.raises(GuardViolation, match="read-only"):
        client.get_object(Bucket=via_proxy.bucket, Key="snappy-os/catalog.json")
    assert proxy.writes() == []


@pytest.mark.parametrize(
    ("url", "endpoint", "expected"),
    [
        ("http://h:9000/b/k/ey", "http://h:9000", ("b", "k/ey")),
        ("http://h:9000/b/a%2F..%2Fx?x-id=PutObject", "http://h:9000", ("b", "a/../x")),
        ("https://b.s3.example.com/k%20y", "https://s3.example.com", ("b", "k y")),
        ("https://S3.Example.com:443/b", "https://s3.example.com", ("b", "")),
        ("http://h:9000/snappy-os/b/k", "http://h:9000/snappy-os", ("snappy-os", "b/k")),
        ("https://s3.amazonaws.com/b/k", "https://s3.us-east-1.amazonaws.com", ("b", "k")),
        ("https://b.s3.amazonaws.com/k", "https://s3.us-east-1.amazonaws.com", ("b", "k")),
    ],
)
def test_s3_location_from_the_final_url(url: str, endpoint: str, expected: tuple[str, str]) -> None:
    assert guards.s3_location(url, endpoint) == expected


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://evil.example/b/k", "http://h:9000"),
        ("http://h:9001/b/k", "http://h:9000"),
        ("https://s3.amazonaws.com/b/k", "https://fra1.digitaloceanspaces.com"),
        ("https://s3.eu-west-1.amazonaws.com/b/k", "https://s3.us-east-1.amazonaws.com"),
    ],
)
def test_s3_location_refuses_another_host(url: str, endpoint: str) -> None:
    with pytest.raises(GuardViolation, match="not the store endpoint"):
        guards.s3_location(url, endpoint)


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1"])
def test_aws_without_an_endpoint_url_still_writes_inside_the_prefix(region: str) -> None:
    # No endpoint_url means AWS itself; for us-east-1 botocore signs for the global host.
    endpoint = StoreEndpoint(
        bucket="b-aws",
        endpoint_url="",
        region_name=region,
        access_key_id="A" * 20,
        secret_access_key="s",
    )
    client = build_client(endpoint, guards.prefix_policy("b-aws", "snappy-os-ci/abc1234/"))
    sent: list[str] = []

    def stop(request: Any, **_: Any) -> Any:
        sent.append(str(request.url))
        raise RuntimeError("not sent")  # nothing may leave this test machine

    client.meta.events.register("before-send.s3", stop)
    with pytest.raises(RuntimeError, match="not sent"):
        client.put_object(Bucket="b-aws", Key="snappy-os-ci/abc1234/x", Body=b"x")
    with pytest.raises(GuardViolation):
        client.put_object(Bucket="b-aws", Key="snappy-os/x", Body=b"x")
    assert len(sent) == 1 and sent[0].endswith("/b-aws/snappy-os-ci/abc1234/x")


def test_wire_check_applies_the_key_policy() -> None:
    policy = guards.prefix_policy("b", "snappy-os-ci/abc1234/")
    endpoint = "http://h:9000"
    guards.check_wire_request(
        policy, "PutObject", "PUT", "http://h:9000/b/snappy-os-ci/abc1234/x", b"", endpoint
    )
    guards.check_wire_request(
        policy,
        "PutObject",
        "PUT",
        "http://h:9000/b/snappy-os-ci/abc1234/x?x-id=PutObject",
        b"",
        endpoint,
    )
    for url in (
        "http://h:9000/b/snappy-os-ci/abc1234/x?acl",
        "http://h:9000/b/snappy-os-ci/abc1234/x?retention=",
        "http://h:9000/b/snappy-os/x",
        "http://h:9000/b/snappy-os-ci/abc1234/%2E%2E/x",
        "http://h:9000/b",
        "http://b.h:9000/snappy-os/x",
    ):
        with pytest.raises(GuardViolation):
            guards.check_wire_request(policy, "PutObject", "PUT", url, b"", endpoint)


def ci_env(via_proxy: StoreEndpoint, tmp_path: Path, sha: str) -> dict[str, str]:
    """Settings for `--target ci` against this test's bucket through the proxy."""
    config = tmp_path / "sync-ci.toml"
    config.touch()
    return {
        "HOME": str(tmp_path),
        "SYNC_CI_CONFIG": str(config),
        "SYNC_CI_STATE_DIR": str(tmp_path / "state"),
        "SYNC_CI_SHA": sha,
        "SYNC_CI_BUCKET": via_proxy.bucket,
        "SYNC_CI_ENDPOINT_URL": via_proxy.endpoint_url,
        "SYNC_CI_ACCESS_KEY_ID": via_proxy.access_key_id,
        "SYNC_CI_SECRET_ACCESS_KEY": via_proxy.secret_access_key,
    }


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"SYNC_CI_CI_ROOT": "snappy-os/"}, "'snappy-os/'"),
        ({"SYNC_CI_CI_ROOT": "snappy-os/ci/"}, "'snappy-os/ci/'"),
        ({"SYNC_CI_LIVE_ROOT": "snappy-os-ci/live/"}, "'snappy-os-ci/live/'"),
        ({"SYNC_CI_CI_ROOT": ""}, "snappy-os"),  # empty means the default
        ({"SYNC_CI_CI_ROOT": "snappy-os-ci"}, "'snappy-os-ci'"),
        ({"SYNC_CI_CI_ROOT": "ci//x/"}, "'ci//x/'"),
        ({"SYNC_CI_ENDPOINT_URL_SUFFIX": "/snappy-os"}, "'/snappy-os'"),
        ({"SYNC_CI_ENDPOINT_URL_SUFFIX": "/?prefix=x"}, "query"),
    ],
)
def test_smoke_on_ci_with_a_bad_setting_sends_nothing(
    via_proxy: StoreEndpoint,
    proxy: Recording,
    tmp_path: Path,
    ci_sha: str,
    override: dict[str, str],
    named: str,
) -> None:
    env = ci_env(via_proxy, tmp_path, ci_sha)
    suffix = override.pop("SYNC_CI_ENDPOINT_URL_SUFFIX", "")
    env["SYNC_CI_ENDPOINT_URL"] += suffix
    env.update(override)
    if override == {"SYNC_CI_CI_ROOT": ""}:
        env["SYNC_CI_LIVE_ROOT"] = "snappy-os-ci/"  # the default ci_root equals it
    done = run_sync_ci(["smoke", "--target", "ci"], env, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sync-ci: error: "), done.stderr
    assert named in lines[0] and "Traceback" not in done.stderr
    assert proxy.seen == []
