"""The Sync status page's pictures from real sources, checked for structure in headless Chromium.

ci-loop passes run for real against a sandbox of this test's own (a failure, a recovery, a
healthy pass), tenants heartbeat and alert through its Worker, `sync-ci status --html` draws the
page, Chromium loads it with networking off: the DOM must hold the right marks and the screenshot
the right colours. The same checks fail on a page with its failing cell or threshold removed.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sync_ci import charts, pass_history
from sync_ci.attachment import field_settings
from sync_ci.ci_loop import run_pass
from sync_ci.config import Settings, load_settings
from sync_ci.field import alerts, status_page, status_rows
from sync_ci.field.doctor import send_heartbeat
from sync_ci.pass_history import History, PassRecord
from tests.browser import (
    Element,
    console_lines,
    find,
    needs_chromium,
    parse_dom,
    read_png,
    run_chromium,
)
from tests.conftest import FaultySandbox, sandbox_env_for
from tests.field.test_doctor import sandbox_control

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
# The timeline sits in the first rows of a 1100-pixel-wide screenshot.
TIMELINE_ROWS = 300
CELL_PIXELS = 600
STATUS = (
    sys.executable,
    "-m",
    "sync_ci",
    "status",
)  # a cell is ~30 x 34 pixels; a legend swatch ~13 x 13


def timeline_states(elements: list[Element]) -> list[str]:
    """The state of each timeline cell, in time order."""
    cells = [e for e in find(elements, "rect", "cell") if e.within("svg", id_="pass-timeline")]
    ordered = sorted(cells, key=lambda e: e.attrs.get("data-at", ""))
    return [
        next(c for c in sorted(e.classes) if c not in ("cell", "marked"))
        + ("+flag" if "marked" in e.classes else "")
        for e in ordered
    ]


def page_problems(elements: list[Element], *, states: list[str], lanes: set[str]) -> list[str]:
    """What the page lacks: timeline cells and colours, alert lanes, the silent-tenant limit."""
    problems = []
    found = timeline_states(elements)
    if found != states:
        problems.append(f"timeline cells {found}, expected {states}")
    for cell in find(elements, "rect", "cell"):
        state = next(c for c in cell.classes if c not in ("cell", "marked"))
        if cell.attrs.get("fill") != charts.COLOURS[state]:
            problems.append(f"cell {state} filled {cell.attrs.get('fill')}")
    if sum("marked" in e.classes for e in find(elements, "rect", "cell")) != len(
        find(elements, "path", "flag")
    ):
        problems.append("a recovered cell has no flag")
    names = {e.attrs.get("data-name", "") for e in find(elements, "g", "lane")}
    if not lanes <= names:
        problems.append(f"alert lanes {sorted(names)} lack {sorted(lanes - names)}")
    limits = [e for e in find(elements, "g", "threshold") if e.within("svg", id_="silent-tenants")]
    if len(limits) != 1:
        problems.append(f"{len(limits)} allowance lines on the silent-tenant chart, expected 1")
    return problems


def two_tenants(env: dict[str, str]) -> tuple[Settings, Settings]:
    def tenant(name: str) -> Settings:
        return field_settings(
            load_settings(env={**env, "SYNC_CI_TENANT_ID": name}, check_remote=False)
        )

    return tenant(f"t-quiet-{secrets.token_hex(3)}"), tenant(f"t-loud-{secrets.token_hex(3)}")


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
def test_the_page_draws_real_passes_alerts_and_silent_tenants(
    faulty_sandbox: FaultySandbox, tmp_path: Path
) -> None:
    from sync_ci.sandbox.attach import clear_faults, set_faults

    settings = faulty_sandbox()
    env = {
        **sandbox_env_for(tmp_path / "faulty-0" / "ready.json", tmp_path / "home"),
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
    }
    alerts_dir = tmp_path / "alerts"
    now = datetime.now(UTC).replace(microsecond=0)
    times = [now - timedelta(hours=h) for h in (30, 18, 6)]
    set_faults(settings, {"5xx_rate": 1.0})
    failed = run_pass(settings, alerts_dir=alerts_dir, now=times[0])
    clear_faults(settings)
    run_pass(settings, alerts_dir=alerts_dir, now=times[1])
    run_pass(settings, alerts_dir=alerts_dir, now=times[2])
    phases = {r.id.removeprefix("phase:") for r in failed.report.failing()}

    quiet, loud = two_tenants(env)
    sandbox_control(settings, "/_sandbox/clock", {"offset_s": -13 * 3600})
    try:
        send_heartbeat(quiet)  # heard from 13 h ago: longer than the 12 h allowed
    finally:
        sandbox_control(settings, "/_sandbox/clock", {"offset_s": 0})
    send_heartbeat(loud)
    check = f"disk-{secrets.token_hex(3)}"
    assert alerts.send_alert(loud, check, "<b>disk full</b>").new_delivered

    page = tmp_path / "status.html"
    done = subprocess.run(
        [*STATUS, "--alerts-dir", str(alerts_dir), "--html", str(page)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)  # the silent tenant and the alert
    text = page.read_text()
    assert "<b>disk full</b>" not in text and "&lt;b&gt;disk full&lt;/b&gt;" in text
    assert not re.search(r"<script|(src|href)=\"(?!data:)", text)
    lanes = {"ci-loop alert files", f"field: {check}", *(f"ci-loop: {p}" for p in phases)}
    expected = ["fail", "recovered+flag", "pass"]
    assert page_problems(parse_dom(text), states=expected, lanes=lanes) == []
    silent = find(parse_dom(text), "g", "bar")
    assert [e.attrs["data-name"] for e in silent] == [quiet.tenant_id]

    dom = run_chromium(page, tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_lines(dom) == []
    assert page_problems(parse_dom(dom.stdout), states=expected, lanes=lanes) == []

    shot = tmp_path / "status.png"
    taken = run_chromium(page, tmp_path / "profile", screenshot=shot)
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    image = read_png(shot, max_rows=TIMELINE_ROWS)
    assert image.distinct() > 10  # not blank
    assert image.count(charts.COLOURS["fail"]) >= CELL_PIXELS
    assert image.count(charts.COLOURS["pass"]) >= 2 * CELL_PIXELS
    assert image.count(charts.MARKER) > 0  # the recovered flag


def picture_page(records: list[PassRecord]) -> str:
    summary = {
        "checks": {
            "doctor-failed": {
                "count": 3,
                "tenant_count": 1,
                "first_seen": "2026-11-26T00:00:00Z",
                "last_seen": "2026-11-27T06:00:00Z",
                "last_message": "x",
            }
        },
        "silent_after_s": 43200,
        "silent_tenants": [
            {"tenant": "t-c", "last_seen": "2026-11-26T00:00:00Z", "silent_for_s": 129600}
        ],
        "reporting_tenants": ["t-a"],
    }
    picture = status_rows.Picture(history=History(records=tuple(records)), worker=summary)
    return status_page.render_html(
        status_rows.worker_rows(summary, NOW), generated_at=NOW, picture=picture
    )


RECORDS = [
    PassRecord(at=NOW - timedelta(hours=18), outcome="fail", failing=("install",)),
    PassRecord(at=NOW - timedelta(hours=12), outcome="pass", recovered=True),
    PassRecord(at=NOW - timedelta(hours=6), outcome="pass"),
]
LANES = {"ci-loop: install", "field: doctor-failed"}


def test_the_checks_fail_on_a_page_missing_its_failing_cell_or_its_limit() -> None:
    good = picture_page(RECORDS)
    states = ["fail", "recovered+flag", "pass"]
    assert page_problems(parse_dom(good), states=states, lanes=LANES) == []
    no_fail = re.sub(r'<rect class="cell fail".*?</rect>', "", good)
    assert no_fail != good
    assert page_problems(parse_dom(no_fail), states=states, lanes=LANES)
    no_limit = re.sub(r'<g class="threshold".*?</g>', "", good)
    assert no_limit != good
    assert any(
        "allowance" in p for p in page_problems(parse_dom(no_limit), states=states, lanes=LANES)
    )
    wrong_colour = good.replace(f'fill="{charts.COLOURS["fail"]}"', 'fill="#2da44e"', 1)
    assert page_problems(parse_dom(wrong_colour), states=states, lanes=LANES)


@pytest.mark.browser
@needs_chromium
def test_the_screenshot_check_sees_a_missing_failing_cell(tmp_path: Path) -> None:
    page = tmp_path / "no-fail.html"
    page.write_text(re.sub(r'<rect class="cell fail".*?</rect>', "", picture_page(RECORDS)))
    shot = tmp_path / "no-fail.png"
    taken = run_chromium(page, tmp_path / "profile", screenshot=shot)
    assert taken.returncode == 0, taken.stderr[-2000:]
    image = read_png(shot, max_rows=TIMELINE_ROWS)
    assert image.count(charts.COLOURS["pass"]) >= CELL_PIXELS
    assert image.count(charts.COLOURS["fail"]) < CELL_PIXELS  # only the legend's swatch


def test_a_page_without_history_says_so_and_still_draws() -> None:
    missing = pass_history.read(Path("/nonexistent/alerts"))
    picture = status_rows.Picture(history=missing, worker=None, worker_problem="unreachable")
    page = status_page.render_html([], generated_at=NOW, picture=picture)
    elements = parse_dom(page)
    assert find(elements, "p", "history-missing")
    assert "no ci-loop pass history" in page and "Worker /_status not read: unreachable" in page
    assert not find(elements, "svg")
    assert "no alerts recorded" in page


def test_the_pictures_mask_secrets_and_escape_what_servers_sent() -> None:
    from sync_ci import redaction

    secret = "tenant-secret-value-9f8e7d6c"
    redaction.register_secrets([secret])
    hostile = f"<img src=x>{secret}\x1b[2J"
    summary = {
        "checks": {
            hostile: {
                "count": 1,
                "tenant_count": 1,
                "first_seen": "2026-11-27T06:00:00Z",
                "last_seen": "2026-11-27T06:00:00Z",
                "last_message": hostile,
            }
        },
        "silent_after_s": 43200,
        "silent_tenants": [{"tenant": hostile, "last_seen": "", "silent_for_s": 90000}],
    }
    records = [PassRecord(at=NOW - timedelta(hours=1), outcome="fail", failing=(hostile,))]
    picture = status_rows.Picture(history=History(records=tuple(records)), worker=summary)
    page = status_page.render_html([], generated_at=NOW, picture=picture)
    assert secret not in page and "***" in page
    assert "<img" not in page and "&lt;img src=x&gt;" in page
    assert "\x1b" not in page and "\\x1b[2J" in page
    assert len(find(parse_dom(page), "g", "lane")) == 2  # the failing phase and the field check
