"""The Worker a run talks to: which URL, and which regions besides it, for a target.

One rule for every suite and gate: on `ci` a preview URL (the PR's own deployment) wins over the
configured Worker; the regions asked besides the main URL are the configured ones reached
directly (sandbox: all of its listeners; ci: none, since a preview or local Worker is not the
production one the regions name).
"""

from __future__ import annotations

from sync_ci.config import Region, Settings
from sync_ci.errors import SettingsError


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
