"""The one target resolver (`sync_ci.attachment.open_target`) decides what each caller kind gets."""

from __future__ import annotations

import ast
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sync_ci import target
from sync_ci.attachment import (
    ATTACHED,
    FIELD,
    FIELD_OR_EPHEMERAL,
    PASS,
    STORE,
    SUITE,
    Need,
    field_settings,
    open_target,
)
from sync_ci.config import Settings, load_settings
from sync_ci.errors import SettingsError, UnreachableError, UsageError
from sync_ci.sandbox.launcher import Sandbox, write_ready_file
from sync_ci.sandbox.ready_file import SandboxInfo
from sync_ci.worker import WorkerClient, WorkerTarget
from tests.conftest import sandbox_env_for

ROOT = Path(__file__).resolve().parent.parent
LOCAL_WORKER = "local reference Worker over the CI prefix"
# What only the resolver may call to decide a target: fill settings from a sandbox, start one,
# start a local Worker over a CI prefix.
DECIDERS = frozenset({"settings_for", "local_ci_worker", "start_sandbox"})
RESOLVER = "sync_ci/attachment.py"


def _remote_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "sync-ci.toml").touch()
    return {
        "HOME": str(tmp_path),
        "SYNC_CI_CONFIG": str(tmp_path / "sync-ci.toml"),
        "SYNC_CI_BUCKET": "real-bucket",
        "SYNC_CI_ACCESS_KEY_ID": "k",
        "SYNC_CI_SECRET_ACCESS_KEY": "s",
        "SYNC_CI_SHA": "a" * 40,
        "SYNC_CI_WORKER_URL": "https://worker.example",
        # Named but absent: only a sandbox target reads it.
        "SYNC_CI_SANDBOX": str(tmp_path / "nope.json"),
        **extra,
    }


def _health(url: str) -> dict[str, object]:
    target_ = WorkerTarget(base_url=url, read_only=True, retries=0)
    with WorkerClient(target_) as client:
        answer = client.get("/_health", retry=False)
    assert answer.status == 200
    document = answer.json()
    assert isinstance(document, dict)
    return document


def _dead(info: SandboxInfo) -> SandboxInfo:
    """The same sandbox, with its Worker on a loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    regions = (replace(info.worker.regions[0], url=url),)
    return replace(info, worker=replace(info.worker, url=url, regions=regions))


# --- ci and live -------------------------------------------------------------------------------


def test_ci_with_a_preview_url_talks_to_that_url_and_starts_nothing(tmp_path: Path) -> None:
    env = _remote_env(tmp_path, SYNC_CI_PREVIEW_URL="https://pr-7.preview.example/")
    settings = load_settings(target="ci", env=env)
    for need in (SUITE, PASS, STORE, FIELD, ATTACHED):
        with open_target(settings, need) as attached:
            assert attached is settings
            assert target.worker_url(attached) == "https://pr-7.preview.example"


def test_live_is_read_only_and_as_loaded_for_every_caller(tmp_path: Path) -> None:
    settings = load_settings(target="live", env=_remote_env(tmp_path))
    for need in (SUITE, PASS, STORE, FIELD, FIELD_OR_EPHEMERAL, ATTACHED):
        with open_target(settings, need) as attached:
            assert attached is settings
            assert attached.read_only
            assert target.worker_url(attached) == "https://worker.example"
    with (
        pytest.raises(UsageError) as caught,
        open_target(settings, SUITE, faults={"5xx_rate": "1"}),
    ):
        pass
    assert str(caught.value) == "--fault and --kv-miss-ms apply to the sandbox only, not to live"


def test_ci_without_a_preview_url_gets_a_local_worker_over_its_ci_prefix_only(
    sandbox_settings: Settings,
) -> None:
    ci = sandbox_settings.with_values(target="ci", preview_url="")
    with open_target(ci, SUITE) as attached:
        local = attached.worker_url
        assert local != sandbox_settings.worker_url
        assert attached.sources["worker_url"] == LOCAL_WORKER
        assert target.worker_url(attached) == local
        # The Worker the resolver started serves this run's CI prefix, nothing above it.
        assert _health(local)["root"] == ci.ci_prefix
        # Its tenant credentials are the ones it was started with.
        assert attached.secrets.tenant_token
    # Stopped with the block.
    with (
        pytest.raises(UnreachableError),
        WorkerClient(WorkerTarget(base_url=local, read_only=True, retries=0)) as client,
    ):
        client.get("/_health", retry=False)


def test_ci_without_a_preview_url_starts_no_worker_for_a_read_only_pass_or_cleanup(
    tmp_path: Path,
) -> None:
    # No store endpoint: a local Worker would refuse to start, so reaching the body proves none did.
    settings = load_settings(target="ci", env=_remote_env(tmp_path))
    for need in (PASS, STORE, FIELD, ATTACHED):
        with open_target(settings, need) as attached:
            assert attached is settings
    local = pytest.raises(SettingsError, match="starts a local Worker over the bucket")
    with local, open_target(settings, SUITE):
        pass


# --- sandbox -----------------------------------------------------------------------------------


def test_sandbox_attach_through_the_ready_file_gets_its_worker_store_and_secrets(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Writer (the launcher's ready file) then reader (the resolver), for each caller kind.
    ready = write_ready_file(sandbox.info, tmp_path / "ready.json")
    settings = load_settings(env=sandbox_env_for(ready, tmp_path / "home"))
    for need in (SUITE, PASS, STORE, FIELD, FIELD_OR_EPHEMERAL, ATTACHED):
        with open_target(settings, need) as attached:
            assert attached.worker_url == sandbox.info.worker.url
            assert attached.endpoint_url == sandbox.info.store.endpoint_url
            assert attached.bucket == sandbox.info.store.bucket
            assert attached.secrets.admin_token == sandbox.info.admin_token
            assert attached.sources["worker_url"] == f"sandbox {ready}"
            assert _health(target.worker_url(attached))["ok"] is True


def test_a_field_command_keeps_its_own_worker_url_and_reports_on_a_dead_sandbox(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    dead = _dead(sandbox.info)
    ready = write_ready_file(dead, tmp_path / "dead.json")
    env = {**sandbox_env_for(ready, tmp_path / "home"), "SYNC_CI_WORKER_URL": "http://127.0.0.1:9"}
    settings = load_settings(env=env, check_remote=False)
    # A suite refuses a sandbox that does not answer ...
    with pytest.raises(UnreachableError, match="is not answering"), open_target(settings, SUITE):
        pass
    # ... a field command reports on it (doctor's checks say what is wrong), its own URL winning.
    for filled in (field_settings(settings), _opened(settings, FIELD_OR_EPHEMERAL)):
        assert filled.worker_url == "http://127.0.0.1:9"
        assert filled.secrets.admin_token == sandbox.info.admin_token
    # Without one, the ready file's.
    assert field_settings(settings.with_values(worker_url="")).worker_url == dead.worker.url


def _opened(settings: Settings, need: Need) -> Settings:
    with open_target(settings, need) as attached:
        return attached


def test_without_a_ready_file_field_commands_start_nothing(tmp_path: Path) -> None:
    env = sandbox_env_for(tmp_path / "unused.json", tmp_path / "home")
    del env["SYNC_CI_SANDBOX"]
    settings = load_settings(env=env, check_remote=False)
    for need in (FIELD, ATTACHED):
        with open_target(settings, need) as attached:
            assert attached is settings
            assert not attached.worker_url


def test_cleanup_on_sandbox_uses_an_explicit_loopback_store_and_refuses_a_remote_one(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    env = sandbox_env_for(tmp_path / "unused.json", tmp_path / "home")
    del env["SYNC_CI_SANDBOX"]
    store = sandbox.info.store
    env |= {"SYNC_CI_ENDPOINT_URL": store.endpoint_url, "SYNC_CI_BUCKET": store.bucket}
    settings = load_settings(env=env)
    with open_target(settings, STORE) as attached:
        assert attached is settings
    remote = settings.with_values(endpoint_url="https://s3.example.com")
    with pytest.raises(UsageError) as caught, open_target(remote, STORE):
        pass
    assert str(caught.value) == (
        "target sandbox must use a loopback store, not 'https://s3.example.com'; "
        "use --target ci for a remote bucket"
    )


def test_faults_asked_of_the_ready_files_sandbox_hold_for_the_block_only(
    sandbox_settings: Settings, tmp_path: Path
) -> None:
    from sync_ci.sandbox.attach import get_faults

    ready = Path(sandbox_settings.sandbox_file)
    settings = load_settings(env=sandbox_env_for(ready, tmp_path / "home"))
    before = get_faults(sandbox_settings)
    with open_target(settings, SUITE, faults={"latency_ms": "1"}) as attached:
        assert get_faults(attached).get("latency_ms") == 1
    assert get_faults(sandbox_settings) == before
    fixed = pytest.raises(UsageError, match="fixed when a sandbox starts")
    with fixed, open_target(settings, SUITE, kv_miss_ms={"SJC": 5}):
        pass


# --- one owner ---------------------------------------------------------------------------------


def deciders_outside_resolver(root: Path) -> Iterator[str]:
    """Yield `path:line name` for each import of a target decider outside the resolver."""
    for path in sorted((root / "sync_ci").rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative == RESOLVER or relative.startswith("sync_ci/sandbox/"):
            continue  # the sandbox defines them (and `sync-ci sandbox` starts its own)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name in DECIDERS:
                        yield f"{relative}:{node.lineno} {alias.name}"


def test_only_the_resolver_decides_a_target(tmp_path: Path) -> None:
    assert list(deciders_outside_resolver(ROOT)) == []
    # The check finds a caller that decides for itself.
    (tmp_path / "sync_ci" / "sandbox").mkdir(parents=True)
    (tmp_path / "sync_ci" / "doctor.py").write_text(
        "def f():\n    from sync_ci.sandbox.attach import settings_for\n", encoding="utf-8"
    )
    assert list(deciders_outside_resolver(tmp_path)) == ["sync_ci/doctor.py:2 settings_for"]


# --- the secrets file --------------------------------------------------------------------------


def test_settings_keep_the_secrets_file_and_doctor_checks_the_one_they_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync_ci.field.doctor_context import Context
    from sync_ci.field.doctor_local import check_tenant

    # The process's own environment names no file: doctor must take it from the settings.
    monkeypatch.delenv("SYNC_CI_SECRETS_FILE", raising=False)
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(f"SYNC_CI_TENANT_TOKEN={'ab' * 32}\n", encoding="utf-8")
    secrets_file.chmod(0o600)
    (tmp_path / "sync-ci.toml").touch()
    env = {
        "HOME": str(tmp_path),
        "SYNC_CI_CONFIG": str(tmp_path / "sync-ci.toml"),
        "SYNC_CI_TENANT_ID": "tenant-1",
        "SYNC_CI_SECRETS_FILE": str(secrets_file),
    }
    # Writer (the settings load) then reader (doctor's owner-only check).
    settings = load_settings(env=env, check_remote=False)
    assert settings.secrets_file == secrets_file
    assert settings.secrets.tenant_token == "ab" * 32

    def row(loaded: Settings) -> tuple[str, str]:
        found = {r.id: r for r in check_tenant(Context(settings=loaded))}["secrets-file"]
        return found.status, found.detail

    assert row(settings) == ("pass", f"{secrets_file} mode 600")
    # A file opened up after the load is caught: the row judges the file, not a copy of its mode.
    secrets_file.chmod(0o640)
    assert row(settings) == ("fail", f"{secrets_file} has mode 640; run: chmod 600 {secrets_file}")
    del env["SYNC_CI_SECRETS_FILE"]
    unset = load_settings(env=env, check_remote=False)
    assert unset.secrets_file is None
    assert row(unset)[0] == "skip"


# --- the tenant a run speaks as ----------------------------------------------------------------


def test_a_tenant_presents_its_configured_token_else_one_derived_from_its_secret(
    tmp_path: Path,
) -> None:
    from sync_ci.config_env import Secrets
    from sync_ci.contract import TENANT_HEADER
    from sync_ci.contract import tenant_token as derive

    base = load_settings(target="live", env=_remote_env(tmp_path, SYNC_CI_TENANT_ID="acme"))
    secret, token = "s" * 64, "t" * 64
    derived = base.with_values(secrets=Secrets(tenant_secret=secret))
    assert target.tenant_token(derived, "acme") == derive(secret, "acme")
    assert target.tenant_token(derived, "other") == derive(secret, "other")
    configured = base.with_values(secrets=Secrets(tenant_secret=secret, tenant_token=token))
    assert target.tenant_token(configured, "acme") == token
    headers = target.tenant_headers(derived)
    assert headers[TENANT_HEADER] == "acme"
    assert derive(secret, "acme") in " ".join(headers.values())
    with pytest.raises(UsageError) as caught:
        target.tenant_headers(base)
    assert str(caught.value) == (
        "no tenant token: set SYNC_CI_TENANT_TOKEN in the environment or SYNC_CI_SECRETS_FILE"
    )
    with pytest.raises(UsageError) as caught:
        target.tenant_headers(derived.with_values(tenant_id=""))
    assert str(caught.value) == "no tenant id: set [tenant] id in sync-ci.toml or SYNC_CI_TENANT_ID"


SECRET, TOKEN = "s" * 64, "t" * 64
DERIVED = "derived from the secret"
# (configured tenant id, secrets, the tenant a run speaks as, the token it presents)
TENANT_TOKENS = {
    "the configured tenant with its token": ("acme", {"tenant_token": TOKEN}, "acme", TOKEN),
    "the configured tenant's token wins over the secret": (
        "acme",
        {"tenant_token": TOKEN, "tenant_secret": SECRET},
        "acme",
        TOKEN,
    ),
    "the configured tenant with only a secret": (
        "acme",
        {"tenant_secret": SECRET},
        "acme",
        DERIVED,
    ),
    "another tenant with a secret": (
        "acme",
        {"tenant_token": TOKEN, "tenant_secret": SECRET},
        "conformance",
        DERIVED,
    ),
    "a run's own tenant when none is configured": (
        "",
        {"tenant_token": TOKEN, "tenant_secret": SECRET},
        "conformance",
        DERIVED,
    ),
    "another tenant with only a token": ("acme", {"tenant_token": TOKEN}, "other", ""),
    "a run's own tenant with only a token": ("", {"tenant_token": TOKEN}, "smoke", ""),
    "nothing configured": ("acme", {}, "acme", ""),
    "no tenant asked": ("", {"tenant_token": TOKEN, "tenant_secret": SECRET}, "", ""),
}


@pytest.mark.parametrize("case", TENANT_TOKENS)
def test_a_configured_token_is_the_configured_tenants_alone(case: str, tmp_path: Path) -> None:
    """One rule for every run: the smoke's and conformance's own tenants derive, never borrow."""
    from sync_ci.config_env import Secrets
    from sync_ci.contract import tenant_token as derive

    configured, secrets, asked, expected = TENANT_TOKENS[case]
    base = load_settings(target="live", env=_remote_env(tmp_path))
    settings = base.with_values(tenant_id=configured, secrets=Secrets(**secrets))
    if expected == DERIVED:
        expected = derive(SECRET, asked)
    assert target.tenant_token(settings, asked) == expected
