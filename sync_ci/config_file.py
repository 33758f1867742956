"""The settings schema and the settings file: every plain key (its TOML place, environment
variable and default), where `sync-ci.toml` is found, and what it may hold.

A file is parsed and checked here (secrets, unknown keys, wrong types, each problem with its
line), and only reported: `config.resolve_settings` is its one caller, and `load_settings` turns
the first problem into an error.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sync_ci.errors import SettingsError

# Every plain setting: (toml table, toml key, env var, default). Secrets are listed apart
# (`config_env.SECRET_ENV`): they never come from the file.
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
NUMBER_KEYS = frozenset({"worker_timeout_s"})
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
    for candidate in (Path("sync-ci.toml"), user_config_dir(env) / "sync-ci.toml"):
        if candidate.is_file():
            return candidate
    return None


def user_config_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "sync-ci"


def user_state_dir(env: Mapping[str, str]) -> Path:
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


def is_kind(value: Any, kind: str) -> bool:
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
        elif not is_kind(value, expected):
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
