"""Settings resolution: defaults < file < environment < flags; secrets never from the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sync_ci.config import load_settings
from sync_ci.config_cli import describe
from sync_ci.errors import SettingsError

SHA = "0123456789abcdef0123456789abcdef01234567"
REMOTE_ENV = {
    "SYNC_CI_SHA": SHA,
    "SYNC_CI_BUCKET": "robert-storage",
    "SYNC_CI_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "SYNC_CI_SECRET_ACCESS_KEY": "s3cr3t-value-never-shown",
    "SYNC_CI_WORKER_URL": "https://sync.example.test",
}


def run_sync_ci(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run `sync-ci ARGS` from this tree as a user would, with only `env` (plus a plain PATH)."""
    return subprocess.run(
        [sys.executable, "-m", "sync_ci", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1]), **env},
        timeout=120,
        cwd=cwd,
    )


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
    shown = run_sync_ci(["config", "show", "--target", "live"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "s3cr3t-value-never-shown" not in shown.stdout and "robert-storage" in shown.stdout
    bad = run_sync_ci(
        ["config", "show", "--target", "ci"], {"HOME": str(tmp_path), "SYNC_CI_SHA": SHA}, tmp_path
    )
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert lines == [
        "sync-ci: error: target ci needs a bucket: set [store] bucket in sync-ci.toml or "
        "SYNC_CI_BUCKET",
        "sync-ci: error: target ci needs S3 credentials: set SYNC_CI_ACCESS_KEY_ID and "
        "SYNC_CI_SECRET_ACCESS_KEY (or AWS_*) in the environment or SYNC_CI_SECRETS_FILE",
    ]
    # The table is shown anyway, with every missing value marked.
    shown_rows = {line.split()[0]: line.split()[1] for line in bad.stdout.splitlines()[1:]}
    assert shown_rows["bucket"] == shown_rows["access_key_id"] == "(missing)"
    assert shown_rows["secret_access_key"] == "(missing)" and shown_rows["sha"] == SHA


def test_config_show_lists_every_problem_at_once(tmp_path: Path) -> None:
    config = write(tmp_path / "s.toml", '[store]\nbukcet = "b"\n[worker]\ntimeout_s = "10"\n')
    env = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "SYNC_CI_CONFIG": str(config),
        "SYNC_CI_CI_ROOT": "snappy-os/",
        "SYNC_CI_ENDPOINT_URL": "https://user:pw-in-url@s3.example.test/snappy-os",
    }
    shown = run_sync_ci(["config", "show", "--target", "ci"], env, tmp_path)
    assert shown.returncode == 2
    lines = shown.stderr.strip().splitlines()
    assert all(line.startswith("sync-ci: error: ") for line in lines), lines
    text = shown.stderr
    for expected in (
        "line 2: unknown key 'bukcet' in [store]; did you mean 'bucket'?",
        "line 4: worker.timeout_s must be a number, not a string",
        "ci_root = 'snappy-os/' and live_root = 'snappy-os/' are the same prefix",
        "endpoint_url = 'https://***@s3.example.test/snappy-os'",
        "needs the commit sha",
        "needs a bucket",
        "needs S3 credentials",
    ):
        assert expected in text, text
    assert len(lines) == 7
    assert "pw-in-url" not in shown.stdout + shown.stderr and "Traceback" not in text


@pytest.mark.parametrize(
    ("ci_root", "live_root", "relation"),
    [
        ("snappy-os/", "snappy-os/", "are the same prefix"),
        ("snappy-os/ci/", "snappy-os/", "ci_root lies inside live_root"),
        ("prod/", "prod/snappy-os/", "ci_root contains live_root"),
    ],
)
def test_ci_root_never_overlaps_live_root(
    tmp_path: Path, ci_root: str, live_root: str, relation: str
) -> None:
    env = {
        **REMOTE_ENV,
        "HOME": str(tmp_path),
        "SYNC_CI_CI_ROOT": ci_root,
        "SYNC_CI_LIVE_ROOT": live_root,
    }
    for target in ("sandbox", "ci", "live"):
        with pytest.raises(SettingsError) as caught:
            load_settings(env=env, target=target)
        message = str(caught.value)
        assert relation in message and repr(ci_root) in message and repr(live_root) in message
        assert "env SYNC_CI_CI_ROOT" in message and "\n" not in message


@pytest.mark.parametrize("root", ["snappy-os-ci", "/snappy-os-ci/", "a//b/", "a/./b/", "a\tb/"])
def test_malformed_roots_refused(tmp_path: Path, root: str) -> None:
    with pytest.raises(SettingsError, match="ci_root"):
        load_settings(env={"HOME": str(tmp_path), "SYNC_CI_SHA": SHA, "SYNC_CI_CI_ROOT": root})


def test_settings_changed_after_loading_keep_the_root_rule(tmp_path: Path) -> None:
    settings = load_settings(env={"HOME": str(tmp_path), "SYNC_CI_SHA": SHA})
    with pytest.raises(SettingsError, match="same prefix"):
        settings.with_values(ci_root=settings.live_root)
    with pytest.raises(SettingsError, match="ci_root"):
        settings.with_values(ci_root="")


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("SYNC_CI_ENDPOINT_URL", "https://fra1.digitaloceanspaces.com/snappy-os", "has a path"),
        ("SYNC_CI_ENDPOINT_URL", "https://s3.example.test?x=1", "query"),
        ("SYNC_CI_ENDPOINT_URL", "https://AKIDX:pw-endpoint@s3.example.test", "user info"),
        ("SYNC_CI_WORKER_URL", "https://sync.example.test/?root=snappy-os/", "query"),
        ("SYNC_CI_WORKER_URL", "https://sync.example.test/#x", "fragment"),
        ("SYNC_CI_WORKER_URL", "https://me:pw-worker@sync.example.test", "user info"),
        ("SYNC_CI_PREVIEW_URL", "https://me:pw-preview@preview.example.test", "user info"),
    ],
)
def test_endpoint_urls_checked_when_settings_load(
    tmp_path: Path, name: str, value: str, problem: str
) -> None:
    env = {**REMOTE_ENV, "HOME": str(tmp_path), name: value}
    with pytest.raises(SettingsError, match=problem) as caught:
        load_settings(env=env, target="ci")
    assert name.removeprefix("SYNC_CI_").lower() in str(caught.value)
    assert "pw-" not in str(caught.value)


def test_a_worker_may_live_under_a_base_path(tmp_path: Path) -> None:
    env = {**REMOTE_ENV, "HOME": str(tmp_path), "SYNC_CI_WORKER_URL": "https://h.test/sync/"}
    assert load_settings(env=env, target="live").worker_url == "https://h.test/sync"
