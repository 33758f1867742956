"""What the environment supplies: `SYNC_CI_*` overrides of the plain settings and the secrets.

Secrets come only from the environment or the owner-only `SYNC_CI_SECRETS_FILE`, are stripped
and checked where read, and are registered with `sync_ci.redaction` as soon as they are found.
"""

from __future__ import annotations

import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sync_ci.config_file import NUMBER_KEYS, PLAIN_KEYS, is_kind
from sync_ci.errors import SettingsError
from sync_ci.redaction import register_secrets

REDACTED = "***"
SECRET_ENV: dict[str, tuple[str, ...]] = {
    "access_key_id": ("SYNC_CI_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
    "secret_access_key": ("SYNC_CI_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    "tenant_secret": ("SYNC_CI_TENANT_SECRET",),
    "tenant_token": ("SYNC_CI_TENANT_TOKEN",),
    "admin_token": ("SYNC_CI_ADMIN_TOKEN",),
}
ACCESS_KEY_ID_MIN_LEN = 16


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


def read_secret(name: str, raw: str, where: str = "environment") -> str:
    """Strip a secret as read; refuse one with whitespace or control characters inside it.

    The error names the variable and where it came from, never the value.
    """
    value = raw.strip()
    if any(unicodedata.category(ch)[0] in "CZ" for ch in value):
        raise SettingsError(
            f"{name} ({where}) has whitespace or a control character inside it; set it again "
            "without them (the value is not shown)"
        )
    return value


def read_secrets_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines from an owner-only file; secret values come back stripped and checked."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"SYNC_CI_SECRETS_FILE {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"SYNC_CI_SECRETS_FILE {path} is not UTF-8 text") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(
            f"secrets file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    known = {name for names in SECRET_ENV.values() for name in names}
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"secrets file {path} line {number} is not KEY=VALUE")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key in known:
            value = read_secret(key, value, f"secrets file {path} line {number}")
        values[key] = value
    return values


def read_secrets(env: Mapping[str, str], problems: list[str]) -> Secrets:
    """Find each secret: the first of its variables set (environment over SYNC_CI_SECRETS_FILE)."""
    from_file: dict[str, str] = {}
    if env.get("SYNC_CI_SECRETS_FILE"):
        try:
            from_file = read_secrets_file(Path(env["SYNC_CI_SECRETS_FILE"]))
        except SettingsError as exc:
            problems.append(str(exc))
    found: dict[str, str] = {}
    for name, variables in SECRET_ENV.items():
        found[name] = ""
        for variable in variables:
            try:
                value = read_secret(variable, env[variable]) if variable in env else ""
            except SettingsError as exc:
                problems.append(str(exc))
                break
            value = value or from_file.get(variable, "")
            if value:
                found[name] = value
                break
    return Secrets(**found)


def register_settings_secrets(secrets: Secrets, tenant_id: str) -> None:
    """Register every secret, the tenant token derived from them and the access key id.

    From then on `sync_ci.redaction` masks each of them in every renderer and error line.
    """
    from sync_ci.contract import tenant_token

    values = [getattr(secrets, name) for name in SECRET_ENV if name != "access_key_id"]
    # A real access key id is 16 to 128 characters (AWS's limits); a shorter one is a local
    # stand-in such as the sandbox store's "sandbox", and masking it would mask that word.
    if len(secrets.access_key_id) >= ACCESS_KEY_ID_MIN_LEN:
        values.append(secrets.access_key_id)
    if secrets.tenant_secret and tenant_id:
        values.append(tenant_token(secrets.tenant_secret, tenant_id))
    register_secrets(value for value in values if value)


def plain_values(
    data: Mapping[str, Any], path: Path | None, env: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Pick each plain setting: SYNC_CI_* env over the settings file over the default.

    Returns the values as text and where each came from ("env NAME", "file PATH", "default");
    a file value of the wrong type is passed over (the file's check has reported it).
    """
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name, (table, key, env_name, default) in PLAIN_KEYS.items():
        section = data.get(table, {}) if table else data
        kind = "number" if name in NUMBER_KEYS else "string"
        if env.get(env_name, "").strip():
            values[name], sources[name] = env[env_name].strip(), f"env {env_name}"
        elif isinstance(section, dict) and key in section and is_kind(section[key], kind):
            values[name], sources[name] = str(section[key]), f"file {path}"
        else:
            values[name], sources[name] = default, "default"
    return values, sources
