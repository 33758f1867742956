"""Secrets are stripped and checked where they are read, and registered for redaction on load."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from sync_ci.config import load_settings
from sync_ci.config_env import SECRET_ENV
from sync_ci.contract import tenant_token
from sync_ci.errors import SettingsError
from sync_ci.redaction import redact
from tests.test_config import run_sync_ci

SHA = "0123456789abcdef0123456789abcdef01234567"


def sentinel(label: str) -> str:
    """A fresh secret value this test alone uses."""
    return f"{label}-{secrets.token_hex(8)}"


def base_env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "SYNC_CI_SHA": SHA, "SYNC_CI_BUCKET": "b-b-b"}


def test_environment_secrets_are_stripped(tmp_path: Path) -> None:
    values = {name: sentinel(name) for names in SECRET_ENV.values() for name in names[:1]}
    env = {**base_env(tmp_path), **{k: f"  {v}\r\n" for k, v in values.items()}}
    held = load_settings(env=env, target="ci").secrets
    assert held.access_key_id == values["SYNC_CI_ACCESS_KEY_ID"]
    assert held.secret_access_key == values["SYNC_CI_SECRET_ACCESS_KEY"]
    assert held.tenant_secret == values["SYNC_CI_TENANT_SECRET"]
    assert held.tenant_token == values["SYNC_CI_TENANT_TOKEN"]
    assert held.admin_token == values["SYNC_CI_ADMIN_TOKEN"]


def test_a_blank_secret_counts_as_unset(tmp_path: Path) -> None:
    value = sentinel("aws")
    env = {**base_env(tmp_path), "SYNC_CI_SECRET_ACCESS_KEY": " \n", "AWS_SECRET_ACCESS_KEY": value}
    env["SYNC_CI_ACCESS_KEY_ID"] = "AKIDBLANKTEST"
    assert load_settings(env=env, target="ci").secrets.secret_access_key == value


@pytest.mark.parametrize("inner", ["a b", "a\nb", "a\tb", "a\x1b[2Jb", "a\u200bb", "a\x00b"])
@pytest.mark.parametrize("variable", [n for names in SECRET_ENV.values() for n in names])
def test_a_secret_with_whitespace_or_controls_inside_is_refused(
    tmp_path: Path, variable: str, inner: str
) -> None:
    value = sentinel("bad").replace("-", inner)
    with pytest.raises(SettingsError) as caught:
        load_settings(env={**base_env(tmp_path), variable: value})
    message = str(caught.value)
    assert variable in message and "whitespace or a control character" in message
    assert value.strip() not in message and "bad" not in message
    assert "\n" not in message


def test_secrets_file_values_are_stripped_and_checked(tmp_path: Path) -> None:
    key, secret = sentinel("AKID"), sentinel("file-secret")
    path = tmp_path / "secrets.env"
    path.write_text(
        f"SYNC_CI_ACCESS_KEY_ID = {key}  \r\nexport SYNC_CI_SECRET_ACCESS_KEY='{secret}'\r\n",
        encoding="utf-8",
    )
    path.chmod(0o600)
    env = {**base_env(tmp_path), "SYNC_CI_SECRETS_FILE": str(path)}
    held = load_settings(env=env, target="ci").secrets
    assert (held.access_key_id, held.secret_access_key) == (key, secret)
    path.write_text(f"# keys\nSYNC_CI_ADMIN_TOKEN={secret} more\n", encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_settings(env=env)
    message = str(caught.value)
    assert "SYNC_CI_ADMIN_TOKEN" in message and f"{path} line 2" in message
    assert secret not in message


def test_loading_registers_every_secret_the_token_and_the_key_id(tmp_path: Path) -> None:
    values = {
        "SYNC_CI_ACCESS_KEY_ID": sentinel("AKID"),
        "SYNC_CI_SECRET_ACCESS_KEY": sentinel("s3"),
        "SYNC_CI_TENANT_SECRET": sentinel("tenant"),
        "SYNC_CI_ADMIN_TOKEN": sentinel("admin"),
    }
    env = {**base_env(tmp_path), **{k: v + "\n" for k, v in values.items()}}
    env["SYNC_CI_TENANT_ID"] = "joe"
    derived = tenant_token(values["SYNC_CI_TENANT_SECRET"], "joe")
    text = " | ".join([*values.values(), derived])
    assert redact(text) != "***" + " | ***" * 4  # nothing registered before loading
    load_settings(env=env, target="ci")
    assert redact(text) == "***" + " | ***" * 4
    assert redact(f"Bearer {derived}\n") == "Bearer ***\n"


def test_a_refused_secret_never_reaches_the_terminal(tmp_path: Path) -> None:
    value = sentinel("leak") + " tail"
    done = run_sync_ci(
        ["smoke", "--target", "ci"],
        {**base_env(tmp_path), "PATH": "/usr/bin:/bin", "SYNC_CI_TENANT_SECRET": value},
        tmp_path,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "SYNC_CI_TENANT_SECRET" in lines[0], done.stderr
    assert "leak" not in done.stdout + done.stderr


def test_a_stand_in_access_key_id_is_not_masked_everywhere(tmp_path: Path) -> None:
    # The sandbox store's key id is the word "sandbox"; masking it would turn every
    # "target sandbox" line into "target ***". Real key ids are 16 characters or more.
    env = {**base_env(tmp_path), "SYNC_CI_ACCESS_KEY_ID": "standin"}
    env["AWS_SECRET_ACCESS_KEY"] = sentinel("with-standin")
    load_settings(env=env, target="ci")
    assert redact("the standin store") == "the standin store"
    assert redact(env["AWS_SECRET_ACCESS_KEY"]) == "***"
