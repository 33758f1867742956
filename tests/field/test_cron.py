"""Cron: our block is edited as text; every other byte of the user's crontab survives."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sync_ci import cron
from sync_ci.cron import CronPaths
from sync_ci.errors import SyncCIError, UsageError
from tests.field.conftest import run_cli

# Lines python-crontab would re-render (`0 * * * *` -> `@hourly`, tabs, odd spacing, env lines).
FOREIGN = (
    'MAILTO=""\n'
    "# my own notes\n"
    "0 * * * *   /usr/bin/true   # hourly, spaced oddly\n"
    "@daily\techo tab-separated\n"
    "*/5 * * * * echo 'percent \\% kept'\n"
)


def paths(tmp_path: Path) -> CronPaths:
    return CronPaths(
        exe="/opt/venv/bin/sync-ci",
        flock="/usr/bin/flock",
        lock=str(tmp_path / "doctor.lock"),
        repo="/srv/sync ci",
        secrets_file="/etc/sync-ci/env",
    )


def test_tenant_line_has_schedule_lock_absolute_paths_and_path(tmp_path: Path) -> None:
    line = cron.render_job("tenant", paths(tmp_path))
    assert line.startswith("30 */6 * * * export PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin ")
    assert "SYNC_CI_SECRETS_FILE=/etc/sync-ci/env;" in line
    assert (
        f"/usr/bin/flock -n -E 0 {tmp_path}/doctor.lock /opt/venv/bin/sync-ci doctor --silent"
        in line
    )
    assert line.endswith("|| /opt/venv/bin/sync-ci alert doctor-failed")


def test_maintainer_line_runs_ci_loop_live_from_the_repo_under_flock(tmp_path: Path) -> None:
    line = cron.render_job("maintainer", paths(tmp_path))
    assert line.startswith("0 */6 * * * export PATH=")
    assert "cd '/srv/sync ci' && /usr/bin/flock -n " in line  # quoted: the path has a space
    assert line.endswith("/opt/venv/bin/sync-ci ci-loop --target live")


@pytest.mark.parametrize("bad", ["relative/sync-ci", "/opt/50%/sync-ci", "/opt/a\nb"])
def test_render_refuses_paths_cron_would_mangle(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError):
        cron.render_job("tenant", CronPaths(exe=bad, flock="/usr/bin/flock", lock="/tmp/x.lock"))


def test_apply_then_remove_keeps_foreign_bytes_and_is_idempotent(tmp_path: Path) -> None:
    block = cron.render_block("tenant", paths(tmp_path))
    once = cron.apply_block(FOREIGN, "tenant", block)
    assert once.startswith(FOREIGN)
    assert once.endswith(block)
    assert cron.apply_block(once, "tenant", block) == once
    both = cron.apply_block(once, "maintainer", cron.render_block("maintainer", paths(tmp_path)))
    assert cron.remove_block(cron.remove_block(both, "tenant"), "maintainer") == FOREIGN


def test_update_replaces_only_the_block_in_place(tmp_path: Path) -> None:
    old = (
        cron.apply_block(
            FOREIGN,
            "tenant",
            cron.begin_marker("tenant") + "\n# stale\n" + cron.end_marker("tenant") + "\n",
        )
        + "@reboot echo after\n"
    )
    new = cron.apply_block(old, "tenant", cron.render_block("tenant", paths(tmp_path)))
    assert new.startswith(FOREIGN)
    assert new.endswith("@reboot echo after\n")
    assert "# stale" not in new
    assert new.count(cron.begin_marker("tenant")) == 1


def test_damaged_markers_are_refused() -> None:
    with pytest.raises(SyncCIError, match="damaged"):
        cron.apply_block(cron.begin_marker("tenant") + "\nx\n", "tenant", "y\n")


def test_evaluate_entry_passes_our_line_and_names_each_problem(tmp_path: Path) -> None:
    good = cron.apply_block(FOREIGN, "tenant", cron.render_block("tenant", paths(tmp_path)))
    assert cron.evaluate_entry(good, is_executable=lambda p: True).status == "pass"
    bad = cron.apply_block(
        "",
        "tenant",
        f"{cron.begin_marker('tenant')}\n"
        "* * * * * sync-ci doctor --silent || sync-ci alert doctor-failed\n"
        f"{cron.end_marker('tenant')}\n",
    )
    result = cron.evaluate_entry(bad, is_executable=lambda p: True)
    assert result.status == "fail"
    for fragment in ("schedule '* * * * *'", "no explicit `export PATH", "flock", "relative"):
        assert fragment in result.detail
    assert cron.evaluate_entry(FOREIGN).status == "fail"
    missing = cron.evaluate_entry(good, is_executable=lambda p: False)
    assert "not executable" in missing.detail


def test_rendered_lines_pass_the_sa005_lint(tmp_path: Path) -> None:
    checks_catalogue = pytest.importorskip("checks.catalogue")
    text = cron.apply_block("", "tenant", cron.render_block("tenant", paths(tmp_path)))
    text = cron.apply_block(text, "maintainer", cron.render_block("maintainer", paths(tmp_path)))
    subject = checks_catalogue.field_subject(crontab=text)
    rows = checks_catalogue.to_results(checks_catalogue.run_rules(scope="field", subject=subject))
    assert rows
    assert [r for r in rows if r.status != "pass"] == []


def test_install_uninstall_with_the_real_crontab(
    cron_user: str, tmp_path: Path, fake_exe: Path
) -> None:
    foreign_file = tmp_path / "foreign"
    foreign_file.write_text(FOREIGN)
    subprocess.run(["crontab", "-u", cron_user, str(foreign_file)], check=True)
    assert cron.read_crontab(cron_user) == FOREIGN

    tenant = cron.resolve_paths("tenant", exe=str(fake_exe), state_dir=tmp_path / "state")
    dry = cron.install("tenant", tenant, user=cron_user, dry_run=True)
    assert "+30 */6 * * *" in dry
    assert cron.read_crontab(cron_user) == FOREIGN

    assert cron.install("tenant", tenant, user=cron_user)
    installed = cron.read_crontab(cron_user)
    assert installed.startswith(FOREIGN)
    assert "0 * * * *   /usr/bin/true" in installed
    assert cron.evaluate_entry(installed).status == "pass"
    assert cron.install("tenant", tenant, user=cron_user) == ""  # idempotent: nothing to change

    assert cron.uninstall(("tenant", "maintainer"), user=cron_user)
    assert cron.read_crontab(cron_user) == FOREIGN


def test_cli_install_show_uninstall(
    cron_user: str, fake_exe: Path, field_env: dict[str, str]
) -> None:
    repo = Path(__file__).resolve().parents[2]
    common = ["--user", cron_user]
    done = run_cli(
        field_env,
        "cron",
        "install",
        "--role",
        "maintainer",
        "--exe",
        str(fake_exe),
        "--repo",
        str(repo),
        *common,
    )
    assert done.returncode == 0, done.stderr
    assert "+0 */6 * * *" in done.stdout
    assert "ci-loop --target live" in done.stdout
    shown = run_cli(field_env, "cron", "show", *common)
    assert shown.returncode == 0, shown.stderr
    assert cron.begin_marker("maintainer") in shown.stdout
    gone = run_cli(field_env, "cron", "uninstall", *common)
    assert gone.returncode == 0
    assert "-0 */6 * * *" in gone.stdout
    assert cron.read_crontab(cron_user) == ""
    missing = run_cli(field_env, "cron", "show", *common)
    assert missing.returncode == 1
    assert "no sync-ci cron entry" in missing.stdout


def test_cli_install_refuses_a_missing_executable(
    field_env: dict[str, str], tmp_path: Path
) -> None:
    done = run_cli(
        field_env,
        "cron",
        "install",
        "--role",
        "tenant",
        "--exe",
        str(tmp_path / "nope"),
        "--dry-run",
    )
    assert done.returncode == 2
    assert done.stderr.startswith("sync-ci: error:")
    assert "Traceback" not in done.stderr
