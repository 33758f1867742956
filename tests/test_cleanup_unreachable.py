"""A store that stops answering between the listing and the deletion: cleanup exits 3, not 1."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from sync_ci.sandbox.store_server import StoreProcess
from sync_ci.store import Store, StoreEndpoint
from tests.test_cleanup import CI, cli_env, later, run_cli, sha
from tests.test_store_wire import Forwarder, Recording

__all__ = ["cli_env"]


class GoneAtDelete(Forwarder):
    """Forwards the listing; at the first DeleteObjects it drops the request and stops listening."""

    def do_POST(self) -> None:
        server: Any = self.server
        if "delete" not in urlsplit(self.path).query:
            self._forward()
            return
        server.recording.seen.append((self.command, self.path))
        if not server.gone.is_set():
            server.gone.set()
            # Refuse every later connection (botocore's retries end in "could not connect").
            threading.Thread(target=_stop, args=(server,), daemon=True).start()
        self.close_connection = True


def _stop(server: http.server.ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


@pytest.fixture
def vanishing_store(store_server: StoreProcess) -> Iterator[Recording]:
    """A proxy on 127.0.0.1 in front of the store that goes away when the deletion starts."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GoneAtDelete)
    server.daemon_threads = True
    recording = Recording(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.recording = recording  # type: ignore[attr-defined]
    server.upstream = urlsplit(store_server.endpoint_url).netloc  # type: ignore[attr-defined]
    server.gone = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recording
    finally:
        if not server.gone.is_set():  # type: ignore[attr-defined]
            _stop(server)
        thread.join(timeout=30)


@pytest.mark.slow
def test_store_gone_during_deletion_exits_3_not_1(
    cli_env: StoreEndpoint,
    vanishing_store: Recording,
    admin_store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = f"{CI}{sha()}/k"
    admin_store.put(key, b"x")
    monkeypatch.setenv("SYNC_CI_ENDPOINT_URL", vanishing_store.url)
    code = run_cli("--now", later())
    captured = capsys.readouterr()
    assert [m for m, path in vanishing_store.seen if "delete" in path] != [], "no deletion sent"
    assert code == 3, captured.out + captured.err
    assert "Traceback" not in captured.err
    assert "stopped answering" in captured.out
    assert admin_store.head(key) is not None
