"""Settings and targets: `sync-ci.toml`, `SYNC_CI_*` overrides, secrets from the environment only.

Every invariant on settings is checked here, once, when they load: every command and target
passes through `load_settings`, so no caller has to remember a check.
"""

from __future__ import annotations

import os
import re
import secrets as _secrets
import stat
import subprocess
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sync_ci.errors import SettingsError
from sync_ci.guards import display_url, url_problem
from sync_ci.redaction import register_secrets
from sync_ci.sandbox.workerd import RUNTIMES, Runtime

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
    "worker_runtime": ("worker", "runtime", "SYNC_CI_WORKER_RUNTIME", "python"),
    "worker_project": ("worker", "project", "SYNC_CI_WORKER_PROJECT", ""),
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
ACCESS_KEY_ID_MIN_LEN = 16
NUMBER_KEYS = frozenset({"worker_timeout_s"})
# URL settings, and whether each may carry a base path: the contract lets a Worker live under a
# path of its host; an S3 endpoint never (the client puts the bucket and key in the path).
URL_KEYS: dict[str, bool] = {"endpoint_url": False, "worker_url": True, "preview_url": True}
REGION_KEYS = ("name", "url", "colo", "proxy")
REGION_REQUIRED = ("name", "url", "colo")
# Compared against a key lower-cased with everything but letters and digits removed.
SECRET_WORDS = (
    "secret",
    "token",
    "password",
    "passwd",
    "passphrase",
    "accesskey",
    "apikey",
    "credential",
    "privatekey",
    "authorization",
    "bearer",
)

KeyPath = tuple[str | int, ...]


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
    # SYNC_CI_SECRETS_FILE as loaded (the file the secrets above were read from), or None.
    secrets_file: Path | None = None
    config_path: str = ""
    # The Worker a sandbox or a ci run without preview URL starts locally, and a user's project.
    worker_runtime: Runtime = "python"
    worker_project: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Also for settings built or changed after loading (`with_values`, a sandbox attach).
        problems = root_problems(self.ci_root, self.live_root)
        if problems:
            raise SettingsError(problems[0])

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
        or "\\" in value
        or any(unicodedata.category(ch)[0] == "C" for ch in value)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise SettingsError(
            f"setting {name} = {value!r} is not a prefix like 'snappy-os/': it must be relative, "
            "end with '/', and have no empty, '.' or '..' segments"
        )
    return value


def root_problems(ci_root: str, live_root: str) -> list[str]:
    """Say what is wrong with the two roots: each must be valid, and neither may hold the other."""
    problems = []
    for name, value in (("live_root", live_root), ("ci_root", ci_root)):
        try:
            validate_root(name, value)
        except SettingsError as exc:
            problems.append(str(exc))
    if problems:
        return problems
    if ci_root == live_root:
        relation = "are the same prefix"
    elif ci_root.startswith(live_root):
        relation = "overlap: ci_root lies inside live_root"
    elif live_root.startswith(ci_root):
        relation = "overlap: ci_root contains live_root"
    else:
        return []
    return [
        f"ci_root = {ci_root!r} and live_root = {live_root!r} {relation}, so CI writes would "
        "land in production; give CI a root of its own (e.g. ci_root = 'snappy-os-ci/', "
        "live_root = 'snappy-os/')"
    ]


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


def _file_schema() -> dict[str, Any]:
    schema: dict[str, Any] = {"regions": [dict.fromkeys(REGION_KEYS, "string")]}
    for name, (table, key, _env, _default) in PLAIN_KEYS.items():
        kind = "number" if name in NUMBER_KEYS else "string"
        (schema.setdefault(table, {}) if table else schema)[key] = kind
    return schema


# What the settings file may hold: tables are dicts, arrays of tables one-item lists.
FILE_SCHEMA: dict[str, Any] = _file_schema()

_KEY_ATOM = r"""[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'"""
_KEY_PART = re.compile(_KEY_ATOM)
_DOTTED = rf"(?:{_KEY_ATOM})(?:\s*\.\s*(?:{_KEY_ATOM}))*"
_HEADER_LINE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]")
_KEY_LINE = re.compile(rf"^\s*({_DOTTED})\s*=")


def _key_parts(dotted: str) -> list[str]:
    return [p[1:-1] if p[0] in "\"'" else p for p in _KEY_PART.findall(dotted)]


def _with_indexes(parts: list[str], arrays: Mapping[KeyPath, int]) -> KeyPath:
    path: KeyPath = ()
    for part in parts:
        path = (*path, part)
        if path in arrays:
            path = (*path, arrays[path])
    return path


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map each key path of a TOML document to the line defining it (tomllib gives no positions)."""
    lines: dict[KeyPath, int] = {}
    arrays: dict[KeyPath, int] = {}
    current: KeyPath = ()
    in_string = False
    for number, line in enumerate(text.splitlines(), 1):
        odd_quotes = (line.count('"""') + line.count("'''")) % 2 == 1
        if in_string:
            in_string = not odd_quotes
            continue
        header = _HEADER_LINE.match(line)
        key = None if header else _KEY_LINE.match(line)
        if header:
            parts = _key_parts(header.group(2))
            if header.group(1) == "[[":
                array = (*_with_indexes(parts[:-1], arrays), parts[-1])
                arrays[array] = arrays.get(array, -1) + 1
                current = (*array, arrays[array])
            else:
                current = _with_indexes(parts, arrays)
            lines.setdefault(current, number)
        elif key:
            lines.setdefault((*current, *_key_parts(key.group(1))), number)
        in_string = odd_quotes
    return lines


def _line_of(lines: Mapping[KeyPath, int], keys: KeyPath) -> int:
    """The line of `keys`, else of its nearest table (an inline table, say); 0 when unknown."""
    for end in range(len(keys), 0, -1):
        if keys[:end] in lines:
            return lines[keys[:end]]
    return 0


def _dotted(keys: KeyPath) -> str:
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def _table_name(keys: KeyPath) -> str:
    if not keys:
        return "at the top level"
    if isinstance(keys[-1], int):
        return f"in [[{_dotted(keys[:-1])}]] entry {keys[-1] + 1}"
    return f"in [{_dotted(keys)}]"


def looks_secret(key: str) -> bool:
    """True when a settings key names a credential (any case, any separators)."""
    squashed = re.sub(r"[^a-z0-9]", "", key.lower())
    return any(word in squashed for word in SECRET_WORDS)


def _walk(value: Any, keys: KeyPath) -> Iterator[tuple[KeyPath, Any]]:
    yield keys, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*keys, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*keys, index))


def _has_user_info(value: str) -> bool:
    scheme, sep, rest = value.partition("://")
    return bool(sep and scheme and "@" in re.split(r"[/?#]", rest, maxsplit=1)[0])


def _secret_problems(data: dict[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    for keys, value in _walk(data, ()):
        if keys and isinstance(keys[-1], str) and looks_secret(keys[-1]):
            yield (
                keys,
                f"holds a secret ({_dotted(keys)!r}); move it to the environment or "
                "SYNC_CI_SECRETS_FILE (owner-only)",
            )
        elif isinstance(value, str) and _has_user_info(value):
            yield (
                keys,
                f"holds a URL with user info at {_dotted(keys)!r}; remove the 'user:password@' "
                "part (credentials go in the environment or SYNC_CI_SECRETS_FILE)",
            )


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {dict: "a table", list: "an array"}
    return names.get(type(value), "a date or time")


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def _schema_problems(
    data: dict[str, Any], schema: dict[str, Any], keys: KeyPath, skip: set[KeyPath]
) -> Iterator[tuple[KeyPath, str]]:
    for key, value in data.items():
        here = (*keys, key)
        if here in skip:
            continue
        expected = schema.get(key)
        if expected is None:
            import difflib

            close = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(schema)}"
            yield here, f"unknown key {key!r} {_table_name(keys)}; {hint}"
        elif isinstance(expected, dict):
            if isinstance(value, dict):
                yield from _schema_problems(value, expected, here, skip)
            else:
                yield here, f"{key} must be a table ([{_dotted(here)}]), not {_toml_type(value)}"
        elif isinstance(expected, list):
            if isinstance(value, list) and all(isinstance(item, dict) for item in value):
                for index, item in enumerate(value):
                    yield from _schema_problems(item, expected[0], (*here, index), skip)
            else:
                yield here, f"{key} must be an array of tables ([[{_dotted(here)}]])"
        elif not _is_kind(value, expected):
            yield here, f"{_dotted(here)} must be a {expected}, not {_toml_type(value)}"


def check_config_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Parse the TOML settings file; return its data and every problem, each naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [f"cannot read config file {path}: {exc}"]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"config file {path} is not valid TOML: {exc}"]
    lines = key_lines(text)
    found = list(_secret_problems(data))
    skip = {keys for keys, _ in found}
    found += _schema_problems(data, FILE_SCHEMA, (), skip)
    for index, item in enumerate(data.get("regions", [])):
        if isinstance(item, dict):
            for key in REGION_REQUIRED:
                if key not in item:
                    message = (
                        f"[[regions]] entry {index + 1} needs {key} (each region has name, "
                        "url and colo, e.g. name = 'sjc', url = 'https://...', colo = 'SJC')"
                    )
                    found.append((("regions", index), message))
    located = sorted((_line_of(lines, keys), message) for keys, message in found)
    return data, [
        f"config file {path}{f' line {line}' if line else ''}: {message}"
        for line, message in located
    ]


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse the TOML settings file, refusing secrets, unknown keys and wrong types in it."""
    data, problems = check_config_file(path)
    if problems:
        raise SettingsError(problems[0])
    return data


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


def _git_sha(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _read_secrets(env: Mapping[str, str], problems: list[str]) -> Secrets:
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


def resolve_settings(
    *,
    config: str | None = None,
    target: str | None = None,
    env: Mapping[str, str] | None = None,
    check_remote: bool = True,
) -> tuple[Settings, list[str]]:
    """Resolve settings and list every problem at once; a setting with a problem keeps its default.

    `load_settings` raises on the first problem; `config show` prints the table and all of them.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    path: Path | None = None
    data: dict[str, Any] = {}
    try:
        path = find_config_file(config, env)
    except SettingsError as exc:
        problems.append(str(exc))
    if path:
        data, file_problems = check_config_file(path)
        problems += file_problems
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name, (table, key, env_name, default) in PLAIN_KEYS.items():
        section = data.get(table, {}) if table else data
        kind = "number" if name in NUMBER_KEYS else "string"
        if env.get(env_name, "").strip():
            values[name], sources[name] = env[env_name].strip(), f"env {env_name}"
        elif isinstance(section, dict) and key in section and _is_kind(section[key], kind):
            values[name], sources[name] = str(section[key]), f"file {path}"
        else:
            values[name], sources[name] = default, "default"
    if target:
        values["target"], sources["target"] = target, "flag --target"
    chosen: Target = "sandbox"
    if values["target"] in TARGETS:
        chosen = values["target"]
    else:
        problems.append(
            f"target {values['target']!r} is unknown ({sources['target']}); "
            f"use one of: {', '.join(TARGETS)}"
        )

    secrets = _read_secrets(env, problems)
    register_settings_secrets(secrets, values["tenant_id"])

    roots = root_problems(values["ci_root"], values["live_root"])
    if roots:
        described = f" (ci_root from {sources['ci_root']}, live_root from {sources['live_root']})"
        problems += [f"{problem}{described}" for problem in roots]
        for name in ("ci_root", "live_root"):
            if sources[name] != "default":
                sources[name] = f"default ({sources[name]} refused)"
            values[name] = PLAIN_KEYS[name][3]
    for name, allow_path in URL_KEYS.items():
        problem = url_problem(values[name], allow_path=allow_path) if values[name] else ""
        if problem:
            problems.append(
                f"setting {name} = {display_url(values[name])!r} ({sources[name]}) {problem}"
            )
            values[name] = ""
    timeout = 10.0
    try:
        timeout = float(values["worker_timeout_s"])
    except ValueError:
        problems.append(
            f"worker timeout_s = {values['worker_timeout_s']!r} is not a number of seconds"
        )
    else:
        if not 0 < timeout <= 120:
            problems.append(f"worker timeout_s = {timeout} must be between 0 and 120 seconds")
            timeout = 10.0

    sha = values["sha"] or env.get("GITHUB_SHA", "").strip()
    if sha:
        sources["sha"] = sources["sha"] if values["sha"] else "env GITHUB_SHA"
    elif chosen != "live":
        sha, sources["sha"] = _git_sha(), "git rev-parse HEAD"
        if not sha and chosen == "sandbox":
            sha, sources["sha"] = _secrets.token_hex(6), "random (no git checkout)"
    if chosen != "live":
        try:
            if not sha:
                raise SettingsError(
                    "target ci needs the commit sha: set GITHUB_SHA or SYNC_CI_SHA "
                    "(7-40 lowercase hex)"
                )
            validate_sha(sha)
        except SettingsError as exc:
            problems.append(str(exc))

    runtime, project = _worker_runtime(values, sources, path, problems)
    regions = tuple(_parse_regions(data.get("regions", []), problems))
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
        secrets_file=Path(env["SYNC_CI_SECRETS_FILE"]) if env.get("SYNC_CI_SECRETS_FILE") else None,
        config_path=str(path) if path else "",
        sources=sources,
        worker_runtime=runtime,
        worker_project=project,
    )
    if chosen in ("ci", "live") and check_remote:
        problems += remote_problems(settings)
    return settings, problems


def _worker_runtime(
    values: Mapping[str, str], sources: Mapping[str, str], path: Path | None, problems: list[str]
) -> tuple[Runtime, str]:
    """Check [worker] runtime and project; a project is a wrangler.toml and implies workerd."""
    runtime: Runtime = "python"
    if values["worker_runtime"] in RUNTIMES:
        runtime = "workerd" if values["worker_runtime"] == "workerd" else "python"
    else:
        problems.append(
            f"worker runtime = {values['worker_runtime']!r} ({sources['worker_runtime']}) is "
            f"unknown; use one of: {', '.join(RUNTIMES)}"
        )
    project = values["worker_project"]
    if not project:
        return runtime, ""
    where = Path(project).expanduser()
    if not where.is_absolute() and path and sources["worker_project"].startswith("file "):
        where = path.parent / where
    if where.name != "wrangler.toml" or not where.is_file():
        problems.append(
            f"worker project = {project!r} ({sources['worker_project']}) must name an existing "
            "wrangler.toml (the Worker project to run under workerd)"
        )
        return runtime, ""
    return "workerd", str(where.resolve())


def load_settings(
    *,
    config: str | None = None,
    target: str | None = None,
    env: Mapping[str, str] | None = None,
    check_remote: bool = True,
) -> Settings:
    """Resolve settings: defaults < settings file < SYNC_CI_* env < explicit flags.

    `check_remote=False` is for field commands (doctor, alert, cron, status) on machines that
    talk to the Worker only and hold no bucket credentials. The first problem raises
    SettingsError (saying how many more there are).
    """
    settings, problems = resolve_settings(
        config=config, target=target, env=env, check_remote=check_remote
    )
    if problems:
        more = len(problems) - 1
        suffix = f" (and {more} more: `sync-ci config show` lists them all)" if more else ""
        raise SettingsError(problems[0] + suffix)
    return settings


def _parse_regions(raw: Any, problems: list[str]) -> Iterator[Region]:
    # Shapes and types were checked with the file; here only the URLs.
    if not isinstance(raw, list):
        return
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not all(
            isinstance(item.get(key), str) for key in REGION_REQUIRED
        ):
            continue
        url, proxy = item["url"], str(item.get("proxy", ""))
        bad = [
            f"[[regions]] entry {index + 1} ({item['name']}) {what} {display_url(value)!r} "
            f"{problem}"
            for what, value, problem in (
                ("url", url, url_problem(url, allow_path=True)),
                ("proxy", proxy, url_problem(proxy, allow_path=False) if proxy else ""),
            )
            if problem
        ]
        problems += bad
        if not bad:
            yield Region(
                name=item["name"], url=url.rstrip("/"), colo=item["colo"].upper(), proxy=proxy
            )


def remote_problems(settings: Settings) -> list[str]:
    """List what a `ci` or `live` target lacks: a bucket, credentials, a Worker for live."""
    target = settings.target
    problems = []
    if not settings.bucket:
        problems.append(
            f"target {target} needs a bucket: set [store] bucket in sync-ci.toml or SYNC_CI_BUCKET"
        )
    if not (settings.secrets.access_key_id and settings.secrets.secret_access_key):
        problems.append(
            f"target {target} needs S3 credentials: set SYNC_CI_ACCESS_KEY_ID and "
            "SYNC_CI_SECRET_ACCESS_KEY (or AWS_*) in the environment or SYNC_CI_SECRETS_FILE"
        )
    if target == "live" and not settings.worker_url:
        problems.append(
            "target live needs the production Worker: set [worker] url or SYNC_CI_WORKER_URL"
        )
    return problems


def require_remote(settings: Settings) -> None:
    """Check that a `ci` or `live` target names a bucket, credentials and a Worker."""
    problems = remote_problems(settings)
    if problems:
        raise SettingsError(problems[0])


def _missing(settings: Settings) -> set[str]:
    """The settings this target needs that have no value."""
    if settings.target == "sandbox":
        return set()
    needed = {"bucket", "access_key_id", "secret_access_key"}
    needed |= {"worker_url"} if settings.target == "live" else {"sha"}
    present = {name for name in needed if getattr(settings, name, "")}
    present |= {name for name in needed if getattr(settings.secrets, name, "")}
    return needed - present


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """Return (setting, value, source) rows: secrets and URL user info redacted, gaps marked."""
    missing = _missing(settings)
    rows: list[tuple[str, str, str]] = []
    for name in PLAIN_KEYS:
        value = str(getattr(settings, name))
        if name in URL_KEYS:
            value = display_url(value)
        if name in missing:
            value = "(missing)"
        rows.append((name, value or "(unset)", settings.sources.get(name, "derived")))
    prefix = settings.ci_prefix if settings.target != "live" and settings.sha else "-"
    rows.append(("ci_prefix", prefix, "derived"))
    rows.append(("read_only", str(settings.read_only).lower(), "derived from target"))
    for region in settings.regions:
        rows.append((f"region {region.name}", f"{display_url(region.url)} ({region.colo})", "file"))
    for name, env_names in SECRET_ENV.items():
        present = bool(getattr(settings.secrets, name))
        shown = REDACTED if present else "(missing)" if name in missing else "(unset)"
        rows.append((name, shown, " or ".join(env_names)))
    if settings.sandbox_file:
        rows.append(("sandbox", settings.sandbox_file, "env SYNC_CI_SANDBOX"))
    rows.append(("config_file", settings.config_path or "(none)", "search order"))
    return rows
