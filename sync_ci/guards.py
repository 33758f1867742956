"""Prefix firewall and read-only enforcement, installed below every caller (S3 hook, HTTP guard).

Over 400 lines on purpose: every policy (read-only, CI prefix, cleanup, sandbox admin) and every
point it is judged at (parameter build, signing, the final wire request, the Worker's HTTP
requests) stay in one module, so a reviewer reads the whole firewall in one place.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from sync_ci.errors import GuardViolation

READ_METHODS = frozenset({"GET", "HEAD"})
SHA_SEGMENT = re.compile(r"^[0-9a-f]{7,40}$")

# Mutating S3 operations allowed inside the prefix on a ci target, with the params naming keys.
# Anything mutating that is not listed here (ACLs, legal holds, bucket settings, operations boto3
# adds later) is refused until someone reviews it.
KEYED_WRITE_OPS: dict[str, tuple[str, ...]] = {
    "PutObject": ("Key",),
    "DeleteObject": ("Key",),
    "CopyObject": ("Key",),
    "CreateMultipartUpload": ("Key",),
    "UploadPart": ("Key",),
    "UploadPartCopy": ("Key",),
    "CompleteMultipartUpload": ("Key",),
    "AbortMultipartUpload": ("Key",),
    "PutObjectTagging": ("Key",),
    "DeleteObjectTagging": ("Key",),
    "DeleteObjects": (),
}
# The query parameters each allowed write sends on the wire (botocore adds `x-id` to any of them).
WIRE_QUERY: dict[str, frozenset[str]] = {
    "PutObject": frozenset(),
    "DeleteObject": frozenset({"versionId"}),
    "CopyObject": frozenset(),
    "CreateMultipartUpload": frozenset({"uploads"}),
    "UploadPart": frozenset({"partNumber", "uploadId"}),
    "UploadPartCopy": frozenset({"partNumber", "uploadId"}),
    "CompleteMultipartUpload": frozenset({"uploadId"}),
    "AbortMultipartUpload": frozenset({"uploadId"}),
    "PutObjectTagging": frozenset({"tagging", "versionId"}),
    "DeleteObjectTagging": frozenset({"tagging", "versionId"}),
    "DeleteObjects": frozenset({"delete"}),
    "PutBucketLifecycleConfiguration": frozenset({"lifecycle"}),
}
CLEANUP_OPS = frozenset({"DeleteObjects", "DeleteObject", "AbortMultipartUpload"})
LIFECYCLE_OP = "PutBucketLifecycleConfiguration"
AWS_GLOBAL_S3 = "s3.amazonaws.com:443"


@dataclass(frozen=True, slots=True, kw_only=True)
class WritePolicy:
    """What a client may change. The default (no prefixes, read_only) refuses every write."""

    read_only: bool = True
    bucket: str = ""
    write_prefixes: tuple[str, ...] = ()
    cleanup_root: str = ""
    bucket_ops: frozenset[str] = field(default_factory=frozenset)
    loopback_admin: bool = False

    def __post_init__(self) -> None:
        # A writing policy built by hand must still name full prefixes: an empty prefix, or one
        # without its trailing '/', would let every key (or a look-alike root) through.
        if self.read_only or self.loopback_admin:
            return
        if self.cleanup_root and self.write_prefixes:
            raise GuardViolation("refused write policy: a cleanup root and write prefixes at once")
        if not (self.cleanup_root or self.write_prefixes or self.bucket_ops):
            raise GuardViolation("refused write policy: it names no prefix it may write under")
        for prefix in (self.cleanup_root,) if self.cleanup_root else self.write_prefixes:
            check_full_prefix(prefix)

    def describe(self) -> str:
        """Say in a few words what this policy allows."""
        if self.read_only:
            return "read-only"
        if self.loopback_admin:
            return "sandbox admin (loopback only)"
        if self.cleanup_root:
            return f"cleanup under {self.cleanup_root}<sha>/"
        return "writes under " + ", ".join(self.write_prefixes)


# A key that validate_key accepts: segments of anything but '/', '\\' and control characters, none
# of them '.' or '..', joined by single '/', with at most one trailing '/'. One C-level match per
# key: cleanup checks every listed key, and 100,000 of them went through a per-character loop.
_KEY_SEGMENT = r"[^/\\\x00-\x1f\x7f]+"
_VALID_KEY = re.compile(
    rf"(?:(?!\.\.?/){_KEY_SEGMENT}/)*(?!\.\.?/?\Z){_KEY_SEGMENT}/?",
)


def validate_key(key: str) -> str:
    """Refuse keys with '..', '.', empty segments, absolute paths or control characters."""
    if _VALID_KEY.fullmatch(key):
        return key
    # Refused: find the first rule it breaks, for the message.
    if not key or key.startswith("/") or "\\" in key:
        raise GuardViolation(f"refused key {key!r}: empty, absolute or with a backslash")
    body = key[:-1] if key.endswith("/") else key
    if any(part in ("", ".", "..") for part in body.split("/")):
        raise GuardViolation(f"refused key {key!r}: empty, '.' or '..' path segment")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise GuardViolation(f"refused key {key!r}: control character")
    return key


def check_full_prefix(prefix: str) -> str:
    """Refuse an empty or partial write prefix: it must be a valid key ending in '/'."""
    if not prefix:
        raise GuardViolation("refused write prefix '': an empty prefix would allow every key")
    try:
        validate_key(prefix)
    except GuardViolation as exc:
        raise GuardViolation(f"refused write prefix {prefix!r}: {exc}") from None
    if not prefix.endswith("/"):
        raise GuardViolation(
            f"refused write prefix {prefix!r}: must end with '/' (else {prefix + 'x'!r}/... "
            "would pass too)"
        )
    return prefix


def ci_prefix(ci_root: str, sha: str) -> str:
    """Return `ci_root/<sha>/`, refusing anything but 7-40 lowercase hex."""
    if not SHA_SEGMENT.fullmatch(sha):
        raise GuardViolation(f"refused sha {sha!r}: not 7-40 lowercase hex")
    validate_key(ci_root)
    if not ci_root.endswith("/"):
        raise GuardViolation(f"refused CI root {ci_root!r}: must end with '/'")
    return f"{ci_root}{sha}/"


def is_full_ci_prefix(prefix: str, ci_root: str) -> bool:
    """True when `prefix` is exactly `ci_root<sha>/` with a valid sha."""
    if not prefix.startswith(ci_root) or not prefix.endswith("/"):
        return False
    return bool(SHA_SEGMENT.fullmatch(prefix[len(ci_root) : -1]))


def prefix_policy(bucket: str, prefix: str) -> WritePolicy:
    """Writes allowed only under one full `snappy-os-ci/<sha>/`-style prefix."""
    check_full_prefix(prefix)
    return WritePolicy(read_only=False, bucket=bucket, write_prefixes=(prefix,))


def read_only_policy() -> WritePolicy:
    """Nothing but GET and HEAD."""
    return WritePolicy(read_only=True)


def cleanup_policy(bucket: str, ci_root: str, *, lifecycle: bool = False) -> WritePolicy:
    """The cleanup writer: deletions under `ci_root<sha>/` and, if asked, the lifecycle rule."""
    check_full_prefix(ci_root)
    ops = frozenset({LIFECYCLE_OP}) if lifecycle else frozenset()
    return WritePolicy(read_only=False, bucket=bucket, cleanup_root=ci_root, bucket_ops=ops)


def sandbox_admin_policy() -> WritePolicy:
    """The sandbox's own seeding client; build_client accepts it only for a loopback endpoint."""
    return WritePolicy(read_only=False, loopback_admin=True)


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is a loopback address or 'localhost'."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url: str, *, allow_path: bool) -> str:
    """Say what is wrong with a service URL ('' when it is fine), never repeating user info.

    Allowed: `http(s)://host[:port]`, plus a base path when `allow_path` (a Worker mounted under a
    path). Never user info, a query, a fragment, whitespace, or '.', '..' or empty path segments.
    """
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "has whitespace or a control character in it"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must look like https://host[:port]"
    if "@" in parts.netloc:
        return "carries user info (user:password@); credentials go in the environment"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "carries a query or a fragment; remove everything from '?' or '#'"
    path = parts.path.rstrip("/")
    if path and not allow_path:
        return (
            f"has a path ({path!r}); an S3 endpoint is scheme://host[:port] only "
            "(the client adds the bucket and key)"
        )
    if any(seg in ("", ".", "..") for seg in path.split("/")[1:]):
        return f"has an empty, '.' or '..' segment in its path ({path!r})"
    return ""


def display_url(url: str) -> str:
    """Return `url` with any user info replaced by `***`, for printing."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def s3_location(url: str, endpoint_url: str) -> tuple[str, str]:
    """Return the (bucket, key) a final S3 request URL addresses, path- or virtual-host style."""
    request, endpoint = urlsplit(url), urlsplit(endpoint_url)
    host = _host_port(request)
    bases = [_host_port(endpoint)]
    if bases[0].endswith(".amazonaws.com:443"):
        bases.append(AWS_GLOBAL_S3)  # botocore sends us-east-1 requests to the global endpoint
    path = unquote(request.path)
    for base in bases:
        if host == base:
            bucket, _, key = path.removeprefix("/").partition("/")
            return bucket, key
        if host.endswith("." + base):
            return host[: -len(base) - 1], path.removeprefix("/")
    raise GuardViolation(
        f"refused a write to host {request.hostname!r}: not the store endpoint "
        f"{endpoint.hostname!r}"
    )


def _host_port(parts: SplitResult) -> str:
    default = 443 if parts.scheme == "https" else 80
    return f"{(parts.hostname or '').lower()}:{parts.port or default}"


def check_wire_request(
    policy: WritePolicy,
    operation: str,
    method: str,
    url: str,
    body: Any,
    endpoint_url: str,
) -> None:
    """Apply `policy` to the bucket and key(s) of the request as it will be sent on the wire."""
    method = method.upper()
    if method in READ_METHODS:
        return
    if policy.read_only:
        raise GuardViolation(f"refused {operation} ({method}): this run is read-only")
    if policy.loopback_admin:
        if not is_loopback_url(url):
            raise GuardViolation(f"refused {operation}: the sandbox admin client is loopback only")
        return
    bucket, key = s3_location(url, endpoint_url)
    where = f"{bucket}/{key}" if key else bucket
    if policy.bucket and bucket != policy.bucket:
        raise GuardViolation(
            f"refused {operation} ({method}): the request URL names {where!r}, "
            f"outside bucket {policy.bucket!r}"
        )
    allowed_ops = CLEANUP_OPS if policy.cleanup_root else KEYED_WRITE_OPS.keys()
    if operation not in policy.bucket_ops and operation not in allowed_ops:
        raise GuardViolation(
            f"refused {operation} ({method}): not an allowed write ({policy.describe()})"
        )
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    # A sub-resource in the query turns an approved write into another one (?acl, ?retention).
    unknown = sorted(set(query) - WIRE_QUERY.get(operation, frozenset()) - {"x-id"})
    if unknown:
        raise GuardViolation(
            f"refused {operation} ({method}) of {where!r}: the request URL adds "
            f"{', '.join(unknown)} to the query, which {operation} does not send"
        )
    if operation in policy.bucket_ops:
        if key:
            raise GuardViolation(f"refused {operation} of {where!r}: a bucket-level write")
        return
    if operation == "DeleteObjects":
        keys = _delete_body_keys(body)
        if key or "delete" not in query or not keys:
            raise GuardViolation(
                f"refused DeleteObjects at {where!r}: not a batch delete of named keys"
            )
        for name in keys:
            check_write_key(policy, name, operation)
        return
    if not key:
        raise GuardViolation(f"refused {operation} ({method}) of bucket {bucket!r}: no key")
    try:
        check_write_key(policy, key, operation)
    except GuardViolation as exc:
        raise GuardViolation(f"{exc} (on the wire: the request URL names {where!r})") from None


def _delete_body_keys(body: Any) -> list[str]:
    from xml.etree import ElementTree  # only writing clients get here; doctor never imports it

    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes | bytearray):
        return []
    try:
        root = ElementTree.fromstring(bytes(body))  # noqa: S314  (botocore serialised it)
    except ElementTree.ParseError:
        return []
    return [el.text or "" for el in root.iter() if el.tag.rpartition("}")[2] == "Key"]


def check_write_key(policy: WritePolicy, key: str, operation: str) -> None:
    """Raise unless `policy` lets `operation` change `key`."""
    validate_key(key)
    if policy.loopback_admin:
        return
    if policy.cleanup_root:
        rest = key[len(policy.cleanup_root) :] if key.startswith(policy.cleanup_root) else ""
        sha, sep, tail = rest.partition("/")
        if not (sep and tail and SHA_SEGMENT.fullmatch(sha)):
            raise GuardViolation(
                f"refused {operation} of {key!r}: cleanup may only delete under "
                f"{policy.cleanup_root}<sha>/"
            )
        return
    if not any(key.startswith(prefix) for prefix in policy.write_prefixes):
        raise GuardViolation(
            f"refused {operation} of {key!r}: outside the allowed prefix "
            f"{', '.join(policy.write_prefixes) or '(none)'}"
        )


def check_s3_call(policy: WritePolicy, operation: str, method: str, params: dict[str, Any]) -> None:
    """Raise GuardViolation unless `policy` allows this S3 operation with these parameters."""
    if method.upper() in READ_METHODS:
        return
    if policy.read_only:
        raise GuardViolation(f"refused {operation} ({method}): this run is read-only")
    if policy.bucket and params.get("Bucket") not in (None, policy.bucket):
        raise GuardViolation(
            f"refused {operation} on bucket {params.get('Bucket')!r}: only {policy.bucket!r} is allowed"
        )
    if operation in policy.bucket_ops:
        return
    allowed_ops = CLEANUP_OPS if policy.cleanup_root else KEYED_WRITE_OPS.keys()
    if operation not in allowed_ops and not policy.loopback_admin:
        raise GuardViolation(
            f"refused {operation} ({method}): not an allowed write ({policy.describe()})"
        )
    for key in _keys_written(operation, params):
        check_write_key(policy, key, operation)
    if operation == "DeleteObjects" and not _keys_written(operation, params):
        raise GuardViolation("refused DeleteObjects with no keys")


def _keys_written(operation: str, params: dict[str, Any]) -> list[str]:
    if operation == "DeleteObjects":
        objects = (params.get("Delete") or {}).get("Objects") or []
        return [str(item.get("Key", "")) for item in objects]
    key = params.get("Key")
    if key is None:
        return []
    return [str(key)]


def install_s3_guard(client: Any, policy: WritePolicy) -> None:
    """Hook `policy` into a boto3 S3 client's events so no call on it can skip the check."""
    events = client.meta.events

    def before_parameter_build(
        params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        method = str(model.http.get("method", "POST"))
        if context.get("is_presign_request") and method.upper() not in READ_METHODS:
            raise GuardViolation(
                f"refused presigned {model.name} ({method}): presigned writes are off"
            )
        check_s3_call(policy, model.name, method, params)
        context["sync_ci_guard"] = model.name

    endpoint_url = str(client.meta.endpoint_url)

    def before_sign(request: Any, operation_name: str, **_: Any) -> None:
        # Backstop on the real HTTP method: catches presigned POST policies and HttpMethod overrides.
        method = str(getattr(request, "method", "") or "POST").upper()
        if method in READ_METHODS:
            return
        context = getattr(request, "context", None) or {}
        if (
            policy.read_only
            or context.get("sync_ci_guard") != operation_name
            or context.get("is_presign_request")
        ):
            raise GuardViolation(
                f"refused {operation_name} ({method}) at signing ({policy.describe()})"
            )
        # The parameters were checked; now the URL that is signed (an endpoint path or a rewriting
        # hook must not move an approved write to another bucket or key).
        check_wire_request(
            policy, operation_name, method, str(request.url), request.body, endpoint_url
        )

    def before_send(request: Any, event_name: str, **_: Any) -> None:
        # The prepared request, after every other hook: what really goes out.
        operation = event_name.rsplit(".", 1)[-1]
        method = str(getattr(request, "method", "") or "POST")
        check_wire_request(policy, operation, method, str(request.url), request.body, endpoint_url)

    events.register_first(
        "before-parameter-build.s3", before_parameter_build, unique_id="sync-ci-guard-params"
    )
    events.register_first("before-sign.s3", before_sign, unique_id="sync-ci-guard-sign")
    events.register_last("before-send.s3", before_send, unique_id="sync-ci-guard-send")


def check_http_request(
    read_only: bool, method: str, url: str, allowed_posts: Iterable[str] = ()
) -> None:
    """Raise unless a Worker request is a GET/HEAD, or a POST to an allowed path when not read-only."""
    method = method.upper()
    if method in READ_METHODS:
        return
    path = urlsplit(url).path
    if read_only:
        raise GuardViolation(f"refused {method} {path}: this run is read-only (GET and HEAD only)")
    if method == "POST" and any(path.endswith(suffix) for suffix in allowed_posts):
        return
    raise GuardViolation(f"refused {method} {path}: not an allowed Worker write")
