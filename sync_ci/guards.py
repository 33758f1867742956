"""Prefix firewall and read-only enforcement, installed below every caller (S3 hook, HTTP adapter)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
CLEANUP_OPS = frozenset({"DeleteObjects", "DeleteObject", "AbortMultipartUpload"})
LIFECYCLE_OP = "PutBucketLifecycleConfiguration"


@dataclass(frozen=True, slots=True, kw_only=True)
class WritePolicy:
    """What a client may change. The default (no prefixes, read_only) refuses every write."""

    read_only: bool = True
    bucket: str = ""
    write_prefixes: tuple[str, ...] = ()
    cleanup_root: str = ""
    bucket_ops: frozenset[str] = field(default_factory=frozenset)
    loopback_admin: bool = False

    def describe(self) -> str:
        """Say in a few words what this policy allows."""
        if self.read_only:
            return "read-only"
        if self.loopback_admin:
            return "sandbox admin (loopback only)"
        if self.cleanup_root:
            return f"cleanup under {self.cleanup_root}<sha>/"
        return "writes under " + ", ".join(self.write_prefixes)


def validate_key(key: str) -> str:
    """Refuse keys with '..', '.', empty segments, absolute paths or control characters."""
    if not key or key.startswith("/") or "\\" in key:
        raise GuardViolation(f"refused key {key!r}: empty, absolute or with a backslash")
    body = key[:-1] if key.endswith("/") else key
    if any(part in ("", ".", "..") for part in body.split("/")):
        raise GuardViolation(f"refused key {key!r}: empty, '.' or '..' path segment")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise GuardViolation(f"refused key {key!r}: control character")
    return key


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
    validate_key(prefix)
    if not prefix.endswith("/"):
        raise GuardViolation(f"refused write prefix {prefix!r}: must end with '/'")
    return WritePolicy(read_only=False, bucket=bucket, write_prefixes=(prefix,))


def read_only_policy() -> WritePolicy:
    """Nothing but GET and HEAD."""
    return WritePolicy(read_only=True)


def cleanup_policy(bucket: str, ci_root: str, *, lifecycle: bool = False) -> WritePolicy:
    """The cleanup writer: deletions under `ci_root<sha>/` and, if asked, the lifecycle rule."""
    validate_key(ci_root)
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

    events.register_first(
        "before-parameter-build.s3", before_parameter_build, unique_id="sync-ci-guard-params"
    )
    events.register_first("before-sign.s3", before_sign, unique_id="sync-ci-guard-sign")


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
