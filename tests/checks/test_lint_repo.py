"""`python -m checks` over the real tree (passes) and over copies broken on purpose (fails)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.checks.conftest import REPO

WORKFLOW = ".github/workflows/sync-ci.yml"
CHECKOUT_SHA = "11bd71901bbe5b1630ceea73d27597364c9af683"


def lint(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "checks", *args, str(root)],
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard: the lint of a repo copy takes minutes on a loaded machine
        cwd=REPO,
        check=False,
    )


def failing_ids(root: Path) -> set[str]:
    done = lint(root, "--scope", "repo", "--format", "json")
    assert done.returncode in (0, 1), done.stderr
    document = json.loads(done.stdout)
    return {r["id"] for r in document["results"] if r["status"] != "pass"}


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_the_real_tree_passes_its_own_catalogue() -> None:
    done = lint(REPO, "--scope", "repo", "--format", "json")
    document = json.loads(done.stdout)
    assert done.returncode == 0, [r["detail"] for r in document["results"] if r["status"] != "pass"]
    assert document["counts"]["pass"] >= 8


def _production_write(root: Path) -> None:
    (root / "tests" / "test_injected.py").write_text(
        "import boto3\n\nROOT = 'snappy-os/'\n\n\ndef test_seed() -> None:\n"
        "    s3 = boto3.client('s3')\n    s3.put_object(Bucket='b', Key=f'{ROOT}catalog.json')\n",
        encoding="utf-8",
    )


def _unpinned_action(root: Path) -> None:
    replace(root / WORKFLOW, f"actions/checkout@{CHECKOUT_SHA}", "actions/checkout@v4")


def _inline_secret(root: Path) -> None:
    key = "AKIA" + "Q7ZT3M9W2X4R8N6P"  # assembled here so this file holds no key shape
    (root / "sync_ci" / "injected.py").write_text(f'ACCESS_KEY_ID = "{key}"\n', encoding="utf-8")


def _softened_threshold(root: Path) -> None:
    replace(
        root / "sync_ci/gates/thresholds.py", 'kind="below", limit=2000', 'kind="below", limit=3000'
    )


def _cron_without_silent(root: Path) -> None:
    replace(root / "sync_ci/field/cron_lines.py", "doctor --silent", "doctor")


def _retention(root: Path) -> None:
    replace(root / WORKFLOW, "cleanup --older-than 7d", "cleanup --older-than 30d")


def _no_timeout(root: Path) -> None:
    replace(
        root / "sync_ci" / "worker.py",
        '    session.mount("http://", adapter)\n',
        '    session.mount("http://", adapter)\n    session.get(target.base_url)\n',
    )


def _unguarded_client(root: Path) -> None:
    # Not on the ci-loop path: every client built anywhere in sync_ci/ goes through the builders.
    (root / "sync_ci" / "gates" / "injected.py").write_text(
        "import aiohttp\n\n\ndef raw() -> aiohttp.ClientSession:\n"
        "    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))\n",
        encoding="utf-8",
    )


@pytest.mark.parametrize(
    ("breaks", "rule_id"),
    [
        pytest.param(_production_write, "SA001", id="test-writes-production-root"),
        pytest.param(_no_timeout, "SA002", id="request-without-timeout"),
        pytest.param(_unguarded_client, "SA003", id="unguarded-client"),
        pytest.param(_softened_threshold, "SA004", id="softened-threshold"),
        pytest.param(_cron_without_silent, "SA005", id="doctor-cron-not-silent"),
        pytest.param(_unpinned_action, "SA006", id="unpinned-action"),
        pytest.param(_inline_secret, "SA007", id="inline-secret"),
        pytest.param(_retention, "SA008", id="retention-30d"),
    ],
)
def test_a_broken_copy_fails_naming_the_rule(
    repo_copy: Path, breaks: Callable[[Path], None], rule_id: str
) -> None:
    breaks(repo_copy)
    assert failing_ids(repo_copy) == {rule_id}
    done = lint(repo_copy, "--scope", "repo")
    assert done.returncode == 1
    assert rule_id in done.stdout


def test_github_format_annotates_findings(repo_copy: Path) -> None:
    _unpinned_action(repo_copy)
    done = lint(repo_copy, "--scope", "repo", "--format", "github")
    assert done.returncode == 1
    annotations = [line for line in done.stdout.splitlines() if line.startswith("::error ")]
    assert any(f"file={WORKFLOW.replace(':', '%3A')}" in a and "SA006" in a for a in annotations)
    assert "| " in done.stdout  # the step summary table, printed when GITHUB_STEP_SUMMARY is unset


def test_list_explain_and_usage_errors() -> None:
    listed = lint(REPO, "--list")
    assert listed.returncode == 0
    assert "SA001" in listed.stdout
    assert "repo+field" in listed.stdout
    explained = lint(REPO, "--explain", "sa004")
    assert explained.returncode == 0
    assert "**Why:**" in explained.stdout
    unknown = lint(REPO, "--explain", "SA999")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == ["sync-ci: error: no rule 'SA999'; see --list"]
    unmatched = lint(REPO, "--select", "SA999")
    assert unmatched.returncode == 2
    assert unmatched.stderr.startswith("sync-ci: error:")


def test_sync_ci_lint_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from sync_ci.cli import main

    assert main(["lint", "--select", "SA006,SA008", str(REPO)]) == 0
    out = capsys.readouterr().out
    assert "SA006" in out
    assert "SA008" in out
    assert "SA001" not in out
