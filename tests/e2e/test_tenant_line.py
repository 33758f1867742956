"""The tenant's installed cron line, run as cron runs it, against a Worker whose every route but
`/_health` answers 503: doctor fails the read-path rows, `alert doctor-failed` fires, the alert
waits in the spool while the Worker is down, and once it recovers the next run delivers it and
`/_status` shows it with the failing rows. The Worker is the Python one, then the JavaScript one
on workerd.
"""

from __future__ import annotations

import json
import secrets
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sync_ci.config import Settings
from sync_ci.field import cron, cron_lines, cron_table
from sync_ci.field.alerts import Spool
from sync_ci.field.cron_access import Account
from sync_ci.field.status import fetch_status
from tests.conftest import FaultySandbox
from tests.e2e.conftest import ON_BOTH_RUNTIMES, installed_command, run_as_cron
from tests.field.test_doctor import sandbox_control

READ_ROWS = ("worker-install", "worker-catalog")


def write_tenant(settings: Settings, home: Path, tenant: str) -> tuple[Path, Path]:
    """A tenant machine's settings file (the sandbox as its production Worker) and secrets file."""
    config = home / ".config" / "sync-ci" / "sync-ci.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'target = "live"\n\n[worker]\nurl = "{settings.worker_url}"\n\n[tenant]\nid = "{tenant}"\n'
    )
    secrets_file = home / ".config" / "sync-ci" / "secrets.env"
    secrets_file.write_text(f"SYNC_CI_TENANT_SECRET={settings.secrets.tenant_secret}\n")
    secrets_file.chmod(0o600)
    return config, secrets_file


@ON_BOTH_RUNTIMES
def test_tenant_line_reports_a_broken_worker_to_status(
    faulty_sandbox: FaultySandbox, root_crontab: Account, tmp_path: Path
) -> None:
    worker = faulty_sandbox(faults={"5xx_rate": "1"})
    home = tmp_path / "tenant-home"
    account = replace(root_crontab, home=str(home))
    tenant = f"e2e-{secrets.token_hex(4)}"
    config, secrets_file = write_tenant(worker, home, tenant)
    state = home / ".local" / "state" / "sync-ci"  # not there yet: a fresh machine
    exe = Path(sys.prefix) / "bin" / "sync-ci"
    if not exe.exists():
        pytest.skip(f"no console script at {exe} (install the package into this venv)")
    paths = cron.resolve_paths(
        "tenant", exe=str(exe), config=str(config), secrets_file=str(secrets_file), state_dir=state
    )
    cron_table.install("tenant", paths)
    command = installed_command(account, "tenant")
    assert command == cron_lines.render_job("tenant", paths).split(None, 5)[5]

    broken = run_as_cron(account, command)
    assert "Traceback" not in broken.stderr, broken.stderr
    report = json.loads((state / "last-doctor.json").read_text())
    rows = {r["id"]: r for r in report["results"]}
    assert rows["worker"]["status"] == "pass"  # /_health is fine: only the read path is broken
    failing = sorted(i for i, r in rows.items() if r["status"] in ("fail", "error"))
    assert failing == sorted(READ_ROWS), report
    for row_id in READ_ROWS:
        assert "answered 503" in rows[row_id]["detail"]
        assert row_id in broken.stdout  # --silent prints the failing rows, nothing else
    assert "alert doctor-failed not delivered" in broken.stderr  # /_alert answers 503 too
    assert broken.returncode == 1
    spool = Spool(state)
    (waiting,) = spool.pending()
    assert {r["id"] for r in spool.load(waiting).rows} >= set(READ_ROWS)

    sandbox_control(worker, "/_sandbox/faults", {"clear": True})
    healed = run_as_cron(account, command)
    assert (healed.returncode, healed.stdout, healed.stderr) == (0, "", "")
    assert spool.pending() == []  # doctor's spool check delivered the waiting alert

    check = fetch_status(worker)["checks"]["doctor-failed"]
    assert check["last_tenant"] == tenant and check["count"] == 1
    assert {r["id"] for r in check["last_rows"]} >= set(READ_ROWS)
    assert any("answered 503" in r.get("detail", "") for r in check["last_rows"])
