"""The Worker a run talks to (which URL, which regions besides it) and the tenant it speaks as.

One rule for every suite and gate: on `ci` a preview URL (the PR's own deployment) wins over the
configured Worker; the regions asked besides the main URL are the configured ones reached
directly (sandbox: all of its listeners; ci: none, since a preview or local Worker is not the
production one the regions name). The configured tenant presents its configured token; any other
tenant a run speaks as (or one with no token configured) one derived from the tenant secret.
Which target a command attaches to is `sync_ci.attachment`'s decision.
"""

from __future__ import annotations

from sync_ci import contract
from sync_ci.config import Region, Settings
from sync_ci.errors import SettingsError, UsageError

# The tenant the smoke speaks as when the settings name none; the local CI Worker that
# `sandbox.attach` starts over the bucket is set up for the same one.
SMOKE_TENANT = "ci-smoke"


def worker_url(settings: Settings) -> str:
    """Return the main Worker URL of `settings` (no trailing slash), or raise SettingsError."""
    url = (
        settings.preview_url
        if settings.target == "ci" and settings.preview_url
        else settings.worker_url
    )
    if not url:
        raise SettingsError(
            f"target {settings.target} names no Worker: set [worker] url in sync-ci.toml or "
            "SYNC_CI_WORKER_URL (on ci, SYNC_CI_PREVIEW_URL for the pull request's own Worker)"
        )
    return url.rstrip("/")


def regions_to_ask(settings: Settings, main_url: str) -> list[Region]:
    """The configured regions besides `main_url` that serve this run's root.

    Sandbox: all of its listeners. Live: the configured [[regions]] reached directly (one reached
    through a proxy lands on another colo when asked directly, so it is the latency gate's alone).
    ci: none, since its preview or local Worker is not the production one the regions name.
    """
    if settings.target == "ci":
        return []
    return [
        r for r in settings.regions if not r.proxy and r.url.rstrip("/") != main_url.rstrip("/")
    ]


def colo_of(settings: Settings, url: str) -> str:
    """The colo configured for a Worker URL reached directly ('' when none is)."""
    for region in settings.regions:
        if not region.proxy and region.url.rstrip("/") == url.rstrip("/"):
            return region.colo
    return ""


def tenant_token(settings: Settings, tenant_id: str) -> str:
    """The token `tenant_id` presents ('' when it has none).

    The configured token belongs to the configured tenant alone; any tenant (a run's own when no
    tenant id is configured, or the configured one without a token) derives its token from the
    tenant secret.
    """
    if not tenant_id:
        return ""
    if tenant_id == settings.tenant_id and settings.secrets.tenant_token:
        return settings.secrets.tenant_token
    if settings.secrets.tenant_secret:
        return contract.tenant_token(settings.secrets.tenant_secret, tenant_id)
    return ""


def tenant_headers(settings: Settings) -> dict[str, str]:
    """Return the configured tenant's auth headers, or raise UsageError naming what is missing."""
    if not settings.tenant_id:
        raise UsageError("no tenant id: set [tenant] id in sync-ci.toml or SYNC_CI_TENANT_ID")
    token = tenant_token(settings, settings.tenant_id)
    if not token:
        raise UsageError(
            "no tenant token: set SYNC_CI_TENANT_TOKEN in the environment or SYNC_CI_SECRETS_FILE"
        )
    return contract.tenant_headers(settings.tenant_id, token)
