"""Settings resolution: defaults < file < environment < flags; secrets never from the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sync_ci.config import describe, load_settings
from sync_ci.errors import SettingsError

SHA = "0123456789abcdef0123456789abcdef01234567"
REMOTE_ENV = {
    "SYNC_CI_SHA": SHA,
    "SYNC_CI_BUCKET": "robert-storage",
    "SYNC_CI_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "SYNC_CI_SECRET_ACCESS_KEY": "s3cr3t-value-never-shown",
    "SYNC_CI_WORKER_URL": "https://sync.example.test",
}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_fresh_checkout_defaults_to_sandbox(tmp_path: Path) -> None:
    settings = load_settings(env={"HOME": str(tmp_path), "SYNC_CI_SHA": "abcdef1"})
    assert settings.target == "sandbox"
    assert settings.ci_prefix == "snappy-os-ci/abcdef1/"
    assert not settings.read_only


def test_precedence_file_env_flag(tmp_path: Path) -> None:
    config = write(
        tmp_path / "s.toml", 'target = "live"\n[store]\nbucket = "from-file"\nlive_root = "prod/"\n'
    )
    env = {
        **REMOTE_ENV,
        "HOME": str(tmp_path),
        "SYNC_CI_CONFIG": str(config),
        "SYNC_CI_BUCKET": "from-env",
    }
    settings = load_settings(env=env)
    assert (settings.target, settings.bucket, settings.live_root) == ("live", "from-env", "prod/")
    assert settings.read_only
    assert settings.sources["bucket"] == "env SYNC_CI_BUCKET"
    assert load_settings(env=env, target="ci").target == "ci"


def test_secret_in_settings_file_is_refused(tmp_path: Path) -> None:
    config = write(tmp_path / "s.toml", '[store]\nsecret_access_key = "oops"\n')
    with pytest.raises(SettingsError, match="holds a secret"):
        load_settings(config=str(config), env={"HOME": str(tmp_path)})


def test_secrets_file_must_be_owner_only(tmp_path: Path) -> None:
    secrets = write(tmp_path / "env", "SYNC_CI_SECRET_ACCESS_KEY=abc\nSYNC_CI_ACCESS_KEY_ID=key\n")
    secrets.chmod(0o644)
    env = {**REMOTE_ENV, "HOME": str(tmp_path), "SYNC_CI_SECRETS_FILE": str(secrets)}
    del env["SYNC_CI_SECRET_ACCESS_KEY"]
    with pytest.raises(SettingsError, match="chmod 600"):
        load_settings(env=env, target="ci")
    secrets.chmod(0o600)
    assert load_settings(env=env, target="ci").secrets.secret_access_key == "abc"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SYNC_CI_TARGET": "prod"}, "target 'prod' is unknown"),
        ({"SYNC_CI_SHA": "NOTHEX1"}, "not 7-40 lowercase hex"),
        ({"SYNC_CI_LIVE_ROOT": "/abs/"}, "live_root"),
        ({"SYNC_CI_CI_ROOT": "a/../b/"}, "ci_root"),
        ({"SYNC_CI_WORKER_TIMEOUT_S": "soon"}, "not a number"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env={"HOME": str(tmp_path), "SYNC_CI_SHA": "abcdef1", **env})


def test_remote_targets_need_bucket_and_credentials(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="needs a bucket"):
        load_settings(env={"HOME": str(tmp_path), "SYNC_CI_SHA": SHA}, target="ci")
    env = {"HOME": str(tmp_path), "SYNC_CI_SHA": SHA, "SYNC_CI_BUCKET": "b-b-b"}
    with pytest.raises(SettingsError, match="credentials"):
        load_settings(env=env, target="ci")
    with pytest.raises(SettingsError, match="needs the production Worker"):
        load_settings(
            env={**REMOTE_ENV, "HOME": str(tmp_path), "SYNC_CI_WORKER_URL": ""}, target="live"
        )


def test_ci_sha_from_github(tmp_path: Path) -> None:
    env = {**REMOTE_ENV, "HOME": str(tmp_path), "GITHUB_SHA": SHA}
    del env["SYNC_CI_SHA"]
    settings = load_settings(env=env, target="ci")
    assert settings.ci_prefix == f"snappy-os-ci/{SHA}/"
    assert settings.sources["sha"] == "env GITHUB_SHA"


def test_describe_redacts_every_secret(tmp_path: Path) -> None:
    env = {**REMOTE_ENV, "HOME": str(tmp_path), "SYNC_CI_ADMIN_TOKEN": "admintokenvalue"}
    settings = load_settings(env=env, target="live")
    text = repr(describe(settings)) + repr(settings)
    assert "s3cr3t-value-never-shown" not in text and "admintokenvalue" not in text
    assert "***" in text


def test_config_show_cli_redacts_and_errors_cleanly(tmp_path: Path) -> None:
    env = {**REMOTE_ENV, "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    shown = subprocess.run(
        [sys.executable, "-m", "sync_ci", "config", "show", "--target", "live"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert "s3cr3t-value-never-shown" not in shown.stdout and "robert-storage" in shown.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "sync_ci", "config", "show", "--target", "ci"],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "SYNC_CI_SHA": SHA},
        timeout=60,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("sync-ci: error: target ci needs a bucket")
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
