"""No secret and no escape sequence reaches any output, whatever a command meets on the wire.

Every command that renders runs as a subprocess with sentinel secrets that carry a trailing
newline, against an adversary on 127.0.0.1 that answers 403 and echoes the request's headers
(Authorization included) into its body, or against a closed port. Then stdout, stderr and every
file written under the test's directory are searched for the sentinels.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sync_ci import contract, redaction
from sync_ci.errors import WorkerError
from sync_ci.sandbox.store_server import StoreProcess
from sync_ci.worker import WorkerClient, WorkerTarget, expect
from tests.conftest import new_bucket

REPO = Path(__file__).resolve().parents[1]
MARK_ENV = "SYNC_CI_LEAK_TEST_MARK"
COMMAND_TIMEOUT_S = 180
# How often the command lines of a command's children are sampled while it runs.
POLL_S = 0.05
TENANT = "leaktest"
# Echoed back by the adversary on top of the request's own headers: it clears the screen.
FORGED = "\x1b[2J\x1b[Hno alerts recorded\u202e"


class EchoForbidden(BaseHTTPRequestHandler):
    """Pass /_health, answer 403 to everything else, quoting the request's headers and body back.

    A healthy /_health lets every command get past its preflight to the requests that carry a
    secret (tenant token, admin token, S3 signature); the 403 then hands the secret back.
    """

    protocol_version = "HTTP/1.1"

    def _health(self) -> None:
        root = self.headers.get(contract.ROOT_HEADER, "snappy-os/")
        body = json.dumps(
            {"ok": True, "contract": 1, "version": f"adversary {FORGED}", "root": root}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("cf-ray", f"{secrets.token_hex(8)}-SJC")
        self.send_header("content-length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answer(self) -> None:
        auth = self.headers.get("authorization", "")
        assert isinstance(self.server, Adversary)
        self.server.seen.append(auth.split(" ")[0].lower() or "none")
        if self.path.split("?")[0] == "/_health" and self.command in ("GET", "HEAD"):
            self._health()
            return
        length = int(self.headers.get("content-length") or 0)
        sent = self.rfile.read(min(length, 65536)).decode("utf-8", "replace") if length else ""
        # The secret first: clients cut an error body to its first couple of hundred characters.
        echo = (
            f"{FORGED} you sent authorization: {auth}\n{self.requestline}\n{self.headers}\n{sent}"
        )
        if auth.startswith("AWS4-HMAC-SHA256"):
            # S3-shaped, so botocore puts the message (with the signed Credential) in its error.
            message = echo.replace("&", "&amp;").replace("<", "&lt;")
            body = (
                "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                f"<Message>{message}</Message></Error>"
            ).encode()
            kind = "application/xml"
        else:
            body = json.dumps({"error": echo, "code": 403}).encode()
            kind = "application/json"
        self.send_response(403)
        self.send_header("content-type", kind)
        self.send_header("x-echo-authorization", auth.replace("\n", " ").replace("\r", " "))
        self.send_header("content-length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


class Adversary(ThreadingHTTPServer):
    """The server, with the authorization scheme of each request it got ('none' when absent)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoForbidden)
        self.seen: list[str] = []

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def adversary() -> Iterator[Adversary]:
    """A 403-and-echo server on 127.0.0.1 of this test's own."""
    server = Adversary()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def closed_port() -> str:
    """Base URL of a port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sentinels:
    """Secret values as set in the environment (each with a trailing newline)."""

    access_key_id: str
    secret_access_key: str
    tenant_secret: str
    admin_token: str

    def env(self) -> dict[str, str]:
        """The environment variables that carry them."""
        return {
            "SYNC_CI_ACCESS_KEY_ID": self.access_key_id,
            "SYNC_CI_SECRET_ACCESS_KEY": self.secret_access_key,
            "SYNC_CI_TENANT_SECRET": self.tenant_secret,
            "SYNC_CI_ADMIN_TOKEN": self.admin_token,
        }

    def forbidden(self) -> dict[str, str]:
        """Every text that must not appear: each value stripped, its random core, derived tokens."""
        found: dict[str, str] = {}
        for name, value in self.env().items():
            found[name] = value.strip()
            found[f"{name} (core)"] = value.strip()[-20:]
        for form, secret in (("stripped", self.tenant_secret.strip()), ("raw", self.tenant_secret)):
            token = contract.tenant_token(secret, TENANT)
            found[f"tenant token ({form} secret)"] = token
            found[f"tenant token ({form} secret, core)"] = token[:24]
        return found


@pytest.fixture
def sentinels() -> Sentinels:
    """Fresh sentinel values for this test."""
    return Sentinels(
        access_key_id=f"AKIA{secrets.token_hex(8).upper()}\n",
        secret_access_key=f"sntl/{secrets.token_hex(18)}\n",
        tenant_secret=f"sntl-tenant-{secrets.token_hex(16)}\n",
        admin_token=f"sntl-admin-{secrets.token_hex(16)}\n",
    )


def leak_env(tmp_path: Path, sentinels: Sentinels, url: str) -> dict[str, str]:
    """A hermetic environment: sentinel secrets, every endpoint at `url`, GitHub Actions on."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    config = home / "sync-ci.toml"
    # A probe region for the latency gate, at the same endpoint (the adversary answers as SJC).
    config.write_text(f'[[regions]]\nname = "sjc"\nurl = "{url}"\ncolo = "SJC"\n')
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state-home"),
        "PYTHONPATH": str(REPO),
        # Temporary files (a Locust job file, say) land under the test's directory, and are read.
        "TMPDIR": str(tmp_path / "tmp"),
        "SYNC_CI_CONFIG": str(config),
        "SYNC_CI_SHA": secrets.token_hex(20),
        "SYNC_CI_STATE_DIR": str(tmp_path / "state"),
        "SYNC_CI_MIRROR_DIR": str(tmp_path / "mirror"),
        "SYNC_CI_BUCKET": "leak-bucket",
        "SYNC_CI_ENDPOINT_URL": url,
        "SYNC_CI_WORKER_URL": url,
        "SYNC_CI_PREVIEW_URL": url,
        "SYNC_CI_WORKER_TIMEOUT_S": "5",
        "SYNC_CI_TENANT_ID": TENANT,
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md"),
        # Inherited by every process the command starts: how `watch_command_lines` finds them.
        MARK_ENV: secrets.token_hex(8),
        **sentinels.env(),
    }
    return env


def run_watched(
    env: dict[str, str], argv: list[str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `argv`; also return the command line of every process it started, sampled as it runs."""
    needle = f"{MARK_ENV}={env[MARK_ENV]}".encode()
    seen: dict[int, str] = {}
    with (cwd / "command.out").open("w+") as out, (cwd / "command.err").open("w+") as err:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + COMMAND_TIMEOUT_S
            while process.poll() is None and time.monotonic() < deadline:
                seen.update(command_lines(needle, exclude=process.pid))
                time.sleep(POLL_S)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(argv, process.returncode, out.read(), err.read())
    (cwd / "command.out").unlink()
    (cwd / "command.err").unlink()
    return done, sorted(seen.values())


def command_lines(needle: bytes, *, exclude: int) -> dict[int, str]:
    """Command lines of the live processes whose environment holds `needle`."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            argv = (entry / "cmdline").read_bytes()
        except OSError:  # gone already, or not ours to read
            continue
        found[int(entry.name)] = argv.replace(b"\0", b" ").decode("utf-8", "replace")
    return found


def leaks(found: dict[str, str], forbidden: dict[str, str]) -> list[str]:
    """Name every (output, secret) pair where the secret shows."""
    return [
        f"{secret} in {where}"
        for where, text in found.items()
        for secret, value in forbidden.items()
        if value in text
    ]


# A committed credential for the lint to find: the finding must name it, never quote it.
CREDENTIAL_FILE = 'AWS_SECRET_ACCESS_KEY = "{value}"\n'

# (name, argument lists run one after another in one directory): the second of a pair reads what
# the first wrote (doctor -> alert reads last-doctor.json, ci-loop -> status reads the alert file).
COMMANDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "smoke-ci": (("smoke", "--target", "ci", "--json", "{tmp}/r.json", "--junit", "{tmp}/r.xml"),),
    "smoke-live": (
        ("smoke", "--target", "live", "--json", "{tmp}/r.json", "--junit", "{tmp}/r.xml"),
    ),
    "ci-loop-then-status": (
        ("ci-loop", "--target", "live", "--json", "{tmp}/r.json", "--junit", "{tmp}/r.xml"),
        ("status", "--html", "{tmp}/status.html"),
    ),
    "doctor-then-alert": (
        ("doctor", "--heartbeat", "--json", "{tmp}/r.json", "--junit", "{tmp}/r.xml"),
        ("alert", "doctor-failed", "--message", "doctor found failures"),
    ),
    "doctor-silent": (("doctor", "--silent"),),
    "status": (("status", "--html", "{tmp}/status.html"),),
    "gate-load": (
        ("gate", "load", "--target", "ci", "--timeout", "5", "--json", "{tmp}/r.json"),
        (
            *("gate", "load", "--target", "ci", "--timeout", "5", "--junit", "{tmp}/r.xml"),
            *("--html", "{tmp}/gates.html"),
        ),
    ),
    "gate-latency": (
        (
            *("gate", "latency", "--target", "ci", "--timeout", "5", "--json", "{tmp}/r.json"),
            *("--html", "{tmp}/gates.html"),
        ),
    ),
    # Locust master and worker subprocesses: their command lines are searched too.
    "gate-latency-locust": (
        (
            *("gate", "latency", "--target", "ci", "--engine", "locust", "--processes", "1"),
            *("--timeout", "5", "--junit", "{tmp}/r.xml"),
        ),
    ),
}
ONCE: dict[str, tuple[tuple[str, ...], ...]] = {
    "lint": (
        ("lint", "--format", "github", "--json", "{tmp}/r.json", "--junit", "{tmp}/r.xml", "src"),
    ),
    "config-show": (("config", "show"),),
}
BEARER, SIGV4 = "bearer", "aws4-hmac-sha256"
# The authorization schemes each case sends the adversary (so it echoes a secret back).
SECRET_ON_WIRE: dict[tuple[str, str], tuple[str, ...]] = {
    ("smoke-ci", "worker-403"): (BEARER,),
    ("smoke-ci", "store-403"): (SIGV4,),
    ("smoke-live", "store-403"): (SIGV4,),
    ("ci-loop-then-status", "worker-403"): (BEARER,),
    ("ci-loop-then-status", "store-403"): (SIGV4, BEARER),
    ("doctor-then-alert", "worker-403"): (BEARER,),
    ("doctor-then-alert", "store-403"): (BEARER,),
    ("gate-load", "worker-403"): (BEARER,),
    ("gate-load", "store-403"): (BEARER,),
    ("status", "worker-403"): (BEARER,),
    ("status", "store-403"): (BEARER,),
}
# worker-403: the real (moto) store, a Worker that passes /_health and answers 403 to the rest;
# store-403: the store is the adversary too (its 403 quotes the signed Credential); closed: no
# one listens.
ENDPOINTS = ("worker-403", "store-403", "closed")


@pytest.fixture
def run_all(
    tmp_path: Path,
    sentinels: Sentinels,
    adversary: Adversary,
    closed_port: str,
    store_server: StoreProcess,
) -> Callable[[str, tuple[tuple[str, ...], ...]], dict[str, str]]:
    """Run a sequence of commands against one kind of endpoint; return every output by name."""

    def run(endpoint: str, commands: tuple[tuple[str, ...], ...]) -> dict[str, str]:
        env = leak_env(tmp_path, sentinels, closed_port if endpoint == "closed" else adversary.url)
        if endpoint == "worker-403":
            # moto accepts any credentials, so the sentinel keys sign real requests.
            env["SYNC_CI_ENDPOINT_URL"] = store_server.endpoint_url
            env["SYNC_CI_BUCKET"] = new_bucket(store_server, "leak").bucket
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / "settings.py").write_text(
            CREDENTIAL_FILE.format(value=sentinels.secret_access_key.strip())
        )
        found: dict[str, str] = {}
        for index, command in enumerate(commands):
            argv = [sys.executable, "-m", "sync_ci", *(a.format(tmp=tmp_path) for a in command)]
            done, children = run_watched(env, argv, tmp_path)
            where = f"{index}:{command[0]}"
            found[f"{where} stdout"], found[f"{where} stderr"] = done.stdout, done.stderr
            found[f"{where} child command lines"] = "\n".join(children)
            assert "Traceback" not in done.stdout + done.stderr, (command, done.stderr)
            if "--html" in command:
                # Wherever a result document is written, whatever its verdict, so is the page
                # (a command stopped by an error line writes neither).
                page = command[command.index("--html") + 1].format(tmp=tmp_path)
                reports = [a for a in command if a.endswith(("r.json", "r.xml"))]
                written = [r for r in reports if Path(r.format(tmp=tmp_path)).is_file()]
                expected = bool(written) if reports else True  # status writes its page always
                assert Path(page).is_file() == expected, (command, done.stderr)
        found.update(files_under(tmp_path, skip=("src/settings.py", "home/sync-ci.toml")))
        # What may hold failure details (alert files, spool, last-doctor.json, --json, --junit).
        for path in tmp_path.rglob("*"):
            name = str(path.relative_to(tmp_path))
            kept = name.startswith("state/") or name in ("r.json", "r.xml")
            if path.is_file() and (kept or name.endswith(".html")):
                assert path.stat().st_mode & 0o077 == 0, f"{name} is readable by others"
        return found

    return run


def files_under(root: Path, *, skip: tuple[str, ...]) -> dict[str, str]:
    """Every file under `root` (but `skip`) as text, by relative path; a .gz file as what it holds.

    (Hypothesis keeps its derived Unicode tables gzipped under ~/.cache/sync-ci/: read as bytes,
    compressed data would hold escape bytes by chance and hide a secret by design.)
    """
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_file() and name not in skip:
            data = path.read_bytes()
            if name.endswith(".gz"):
                data = gzip.decompress(data)
            found[name] = data.decode("utf-8", "replace")
    return found


def escapes(found: dict[str, str]) -> list[str]:
    """Name every output that carries a raw escape character or bidi override."""
    return [
        f"{char!r} in {where}"
        for where, text in found.items()
        for char in ("\x1b", "\x9b", "\u202e")
        if char in text
    ]


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_leaks_a_secret_or_an_escape(
    run_all: Callable[[str, tuple[tuple[str, ...], ...]], dict[str, str]],
    adversary: Adversary,
    sentinels: Sentinels,
    name: str,
    endpoint: str,
) -> None:
    found = run_all(endpoint, COMMANDS[name])
    if endpoint != "closed":
        # Not vacuous: the command talked to the adversary, and handed it the secret to echo.
        assert adversary.seen, "the command never reached the adversary"
        for scheme in SECRET_ON_WIRE.get((name, endpoint), ()):
            assert scheme in adversary.seen, (scheme, sorted(set(adversary.seen)))
    assert leaks(found, sentinels.forbidden()) == []
    assert escapes(found) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ONCE))
def test_lint_and_config_show_leak_nothing(
    run_all: Callable[[str, tuple[tuple[str, ...], ...]], dict[str, str]],
    sentinels: Sentinels,
    name: str,
) -> None:
    found = run_all("closed", ONCE[name])
    assert leaks(found, sentinels.forbidden()) == []
    if name == "lint":
        # The committed credential is found (so the run did look at it), named but not quoted.
        assert "SA007" in found["0:lint stdout"] + found["r.json"]


# --- the adversary and the search really catch a leak (what the tests above would see) ---------


@pytest.fixture
def nothing_registered() -> Iterator[None]:
    """No secret registered in this process: the raw text a missing redaction step would print."""
    redaction.forget_secrets()
    try:
        yield
    finally:
        redaction.forget_secrets()


@pytest.mark.usefixtures("nothing_registered")
def test_the_adversary_hands_a_token_back_into_an_error_line(
    adversary: Adversary, sentinels: Sentinels
) -> None:
    target = WorkerTarget(base_url=adversary.url, read_only=True, timeout_s=10)
    token = contract.tenant_token(sentinels.tenant_secret.strip(), TENANT)
    with WorkerClient(target) as client:
        answer = client.get("/_status", headers={"authorization": f"Bearer {token}"})
    with pytest.raises(WorkerError) as caught:
        expect(answer, 200)
    raw = str(caught.value)
    found = {"error line": raw, "html": answer.body.decode()}
    assert "tenant token (stripped secret)" in " ".join(leaks(found, sentinels.forbidden()))
    assert escapes(found)  # the forged escape sequence arrives raw too
    # ...and the redaction step every renderer and error line uses masks it once registered.
    redaction.register_secrets([token])
    assert leaks({"error line": redaction.clean(raw)}, sentinels.forbidden()) == []
    assert escapes({"error line": redaction.clean(raw)}) == []


@pytest.mark.usefixtures("nothing_registered")
def test_an_unstripped_secret_is_quoted_by_the_header_error(
    adversary: Adversary, sentinels: Sentinels
) -> None:
    target = WorkerTarget(base_url=adversary.url, read_only=True, timeout_s=10)
    with WorkerClient(target) as client, pytest.raises(WorkerError) as caught:
        client.get("/_status", headers={"authorization": f"Bearer {sentinels.admin_token}"})
    raw = str(caught.value)
    assert "SYNC_CI_ADMIN_TOKEN" in " ".join(leaks({"error": raw}, sentinels.forbidden()))
    redaction.register_secrets([sentinels.admin_token])
    assert leaks({"error": redaction.clean(raw)}, sentinels.forbidden()) == []


def test_the_watcher_sees_a_secret_on_a_child_command_line(
    tmp_path: Path, sentinels: Sentinels
) -> None:
    env = leak_env(tmp_path, sentinels, "http://127.0.0.1:9")
    secret = sentinels.secret_access_key.strip()
    # A parent that hands the secret to a child on its command line (what must never happen).
    parent = [sys.executable, "-c", CHILD_WITH_SECRET, secret]
    done, children = run_watched(env, parent, tmp_path)
    assert done.returncode == 0, done.stderr
    found = {"child command lines": "\n".join(children)}
    assert "SYNC_CI_SECRET_ACCESS_KEY in child command lines" in leaks(found, sentinels.forbidden())
    assert not (tmp_path / "command.out").exists()


CHILD_WITH_SECRET = (
    "import subprocess, sys; subprocess.run(['sh', '-c', 'sleep 1', 'sh', sys.argv[1]], check=True)"
)
