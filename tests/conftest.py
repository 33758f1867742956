"""Session fixtures: real servers on 127.0.0.1, each test with its own bucket or prefix.

The test firewall: every botocore S3 client created while the tests run, however it was built
(`boto3.client`, a botocore session, `sync_ci.store.build_client`), gets a hook that refuses a
write outside this test's prefixes, `snappy-os-ci/<sha>/` for the shas its fixtures handed out
(`ci_sha`, the sandbox environments, `SYNC_CI_SHA`). A client that `build_client` guards with a
CI-shaped prefix policy may also write under that prefix; the sandbox admin client (loopback
only) and the cleanup writer keep their own guards. A test that must write elsewhere on purpose
(one that tests the guards themselves) says so with `@pytest.mark.unguarded_store`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
import pytest

import sync_ci.store
from sync_ci import guards
from sync_ci.attachment import SUITE, open_target
from sync_ci.config import Settings, load_settings
from sync_ci.errors import GuardViolation
from sync_ci.sandbox.launcher import Sandbox, start_sandbox, start_store, write_ready_file
from sync_ci.sandbox.store_server import StoreKind, StoreProcess
from sync_ci.store import Store, StoreEndpoint, open_store

# The loopback-only rule: this autouse fixture fails a test that opens a socket off this machine.
from tests.loopback_guard import loopback_only  # noqa: F401

OPT_OUT = "unguarded_store"
CI_ROOT = "snappy-os-ci/"
PRODUCTION_ROOT = "snappy-os/"
OWN_POLICY = "_sync_ci_test_policy"


@dataclass(slots=True)
class StoreFirewall:
    """What the running test may write: under CI prefixes of the shas its fixtures handed out."""

    shas: set[str] = field(default_factory=set)
    opted_out: bool = False

    def allow(self, sha: str) -> str:
        """Let this test write under `snappy-os-ci/<sha>/`; return the sha."""
        self.shas.add(sha)
        return sha

    def prefixes(self) -> set[str]:
        """This test's own prefixes (its shas, and SYNC_CI_SHA under each CI root in force)."""
        shas = set(self.shas)
        env_sha = os.environ.get("SYNC_CI_SHA", "")
        if guards.SHA_SEGMENT.fullmatch(env_sha):
            shas.add(env_sha)
        roots = {CI_ROOT, os.environ.get("SYNC_CI_CI_ROOT", "") or CI_ROOT}
        return {f"{root}{sha}/" for root in roots for sha in shas}

    def policy_for(self, own: guards.WritePolicy | None) -> guards.WritePolicy | None:
        """The policy a client answers to in this test (None: its own guard is enough)."""
        if self.opted_out or (own is not None and (own.loopback_admin or own.cleanup_root)):
            return None
        prefixes = self.prefixes()
        if own is not None and not own.read_only:
            prefixes |= {p for p in own.write_prefixes if is_ci_shaped(p)}
        if not prefixes:
            return guards.read_only_policy()
        return guards.WritePolicy(read_only=False, write_prefixes=tuple(sorted(prefixes)))


def is_ci_shaped(prefix: str) -> bool:
    """True for `<root>/<sha>/` outside the production root: where a CI run may write."""
    head, _, sha = prefix.removesuffix("/").rpartition("/")
    return (
        bool(head)
        and prefix.endswith("/")
        and bool(guards.SHA_SEGMENT.fullmatch(sha))
        and not prefix.startswith(PRODUCTION_ROOT)
    )


FIREWALL = StoreFirewall()


def install_store_firewall(client: Any) -> None:
    """Hook the test firewall into an S3 client; it runs after the client's own guard, if any."""

    def check(params: dict[str, Any], model: Any, **_: Any) -> None:
        policy = FIREWALL.policy_for(getattr(client, OWN_POLICY, None))
        if policy is None:
            return
        try:
            guards.check_s3_call(policy, model.name, str(model.http.get("method", "POST")), params)
        except GuardViolation as exc:
            raise GuardViolation(
                f"test firewall: {exc}; a test writes only under its own snappy-os-ci/<sha>/ "
                f"(mark it @pytest.mark.{OPT_OUT} if that is the point of the test)"
            ) from None

    client.meta.events.register(
        "before-parameter-build.s3", check, unique_id="sync-ci-test-firewall"
    )


_create_client = botocore.session.Session.create_client
_install_s3_guard = guards.install_s3_guard


def _creating_client(self: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
    client = _create_client(self, *args, **kwargs)
    if client.meta.service_model.service_name == "s3":
        install_store_firewall(client)
    return client


def _installing_guard(client: Any, policy: guards.WritePolicy) -> None:
    _install_s3_guard(client, policy)
    setattr(client, OWN_POLICY, policy)  # what build_client asked for, for the firewall to read


# At import, before any test builds a client: every botocore session of this process.
botocore.session.Session.create_client = _creating_client  # type: ignore[method-assign]
sync_ci.store.install_s3_guard = _installing_guard  # type: ignore[attr-defined]


def pytest_configure(config: pytest.Config) -> None:
    """Register the opt-out marker of the test firewall."""
    config.addinivalue_line(
        "markers",
        f"{OPT_OUT}: this test may write outside its own snappy-os-ci/<sha>/ (it tests the guards)",
    )


@pytest.fixture(autouse=True)
def store_firewall(request: pytest.FixtureRequest) -> Iterator[StoreFirewall]:
    """Reset the firewall for this test: no prefixes until its fixtures hand out a sha."""
    FIREWALL.shas.clear()
    FIREWALL.opted_out = request.node.get_closest_marker(OPT_OUT) is not None
    yield FIREWALL
    FIREWALL.shas.clear()
    FIREWALL.opted_out = False


STORE_KIND: StoreKind = (
    "seaweedfs" if os.environ.get("SYNC_CI_TEST_STORE") == "seaweedfs" else "moto"
)


@pytest.fixture(scope="session")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    """One object store per test process (moto, or SeaweedFS when SYNC_CI_TEST_STORE=seaweedfs)."""
    server = start_store(STORE_KIND, data_dir=tmp_path_factory.mktemp("store"))
    try:
        yield server
    finally:
        server.stop()


def new_bucket(store_server: StoreProcess, prefix: str = "t") -> StoreEndpoint:
    """Create a fresh, empty bucket on the test store and return its endpoint."""
    endpoint = StoreEndpoint(
        bucket=f"{prefix}-{secrets.token_hex(6)}",
        endpoint_url=store_server.endpoint_url,
        region_name="us-east-1",
        access_key_id=store_server.access_key_id,
        secret_access_key=store_server.secret_access_key,
    )
    open_store(endpoint, guards.sandbox_admin_policy()).ensure_bucket()
    return endpoint


@pytest.fixture
def store_endpoint(store_server: StoreProcess) -> StoreEndpoint:
    """A fresh, empty bucket of this test's own."""
    return new_bucket(store_server)


@pytest.fixture
def admin_store(store_endpoint: StoreEndpoint) -> Store:
    """An unguarded-by-prefix client for arranging and inspecting the test bucket (loopback only)."""
    return open_store(store_endpoint, guards.sandbox_admin_policy())


@pytest.fixture
def ci_sha(store_firewall: StoreFirewall) -> str:
    """A fresh per-test commit sha (this test may write under `snappy-os-ci/<ci_sha>/`)."""
    return store_firewall.allow(secrets.token_hex(20))


def sandbox_env_for(ready_file: Path, home: Path) -> dict[str, str]:
    """A hermetic environment for a sandbox run: nothing comes from the real home or config."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "sync-ci.toml"
    config.touch()
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state-home"),
        "SYNC_CI_CONFIG": str(config),
        "SYNC_CI_TARGET": "sandbox",
        "SYNC_CI_SHA": FIREWALL.allow(secrets.token_hex(20)),
        "SYNC_CI_STATE_DIR": str(home / "state"),
        "SYNC_CI_MIRROR_DIR": str(home / "mirror"),
        "SYNC_CI_SANDBOX": str(ready_file),
    }


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox (store + seeded live root + reference Worker) per test process; no faults."""
    with start_sandbox(store=STORE_KIND, workdir=tmp_path_factory.mktemp("sandbox")) as running:
        yield running


@pytest.fixture(scope="session")
def sandbox_ready_file(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session sandbox's ready file (what SYNC_CI_SANDBOX names)."""
    return write_ready_file(sandbox.info, tmp_path_factory.mktemp("sandbox-ready") / "ready.json")


@pytest.fixture
def sandbox_env(
    sandbox_ready_file: Path, tmp_path: Path, store_firewall: StoreFirewall
) -> dict[str, str]:
    """This test's environment for the session sandbox: its own sha, state and mirror dirs."""
    return sandbox_env_for(sandbox_ready_file, tmp_path / "home")


@pytest.fixture
def sandbox_settings(sandbox_env: dict[str, str]) -> Iterator[Settings]:
    """Settings for this test attached to the session sandbox (writes go under ci_prefix)."""
    with open_target(load_settings(env=sandbox_env), SUITE) as settings:
        yield settings


FaultySandbox = Callable[..., Settings]


@pytest.fixture
def faulty_sandbox(tmp_path: Path) -> Iterator[FaultySandbox]:
    """Start short-lived sandboxes of this test's own (faults at start or run time stay here)."""
    started: list[Sandbox] = []
    with ExitStack() as stack:

        def start(
            faults: Mapping[str, str] | None = None, kv_miss_ms: Mapping[str, int] | None = None
        ) -> Settings:
            workdir = tmp_path / f"faulty-{len(started)}"
            running = start_sandbox(
                store=STORE_KIND, faults=faults, kv_miss_ms=kv_miss_ms, workdir=workdir
            )
            started.append(stack.enter_context(running))
            ready = write_ready_file(running.info, workdir / "ready.json")
            env = sandbox_env_for(ready, workdir / "home")
            return stack.enter_context(open_target(load_settings(env=env), SUITE))

        yield start


@pytest.fixture
def ci_store(store_endpoint: StoreEndpoint, ci_sha: str) -> Store:
    """The per-commit CI-prefix client: writes only under `snappy-os-ci/<ci_sha>/` (the firewall refuses the rest)."""
    return open_store(
        store_endpoint, guards.prefix_policy(store_endpoint.bucket, f"snappy-os-ci/{ci_sha}/")
    )
