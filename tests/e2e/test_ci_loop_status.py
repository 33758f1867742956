"""ci-loop -> status as deployed: a failing pass shows in the status view, a healthy one clears it.

Every step is its own `sync-ci` process against a sandbox of this test's own, faulted and healed
at run time with `sync-ci sandbox-fault`, exactly as a maintainer would do it by hand; once with
the Python Worker, once with the JavaScript one on workerd.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sync_ci import alert_files
from tests.conftest import FaultySandbox, sandbox_env_for
from tests.e2e.conftest import ON_BOTH_RUNTIMES
from tests.field.test_status import CHROMIUM, run_chromium

REPO = Path(__file__).resolve().parents[2]


def sync_ci(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one `sync-ci` command as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "sync_ci", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def data_rows(stdout: str) -> list[list[str]]:
    """The status table's rows, split into cells (the header, rule and verdict lines dropped)."""
    lines = stdout.splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines[2:-1]]


def page_rows(page: str) -> list[tuple[str, str]]:
    """(row class, check cell) for each row of the Sync status page, in page order."""
    return re.findall(
        r'<tr class="(\w+)"[^>]*><td class="state">[^<]*</td><td>[^<]*</td><td>([^<]*)', page
    )


@ON_BOTH_RUNTIMES
def test_a_failed_pass_shows_in_status_until_a_healthy_pass_recovers_it(
    faulty_sandbox: FaultySandbox, tmp_path: Path
) -> None:
    faulty_sandbox()
    ready = tmp_path / "faulty-0" / "ready.json"
    env = {
        **sandbox_env_for(ready, tmp_path / "home"),
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
    }
    repo = tmp_path / "checkout"  # ci-loop and status both default to state/log/alerts here
    repo.mkdir()
    page = tmp_path / "status.html"

    assert sync_ci(env, repo, "sandbox-fault", "--set", "5xx_rate=1").returncode == 0
    failed = sync_ci(env, repo, "ci-loop")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    [degraded] = alert_files.scan(repo / "state/log/alerts")
    assert degraded.degraded and f"alert written to {degraded.path.relative_to(repo)}" in (
        failed.stdout
    )

    assert sync_ci(env, repo, "sandbox-fault", "--clear").returncode == 0
    shown = sync_ci(env, repo, "status", "--html", str(page))
    assert shown.returncode == 1, (shown.stdout, shown.stderr)
    first = data_rows(shown.stdout)[0]
    assert first[:3] == ["FAIL", "ci-loop", degraded.path.name], shown.stdout
    assert "Sync degraded" in first[-1]
    assert shown.stdout.splitlines()[-1] == "1 failing"
    assert page_rows(page.read_text())[0] == ("fail", degraded.path.name)
    if CHROMIUM:
        dom = run_chromium(page, tmp_path / "profile")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert page_rows(dom.stdout)[0] == ("fail", degraded.path.name)
        assert "1 failing" in dom.stdout

    healed = sync_ci(env, repo, "ci-loop")
    assert healed.returncode == 0, (healed.stdout, healed.stderr)
    assert "recovery note" in healed.stdout
    files = alert_files.scan(repo / "state/log/alerts")
    assert [f.kind for f in files] == ["recovered", "degraded"]

    cleared = sync_ci(env, repo, "status", "--html", str(page))
    assert cleared.returncode == 0, (cleared.stdout, cleared.stderr)
    rows = data_rows(cleared.stdout)
    assert [row[:3] for row in rows] == [
        ["ok", "ci-loop", files[0].path.name],
        ["ok", "ci-loop", degraded.path.name],
    ], cleared.stdout
    assert "Sync recovered" in rows[0][-1]
    assert cleared.stdout.splitlines()[-1] == "all clear"
    assert [cls for cls, _ in page_rows(page.read_text())] == ["ok", "ok"]
