"""Cron: our block is edited as text; every other byte of the user's crontab survives."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from sync_ci.errors import SyncCIError, UsageError
from sync_ci.field import cron, cron_access, cron_lines, cron_table
from sync_ci.field.cron_lines import CronPaths
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
        state_dir=str(tmp_path / "state"),
        repo="/srv/sync ci",
        secrets_file="/etc/sync-ci/env",
    )


def test_tenant_line_has_schedule_state_dir_absolute_paths_and_path(tmp_path: Path) -> None:
    line = cron_lines.render_job("tenant", paths(tmp_path))
    assert line.startswith("30 */6 * * * export PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin ")
    assert f"SYNC_CI_STATE_DIR={tmp_path}/state " in line
    assert "SYNC_CI_SECRETS_FILE=/etc/sync-ci/env;" in line
    assert line.endswith(
        "; /opt/venv/bin/sync-ci doctor --silent || /opt/venv/bin/sync-ci alert doctor-failed"
    )


def test_lines_take_no_lock_of_their_own(tmp_path: Path) -> None:
    """doctor and ci-loop hold the lock themselves; a flock around them would hold it first."""
    for role in cron_lines.ROLES:
        assert "flock" not in cron_lines.render_job(role, paths(tmp_path))


def test_maintainer_line_runs_ci_loop_live_from_the_repo(tmp_path: Path) -> None:
    line = cron_lines.render_job("maintainer", paths(tmp_path))
    assert line.startswith("0 */6 * * * export PATH=")
    # quoted: the path has a space
    assert line.endswith("; cd '/srv/sync ci' && /opt/venv/bin/sync-ci ci-loop --target live")


@pytest.mark.parametrize("bad", ["relative/sync-ci", "/opt/50%/sync-ci", "/opt/a\nb"])
def test_render_refuses_paths_cron_would_mangle(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError):
        cron_lines.render_job("tenant", CronPaths(exe=bad, state_dir="/tmp/state"))


def test_apply_then_remove_keeps_foreign_bytes_and_is_idempotent(tmp_path: Path) -> None:
    block = cron_lines.render_block("tenant", paths(tmp_path))
    once = cron_lines.apply_block(FOREIGN, "tenant", block)
    assert once.startswith(FOREIGN)
    assert once.endswith(block)
    assert cron_lines.apply_block(once, "tenant", block) == once
    both = cron_lines.apply_block(
        once, "maintainer", cron_lines.render_block("maintainer", paths(tmp_path))
    )
    assert cron_lines.remove_block(cron_lines.remove_block(both, "tenant"), "maintainer") == FOREIGN


def test_update_replaces_only_the_block_in_place(tmp_path: Path) -> None:
    old = (
        cron_lines.apply_block(
            FOREIGN,
            "tenant",
            cron_lines.begin_marker("tenant")
            + "\n# stale\n"
            + cron_lines.end_marker("tenant")
            + "\n",
        )
        + "@reboot echo after\n"
    )
    new = cron_lines.apply_block(old, "tenant", cron_lines.render_block("tenant", paths(tmp_path)))
    assert new.startswith(FOREIGN)
    assert new.endswith("@reboot echo after\n")
    assert "# stale" not in new
    assert new.count(cron_lines.begin_marker("tenant")) == 1


def test_damaged_markers_are_refused() -> None:
    with pytest.raises(SyncCIError, match="damaged"):
        cron_lines.apply_block(cron_lines.begin_marker("tenant") + "\nx\n", "tenant", "y\n")


def test_evaluate_entry_passes_our_line_and_names_each_problem(tmp_path: Path) -> None:
    good = cron_lines.apply_block(
        FOREIGN, "tenant", cron_lines.render_block("tenant", paths(tmp_path))
    )
    assert cron_lines.evaluate_entry(good, access=lambda p, want: "").status == "pass"
    bad = cron_lines.apply_block(
        "",
        "tenant",
        f"{cron_lines.begin_marker('tenant')}\n"
        "* * * * * sync-ci doctor --silent || sync-ci alert doctor-failed\n"
        f"{cron_lines.end_marker('tenant')}\n",
    )
    result = cron_lines.evaluate_entry(bad, access=lambda p, want: "")
    assert result.status == "fail"
    for fragment in ("schedule '* * * * *'", "no explicit `export PATH", "relative"):
        assert fragment in result.detail
    assert cron_lines.evaluate_entry(FOREIGN).status == "fail"
    asked: list[tuple[str, str]] = []

    def refuse(path: str, want: str) -> str:
        asked.append((path, want))
        return f"{path} is out of reach"

    missing = cron_lines.evaluate_entry(good, access=refuse)
    assert "sync-ci executable /opt/venv/bin/sync-ci is out of reach" in missing.detail
    assert ("/etc/sync-ci/env", "r") in asked  # the secrets file must be readable
    assert (f"{tmp_path}/state", "create") in asked  # and the state directory creatable


def test_a_line_wrapped_in_flock_is_named_as_never_running(tmp_path: Path) -> None:
    """The old line: `flock -n LOCK sync-ci ci-loop` holds the lock ci-loop then finds busy."""
    old = cron_lines.render_job("maintainer", paths(tmp_path)).replace(
        "&& /opt", "&& /usr/bin/flock -n /tmp/ci-loop.lock /opt"
    )
    text = (
        f"{cron_lines.begin_marker('maintainer')}\n{old}\n{cron_lines.end_marker('maintainer')}\n"
    )
    result = cron_lines.evaluate_entry(text, access=lambda p, want: "")
    assert result.status == "fail"
    assert "wrapped in `flock`" in result.detail
    assert "cron install --role maintainer" in result.detail


def test_access_follows_owner_group_other_and_every_directory_on_the_way(
    tmp_path: Path,
) -> None:
    nobody = cron_access.Account(
        name="nobody2", uid=54321, gid=54321, groups=frozenset({54321}), home="/"
    )
    assert cron_access.permits(nobody, 0o100750, 54321, 0, "rx")
    assert not cron_access.permits(nobody, 0o100750, 0, 0, "x")
    assert cron_access.permits(nobody, 0o100750, 0, 54321, "rx")
    assert not cron_access.permits(nobody, 0o100700, 0, 54321, "r")
    assert cron_access.permits(nobody, 0o100755, 0, 0, "rx")
    root = cron_access.Account(name="root", uid=0, gid=0, groups=frozenset({0}), home="/root")
    assert cron_access.permits(root, 0o100600, 1, 1, "rw") and not cron_access.permits(
        root, 0o100600, 1, 1, "x"
    )
    assert cron_access.access_problem(nobody, "/bin/sh", "x") == ""
    script = tmp_path / "sync-ci"  # pytest's temp root is owner-only: out of reach for others
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    why = cron_access.access_problem(nobody, str(script), "x")
    assert "out of reach of nobody2" in why and "not searchable" in why
    assert cron_access.access_problem(root, str(script), "x") == ""
    assert cron_access.access_problem(root, str(tmp_path / "a" / "b"), "create") == ""


def test_a_script_whose_interpreter_is_out_of_reach_is_refused(tmp_path: Path) -> None:
    """A console script is only as runnable as its `#!` interpreter (a venv under /root)."""
    nobody = cron_access.Account(name="nobody2", uid=54321, gid=54321, groups=frozenset(), home="/")
    with tempfile.TemporaryDirectory(dir="/tmp") as open_dir:
        os.chmod(open_dir, 0o755)  # noqa: S103 -- others must reach it: that is the case tested
        script = Path(open_dir) / "sync-ci"
        script.write_text(f"#!{tmp_path}/python\n")
        script.chmod(0o755)
        why = cron_access.access_problem(nobody, str(script), "x")
        assert "interpreter" in why and str(tmp_path) in why
        script.write_text("#!/bin/sh\n")
        assert cron_access.access_problem(nobody, str(script), "x") == ""


def test_rendered_lines_pass_the_sa005_lint(tmp_path: Path) -> None:
    checks_catalogue = pytest.importorskip("checks.catalogue")
    text = cron_lines.apply_block("", "tenant", cron_lines.render_block("tenant", paths(tmp_path)))
    text = cron_lines.apply_block(
        text, "maintainer", cron_lines.render_block("maintainer", paths(tmp_path))
    )
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
    assert cron_table.read_crontab(cron_user) == FOREIGN

    tenant = cron.resolve_paths("tenant", exe=str(fake_exe), state_dir=tmp_path / "state")
    dry = cron_table.install("tenant", tenant, user=cron_user, dry_run=True)
    assert "+30 */6 * * *" in dry
    assert cron_table.read_crontab(cron_user) == FOREIGN

    assert cron_table.install("tenant", tenant, user=cron_user)
    installed = cron_table.read_crontab(cron_user)
    assert installed.startswith(FOREIGN)
    assert "0 * * * *   /usr/bin/true" in installed
    assert cron_lines.evaluate_entry(installed).status == "pass"
    assert (
        cron_table.install("tenant", tenant, user=cron_user) == ""
    )  # idempotent: nothing to change

    assert cron_table.uninstall(("tenant", "maintainer"), user=cron_user)
    assert cron_table.read_crontab(cron_user) == FOREIGN


def test_cli_install_for_another_user_refuses_root_only_paths(
    cron_user: str, fake_exe: Path, field_env: dict[str, str]
) -> None:
    """Root installing for a user: an executable in root's own temp dir is refused (exit 2)."""
    repo = Path(__file__).resolve().parents[2]
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
        "--user",
        cron_user,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("sync-ci: error: the cron job would run as " + cron_user)
    assert "sync-ci executable" in done.stderr and done.stderr.count("\n") == 1
    assert cron_table.read_crontab(cron_user) == ""


def test_cli_show_checks_the_line_as_its_user_and_uninstall_removes_it(
    cron_user: str, fake_exe: Path, field_env: dict[str, str], tmp_path: Path
) -> None:
    """A line installed with root's paths passes for root but `cron show --user` names why not."""
    paths = cron.resolve_paths("tenant", exe=str(fake_exe), state_dir=tmp_path / "state")
    cron_table.install("tenant", paths, user=cron_user)
    assert (
        cron_lines.evaluate_entry(cron_table.read_crontab(cron_user)).status == "pass"
    )  # for root
    shown = run_cli(field_env, "cron", "show", "--user", cron_user)
    assert shown.returncode == 1
    assert cron_lines.begin_marker("tenant") in shown.stdout
    assert f"out of reach of {cron_user}" in shown.stderr
    gone = run_cli(field_env, "cron", "uninstall", "--user", cron_user)
    assert gone.returncode == 0
    assert "-30 */6 * * *" in gone.stdout
    assert cron_table.read_crontab(cron_user) == ""
    missing = run_cli(field_env, "cron", "show", "--user", cron_user)
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
