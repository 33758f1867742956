"""Settings and targets: `sync-ci.toml`, `SYNC_CI_*` overrides, secrets from the environment only."""

from __future__ import annotations

import os
import re
import secrets as _secrets
import stat
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sync_ci.errors import SettingsError

Target = Literal["sandbox", "ci", "live"]
TARGETS: tuple[Target, ...] = ("sandbox", "ci", "live")
SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
REDACTED = "***"

# Every plain setting: (toml table, toml key, env var, default). Secrets are listed apart.
PLAIN_KEYS: dict[str, tuple[str, str, str, str]] = {
    "target": ("", "target", "SYNC_CI_TARGET", "sandbox"),
    "bucket": ("store", "bucket", "SYNC_CI_BUCKET", ""),
    "endpoint_url": ("store", "endpoint_url", "SYNC_CI_ENDPOINT_URL", ""),
    "region_name": ("store", "region", "SYNC_CI_REGION", "us-east-1"),
    "live_root": ("store", "live_root", "SYNC_CI_LIVE_ROOT", "snappy-os/"),
    "ci_root": ("store", "ci_root", "SYNC_CI_CI_ROOT", "snappy-os-ci/"),
    "worker_url": ("worker", "url", "SYNC_CI_WORKER_URL", ""),
    "preview_url": ("worker", "preview_url", "SYNC_CI_PREVIEW_URL", ""),
    "worker_timeout_s": ("worker", "timeout_s", "SYNC_CI_WORKER_TIMEOUT_S", "10"),
    "tenant_id": ("tenant", "id", "SYNC_CI_TENANT_ID", ""),
    "state_dir": ("tenant", "state_dir", "SYNC_CI_STATE_DIR", ""),
    "mirror_dir": ("tenant", "mirror_dir", "SYNC_CI_MIRROR_DIR", ""),
    "sha": ("", "sha", "SYNC_CI_SHA", ""),
}
SECRET_ENV: dict[str, tuple[str, ...]] = {
    "access_key_id": ("SYNC_CI_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
    "secret_access_key": ("SYNC_CI_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    "tenant_secret": ("SYNC_CI_TENANT_SECRET",),
    "tenant_token": ("SYNC_CI_TENANT_TOKEN",),
    "admin_token": ("SYNC_CI_ADMIN_TOKEN",),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Region:
    """One probe region: where to send samples and which colo must answer."""

    name: str
    url: str
    colo: str
    proxy: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Secrets:
    """Credentials; never printed (the repr is redacted)."""

    access_key_id: str = ""
    secret_access_key: str = ""
    tenant_secret: str = ""
    tenant_token: str = ""
    admin_token: str = ""

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={REDACTED if getattr(self, k) else ''!r}" for k in SECRET_ENV)
        return f"Secrets({shown})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Resolved settings for one command; `sources` says where each value came from."""

    target: Target
    bucket: str
    endpoint_url: str
    region_name: str
    live_root: str
    ci_root: str
    worker_url: str
    preview_url: str
    worker_timeout_s: float
    tenant_id: str
    state_dir: Path
    mirror_dir: Path
    sha: str
    regions: tuple[Region, ...] = ()
    secrets: Secrets = field(default_factory=Secrets)
    sandbox_file: str = ""
    config_path: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def ci_prefix(self) -> str:
        """The only prefix a `ci` or `sandbox` run may write under."""
        return f"{self.ci_root}{self.sha}/"

    @property
    def read_only(self) -> bool:
        """A `live` target never writes."""
        return self.target == "live"

    @property
    def suite_root(self) -> str:
        """The root a smoke runs against: the CI prefix, or the production root when live."""
        return self.live_root if self.target == "live" else self.ci_prefix

    def with_values(self, **values: Any) -> Settings:
        """Return a copy with some fields replaced."""
        return replace(self, **values)


def validate_sha(value: str) -> str:
    """Return `value` if it is 7-40 lowercase hex, else raise SettingsError."""
    if not SHA_RE.fullmatch(value):
        raise SettingsError(
            f"sha {value!r} is not 7-40 lowercase hex digits; set SYNC_CI_SHA or GITHUB_SHA "
            "to the commit being tested"
        )
    return value


def validate_root(name: str, value: str) -> str:
    """Check a root prefix: relative, ends in '/', no empty or '..' segments."""
    parts = value[:-1].split("/") if value.endswith("/") else None
    if (
        not value
        or parts is None
        or value.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise SettingsError(
            f"setting {name} = {value!r} is not a prefix like 'snappy-os/': it must be relative, "
            "end with '/', and have no empty, '.' or '..' segments"
        )
    return value


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """Locate the settings file: --config, SYNC_CI_CONFIG, ./sync-ci.toml, then the user config dir."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist; fix --config or create it")
        return path
    if env.get("SYNC_CI_CONFIG"):
        path = Path(env["SYNC_CI_CONFIG"]).expanduser()
        if not path.is_file():
            raise SettingsError(f"SYNC_CI_CONFIG names {path}, which does not exist")
        return path
    for candidate in (Path("sync-ci.toml"), _user_config_dir(env) / "sync-ci.toml"):
        if candidate.is_file():
            return candidate
    return None


def _user_config_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "sync-ci"


def _user_state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME", "~")).expanduser() / ".local/state"
    )
    return Path(base) / "sync-ci"


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse the TOML settings file, refusing secrets inside it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    for table in data.values():
        if isinstance(table, dict):
            for key in table:
                if any(word in key for word in ("secret", "token", "password", "access_key")):
                    raise SettingsError(
                        f"config file {path} holds a secret ({key!r}); move it to the environment "
                        "or SYNC_CI_SECRETS_FILE (owner-only)"
                    )
    return data


def read_secrets_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines from an owner-only file."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SettingsError(f"SYNC_CI_SECRETS_FILE {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(
            f"secrets file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"secrets file {path} line {number} is not KEY=VALUE")
        values[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def _git_sha(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def load_settings(
    *,
    config: str | None = None,
    target: str | None = None,
    env: Mapping[str, str] | None = None,
    check_remote: bool = True,
) -> Settings:
    """Resolve settings: defaults < settings file < SYNC_CI_* env < explicit flags.

    `check_remote=False` is for field commands (doctor, alert, cron, status) on machines that
    talk to the Worker only and hold no bucket credentials.
    """
    env = os.environ if env is None else env
    path = find_config_file(config, env)
    data = read_config_file(path) if path else {}
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name, (table, key, env_name, default) in PLAIN_KEYS.items():
        section = data.get(table, {}) if table else data
        if not isinstance(section, dict):
            raise SettingsError(f"config file {path}: [{table}] must be a table")
        if env.get(env_name):
            values[name], sources[name] = env[env_name], f"env {env_name}"
        elif key in section:
            values[name], sources[name] = str(section[key]), f"file {path}"
        else:
            values[name], sources[name] = default, "default"
    if target:
        values["target"], sources["target"] = target, "flag --target"
    if values["target"] not in TARGETS:
        raise SettingsError(
            f"target {values['target']!r} is unknown ({sources['target']}); "
            f"use one of: {', '.join(TARGETS)}"
        )
    chosen: Target = values["target"]

    secret_source: dict[str, str] = dict(env)
    if env.get("SYNC_CI_SECRETS_FILE"):
        secret_source = {**read_secrets_file(Path(env["SYNC_CI_SECRETS_FILE"])), **env}
    found = {
        name: next((secret_source[v] for v in names if secret_source.get(v)), "")
        for name, names in SECRET_ENV.items()
    }
    secrets = Secrets(**found)

    for name in ("live_root", "ci_root"):
        validate_root(name, values[name])
    try:
        timeout = float(values["worker_timeout_s"])
    except ValueError:
        raise SettingsError(
            f"worker timeout_s = {values['worker_timeout_s']!r} is not a number of seconds"
        ) from None
    if not 0 < timeout <= 120:
        raise SettingsError(f"worker timeout_s = {timeout} must be between 0 and 120 seconds")

    sha = values["sha"] or env.get("GITHUB_SHA", "")
    if sha:
        sources["sha"] = sources["sha"] if values["sha"] else "env GITHUB_SHA"
    elif chosen != "live":
        sha, sources["sha"] = _git_sha(), "git rev-parse HEAD"
        if not sha and chosen == "sandbox":
            sha, sources["sha"] = _secrets.token_hex(6), "random (no git checkout)"
    if chosen != "live":
        if not sha:
            raise SettingsError(
                "target ci needs the commit sha: set GITHUB_SHA or SYNC_CI_SHA (7-40 lowercase hex)"
            )
        validate_sha(sha)

    regions = tuple(_parse_regions(data.get("regions", []), path))
    state_dir = (
        Path(values["state_dir"]).expanduser() if values["state_dir"] else _user_state_dir(env)
    )
    mirror_dir = (
        Path(values["mirror_dir"]).expanduser() if values["mirror_dir"] else state_dir / "mirror"
    )
    settings = Settings(
        target=chosen,
        bucket=values["bucket"],
        endpoint_url=values["endpoint_url"],
        region_name=values["region_name"],
        live_root=values["live_root"],
        ci_root=values["ci_root"],
        worker_url=values["worker_url"].rstrip("/"),
        preview_url=values["preview_url"].rstrip("/"),
        worker_timeout_s=timeout,
        tenant_id=values["tenant_id"],
        state_dir=state_dir,
        mirror_dir=mirror_dir,
        sha=sha,
        regions=regions,
        secrets=secrets,
        sandbox_file=env.get("SYNC_CI_SANDBOX", ""),
        config_path=str(path) if path else "",
        sources=sources,
    )
    if chosen in ("ci", "live") and check_remote:
        require_remote(settings)
    return settings


def _parse_regions(raw: Any, path: Path | None) -> list[Region]:
    if not isinstance(raw, list):
        raise SettingsError(f"config file {path}: regions must be an array of tables [[regions]]")
    regions = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not {"name", "url", "colo"} <= item.keys():
            raise SettingsError(
                f"config file {path}: regions[{index}] needs name, url and colo "
                "(e.g. name = 'sjc', url = 'https://...', colo = 'SJC')"
            )
        regions.append(
            Region(
                name=str(item["name"]),
                url=str(item["url"]).rstrip("/"),
                colo=str(item["colo"]).upper(),
                proxy=str(item.get("proxy", "")),
            )
        )
    return regions


def require_remote(settings: Settings) -> None:
    """Check that a `ci` or `live` target names a bucket, credentials and a Worker."""
    target = settings.target
    if not settings.bucket:
        raise SettingsError(
            f"target {target} needs a bucket: set [store] bucket in sync-ci.toml or SYNC_CI_BUCKET"
        )
    if not (settings.secrets.access_key_id and settings.secrets.secret_access_key):
        raise SettingsError(
            f"target {target} needs S3 credentials: set SYNC_CI_ACCESS_KEY_ID and "
            "SYNC_CI_SECRET_ACCESS_KEY (or AWS_*) in the environment or SYNC_CI_SECRETS_FILE"
        )
    if target == "live" and not settings.worker_url:
        raise SettingsError(
            "target live needs the production Worker: set [worker] url or SYNC_CI_WORKER_URL"
        )


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """Return (setting, value, source) rows with every secret redacted."""
    rows: list[tuple[str, str, str]] = []
    for name in PLAIN_KEYS:
        value = getattr(settings, name)
        rows.append((name, str(value), settings.sources.get(name, "derived")))
    rows.append(("ci_prefix", settings.ci_prefix if settings.target != "live" else "-", "derived"))
    rows.append(("read_only", str(settings.read_only).lower(), "derived from target"))
    for region in settings.regions:
        rows.append((f"region {region.name}", f"{region.url} ({region.colo})", "file"))
    for name, env_names in SECRET_ENV.items():
        present = bool(getattr(settings.secrets, name))
        rows.append((name, REDACTED if present else "(unset)", " or ".join(env_names)))
    if settings.sandbox_file:
        rows.append(("sandbox", settings.sandbox_file, "env SYNC_CI_SANDBOX"))
    rows.append(("config_file", settings.config_path or "(none)", "search order"))
    return rows
