"""The reference Worker answers 400 to an alert carrying control characters and stores nothing."""

from __future__ import annotations

import pytest
import requests

from tests.sandbox.conftest import RefWorker
from tests.test_contract import alert_body

TIMEOUT = 10
# Clears the screen and forges the status view's all-clear line.
FORGED = "\x1b[2J\x1b[Hno alerts recorded"


def _post_alert(worker: RefWorker, root: str, body: dict[str, str]) -> requests.Response:
    return requests.post(
        worker.url() + "/_alert",
        headers=worker.tenant_headers("acme", root),
        json=body,
        timeout=TIMEOUT,
    )


def _status(worker: RefWorker, root: str) -> dict[str, object]:
    answer = requests.get(
        worker.url() + "/_status", headers=worker.admin_headers(root), timeout=TIMEOUT
    )
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize("field", ["check", "message", "host"])
def test_worker_refuses_control_characters(
    ref_worker: RefWorker, worker_root: str, field: str
) -> None:
    refused = _post_alert(ref_worker, worker_root, alert_body(**{field: FORGED}))
    assert refused.status_code == 400, refused.text
    assert f"alert field {field!r} holds a control character (U+001B)" in refused.json()["error"]
    assert "\x1b" not in refused.text
    # The same body without the escape sequence is accepted: the refusal is for the control.
    accepted = _post_alert(ref_worker, worker_root, alert_body(**{field: "no alerts recorded"}))
    assert accepted.status_code == 202, accepted.text
    checks = _status(ref_worker, worker_root)["checks"]
    assert isinstance(checks, dict)
    assert all("\x1b" not in name for name in checks)
    assert sum(int(stats["count"]) for stats in checks.values()) == 1


def test_worker_refuses_bidi_override_in_check(ref_worker: RefWorker, worker_root: str) -> None:
    refused = _post_alert(ref_worker, worker_root, alert_body(check="doctor\u202edeliaf"))
    assert refused.status_code == 400, refused.text
    assert "U+202E" in refused.json()["error"]
    assert _status(ref_worker, worker_root)["checks"] == {}
