"""Every rule's GOOD and BAD examples, discovery, pragmas and the field-scope API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from checks.catalogue import (
    CRONTAB,
    Finding,
    Rule,
    Subject,
    discover,
    example,
    explain,
    field_subject,
    run_rules,
    to_results,
)

EXAMPLES = [
    pytest.param(rule, kind, subject, id=f"{rule.id}-{kind}-{index}")
    for rule in discover()
    for kind, subjects in (("good", rule.good), ("bad", rule.bad))
    for index, subject in enumerate(subjects)
]


@pytest.mark.parametrize(("rule", "kind", "subject"), EXAMPLES)
def test_rule_examples(rule: Rule, kind: str, subject: Subject) -> None:
    outcome = run_rules(scope=subject.scope, subject=subject, select=[rule.id])
    assert [o.rule.id for o in outcome] == [rule.id], f"{rule.id} has no {subject.scope} scope"
    assert not outcome[0].error
    if kind == "bad":
        assert outcome[0].findings, f"{rule.id}: a BAD example yielded no finding"
        assert subject.expected_at, f"{rule.id}: a BAD example pins its findings: at=[(path, line)]"
        found = sorted({(f.path, f.line) for f in outcome[0].findings})
        assert found == list(subject.expected_at), f"{rule.id}: findings landed elsewhere"
    else:
        assert outcome[0].findings == (), f"{rule.id}: a GOOD example yielded findings"


def test_every_rule_is_complete_and_ids_are_unique() -> None:
    rules = discover()
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids)) >= 8
    for rule in rules:
        assert rule.good, rule.id
        assert rule.bad, rule.id
        text = explain(rule)
        assert "**Why:**" in text
        assert "**Fix:**" in text
        assert rule.title in text


def test_field_scope_has_cron_and_credentials_rules() -> None:
    field_ids = {r.id for r in discover() if "field" in r.scopes}
    assert {"SA005", "SA007"} <= field_ids


def test_pragma_allows_a_deliberate_finding() -> None:
    line = "key = 'AKIA" + "Z7Q2M4N8P1R6T3W5'"
    bad = example({"docs/a.md": line + "\n"})
    allowed = example({"docs/a.md": line + "  # sync-ci: allow SA007\n"})
    other = example({"docs/a.md": line + "  # sync-ci: allow SA001\n"})
    assert run_rules(scope="repo", subject=bad, select=["SA007"])[0].findings
    assert run_rules(scope="repo", subject=allowed, select=["SA007"])[0].findings == ()
    assert run_rules(scope="repo", subject=other, select=["SA007"])[0].findings


def test_broken_rule_becomes_an_error_row() -> None:
    def explode(subject: Subject) -> list[Finding]:
        raise ValueError("boom")

    rule = Rule(
        id="SA999",
        title="t",
        scopes=frozenset({"repo"}),
        doc="",
        check=explode,
        good=(),
        bad=(),
        module="x",
    )
    rows = to_results(run_rules(scope="repo", subject=example({}), rules=[rule]))
    assert [(r.id, r.status) for r in rows] == [("SA999", "error")]


def test_findings_become_rows_with_file_and_line() -> None:
    subject = example({"tests/test_x.py": "import boto3\nboto3.client('s3').put_object(Key='k')\n"})
    rows = to_results(run_rules(scope="repo", subject=subject, select=["SA001"]))
    assert [(r.status, r.observed["file"], r.observed["line"]) for r in rows] == [
        ("fail", "tests/test_x.py", 2)
    ]


def test_field_subject_reads_modes_and_flags_readable_secrets(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text("SYNC_CI_TENANT_SECRET=abc\n", encoding="utf-8")
    os.chmod(secrets, 0o644)
    subject = field_subject(crontab="", secret_files=[secrets])
    found = run_rules(scope="field", subject=subject, select=["SA007"])[0].findings
    assert [f.path for f in found] == [str(secrets)]
    os.chmod(secrets, 0o600)
    subject = field_subject(crontab="", secret_files=[secrets])
    assert run_rules(scope="field", subject=subject, select=["SA007"])[0].findings == ()


def test_field_cron_rule_accepts_the_lines_cron_py_renders() -> None:
    from sync_ci.field import cron_lines

    paths = cron_lines.CronPaths(
        exe="/opt/venv/bin/sync-ci",
        state_dir="/tmp/sync-ci",
        repo="/srv/repo",
    )
    text = "".join(cron_lines.render_block(role, paths) for role in cron_lines.ROLES)
    subject = field_subject(crontab=text)
    assert run_rules(scope="field", subject=subject, select=["SA005"])[0].findings == ()
    broken = text.replace(" --silent", "")
    found = run_rules(scope="field", subject=field_subject(crontab=broken), select=["SA005"])
    assert [f.path for f in found[0].findings] == [CRONTAB]
