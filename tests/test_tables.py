"""Every table that is not a report goes through `report.render_rows`: cleaned cells, one line each."""

from __future__ import annotations

import secrets

from checks.catalogue import discover
from checks.cli import render_list
from sync_ci.field.status import render_text
from sync_ci.field.status_rows import StatusRow
from sync_ci.redaction import register_secrets
from sync_ci.report_text import render_rows


def test_cells_are_masked_escaped_and_kept_as_written() -> None:
    token = secrets.token_hex(16)
    register_secrets([token])
    table = render_rows(
        [("token", f"Bearer {token}", "env"), ("timeout", "5.0", "default"), ("id", "007", "file")],
        headers=("setting", "value", "from"),
    )
    assert token not in table and "Bearer ***" in table
    assert "5.0" in table and "007" in table  # numbers are not reformatted
    assert len(table.splitlines()) == 4  # a header and one line per row
    escaped = render_rows([("name", "a\nb\x1b[2J")])
    assert len(escaped.splitlines()) == 1 and "\x1b" not in escaped


def test_status_table_and_lint_list_are_drawn_by_it() -> None:
    token = secrets.token_hex(16)
    register_secrets([token])
    row = StatusRow(
        source="field",
        name="doctor-failed",
        failing=True,
        count=2,
        tenants=1,
        last_seen="2026-12-01T06:30:00Z",
        detail=f"token {token} refused\x1b[31m",
    )
    text = render_text([row])
    assert token not in text and "\x1b" not in text
    assert text.splitlines()[0].split() == [
        "state",
        "source",
        "check",
        "count",
        "tenants",
        "last",
        "seen",
        "detail",
    ]
    rules = list(discover())
    listed = render_list(rules)
    assert listed.splitlines()[0].split() == ["id", "scope", "title"]
    assert all(r.id in listed for r in rules)
