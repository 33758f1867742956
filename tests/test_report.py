"""Renderers of the one result model: table, matrix, JSON, JUnit, markdown, GitHub outputs, emit."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from sync_ci import __version__, redaction
from sync_ci.cli import run_handler
from sync_ci.errors import ContractError, ExitCode, UsageError, WorkerError
from sync_ci.report import SCHEMA, Report, Result, Status, exit_code, make_report
from sync_ci.report_emit import Outputs, emit
from sync_ci.report_github import (
    escape_annotation_data,
    escape_annotation_property,
    render_annotations,
    write_github_outputs,
)
from sync_ci.report_json import read_json, report_from_json, to_json_text, write_json
from sync_ci.report_junit import render_junit, write_junit
from sync_ci.report_markdown import STEP_SUMMARY_BUDGET_BYTES, render_markdown, render_step_summary
from sync_ci.report_text import (
    color_wanted,
    format_duration,
    matrix_mark,
    render_matrix,
    render_table,
)

STARTED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
NASTY = "línea 1 | pipe\nline 2 100% \x1b[31mred\r\n<b>&\"'"


def _report(
    results: list[Result] | None = None,
    *,
    extra: dict[str, object] | None = None,
    unmeasured: bool = False,
    parity: tuple[Result, ...] = (),
    started_at: datetime = STARTED,
) -> Report:
    if results is None:
        results = [
            Result(id="catalog", title="catalog readable", status="pass", duration_s=0.12),
            Result(
                id="push",
                title="push state 日本語",
                status="fail",
                duration_s=0.5,
                detail=NASTY,
                observed={"status": 500, "file": "tests/a,b:c.py", "line": 7},
                threshold={"status": 201},
            ),
            Result(id="kv", title="kv probe", status="skip", detail="no KV here"),
            Result(
                id="worker", title="worker health", status="error", detail="timed out after 5 s"
            ),
        ]
    return make_report(
        suite="smoke",
        target="sandbox",
        mode="write",
        sha="0123abc",
        started_at=started_at,
        duration_s=1.234,
        results=results,
        unmeasured=unmeasured,
        parity=parity,
        extra=extra,
    )


def _many(n: int, status: Status = "pass", prefix: str = "row") -> list[Result]:
    return [
        Result(id=f"{prefix}-{i}", title=f"title {i}", status=status, detail="d" * 40)
        for i in range(n)
    ]


# --- table -----------------------------------------------------------------------------------


def test_render_table_rows_and_summary_line() -> None:
    text = render_table(_report(), color=False)
    lines = text.splitlines()
    assert lines[0].split() == ["status", "id", "title", "time", "detail"]
    assert lines[-1] == (
        "smoke on sandbox (write): 1 passed, 1 failed, 1 skipped, 1 error in 1.23 s"
    )
    assert "\x1b" not in text
    push = next(line for line in lines if " push " in line)
    # newlines collapsed, the escape made visible, unicode kept, cut with an ellipsis
    assert "push state 日本語" in push
    assert "línea 1 | pipe line 2 100% \\x1b[31mred" in push
    assert push.rstrip().endswith("<b>&\"'")
    assert len(lines) == 2 + 4 + 1


def test_render_table_shortens_long_details_of_passing_rows() -> None:
    long = Result(id="long", title="t" * 100, status="pass", detail="word " * 100)
    row = render_table(_report([long]), color=False).splitlines()[2]
    assert row.rstrip().endswith("word…")
    assert "t" * 59 + "…" in row
    assert len(row) < 200


@pytest.mark.parametrize("status", ["fail", "error"])
def test_render_table_wraps_the_detail_of_a_failing_row_and_keeps_every_word(
    status: Status,
) -> None:
    hint = "secrets file /home/joe/.config/sync-ci/secrets has mode 644; run: chmod 600 " + (
        "/home/joe/.config/sync-ci/secrets (set [tenant] id or SYNC_CI_TENANT_ID) " * 3
    )
    row = Result(id="secrets-file", title="secrets file is owner-only", status=status, detail=hint)
    text = render_table(_report([row]), color=False, only_failing=True)
    lines = text.splitlines()[2:-1]
    assert len(lines) > 1
    assert all(len(line) < 200 for line in lines)
    assert "…" not in text
    start = lines[0].index(hint[:20])
    assert " ".join(line[start:].strip() for line in lines) == " ".join(hint.split())


def test_render_table_only_failing_and_color() -> None:
    text = render_table(_report(), only_failing=True, color=True)
    assert "catalog" not in text
    assert "kv probe" not in text
    assert "\x1b[31mFAIL\x1b[0m" in text
    assert "\x1b[35mERROR\x1b[0m" in text
    # counts in the summary still cover every row
    assert "1 passed, 1 failed, 1 skipped, 1 error" in text


def test_render_table_empty_and_unmeasured() -> None:
    text = render_table(_report([], unmeasured=True), color=False)
    assert text == (
        "smoke on sandbox (write): 0 passed, 0 failed, 0 skipped, 0 errors in 1.23 s"
        " - could not measure, treated as a failure"
    )


def test_color_wanted_only_on_a_tty_without_no_color() -> None:
    main_fd, other_fd = os.openpty()
    with open(other_fd, "w") as tty:  # a real terminal device
        assert color_wanted(tty, {}) is True
        assert color_wanted(tty, {"NO_COLOR": ""}) is True
        assert color_wanted(tty, {"NO_COLOR": "1"}) is False
    os.close(main_fd)
    assert color_wanted(io.StringIO(), {}) is False


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0, "0 ms"), (0.8504, "850 ms"), (1.234, "1.23 s"), (125, "2 min 05 s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- matrix ----------------------------------------------------------------------------------


def test_render_matrix_marks_and_missing_cells() -> None:
    text = render_matrix(
        ["catalog.json", "objects/ab"],
        ["s3~worker", "worker~kv"],
        {
            ("catalog.json", "s3~worker"): matrix_mark("pass"),
            ("catalog.json", "worker~kv"): matrix_mark("fail"),
            ("objects/ab", "s3~worker"): matrix_mark("error"),
        },
    )
    lines = text.splitlines()
    assert lines[0].split() == ["s3~worker", "worker~kv"]
    assert lines[2].split() == ["catalog.json", "ok", "DIFF"]
    assert lines[3].split() == ["objects/ab", "ERR", "-"]
    assert lines[-1].startswith("ok = same, DIFF = differs")
    assert matrix_mark("skip") == "-"


# --- JSON ------------------------------------------------------------------------------------


def test_json_round_trip_keeps_every_value(tmp_path: Path) -> None:
    report = _report(extra={"note": "ü"})
    path = write_json(report, tmp_path / "deep" / "er" / "result.json")
    assert path.exists()
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["schema"] == SCHEMA
    assert doc["ok"] is False
    assert doc["counts"] == {"pass": 1, "fail": 1, "skip": 1, "error": 1}
    assert read_json(path) == report
    assert read_json(path).results[1].detail == NASTY


def test_json_text_is_strict_json_for_non_finite_and_odd_values() -> None:
    report = _report(
        [
            Result(
                id="p95",
                title="p95",
                status="error",
                observed={"p95_ms": float("nan"), "where": Path("/x"), "tags": {"b", "a"}},
                threshold={"p95_ms": float("inf")},
            )
        ]
    )
    text = to_json_text(report)

    # Python's parser accepts NaN; a strict one must too, so parse with constants refused.
    def refuse(name: str) -> None:
        raise AssertionError(name)

    doc = json.loads(text, parse_constant=refuse)
    assert doc["results"][0]["observed"] == {"p95_ms": "nan", "where": "/x", "tags": ["a", "b"]}
    assert doc["results"][0]["threshold"] == {"p95_ms": "inf"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema="sync-ci/result@2"), "schema is 'sync-ci/result@2'"),
        (lambda d: d.pop("suite"), "missing field 'suite'"),
        (lambda d: d.update(duration_s=True), "field 'duration_s' has the wrong type"),
        (lambda d: d["results"][0].update(status="passed"), "results[0]: status 'passed'"),
        (lambda d: d["results"][1].pop("id"), "results[1]: missing field 'id'"),
        (lambda d: d["results"].append("x"), "results[4]: not an object"),
        (lambda d: d.update(ok=True), "ok=True does not match"),
        (lambda d: d["counts"].update(fail=0), "do not match the results"),
    ],
)
def test_read_json_rejects_bad_documents(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], object], message: str
) -> None:
    doc = _report().to_json()
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ContractError, match=re.escape(message)):
        read_json(path)


def test_read_json_unreadable_or_not_json(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="cannot read result file"):
        read_json(tmp_path / "missing.json")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json", encoding="utf-8")
    with pytest.raises(ContractError, match=r"not JSON \(line 1"):
        read_json(garbage)
    listing = tmp_path / "list.json"
    listing.write_text("[]", encoding="utf-8")
    with pytest.raises(ContractError, match="top level is not an object"):
        read_json(listing)


# --- JUnit -----------------------------------------------------------------------------------


def test_junit_parses_and_counts_match(tmp_path: Path) -> None:
    report = _report([*_report().results, *_many(3, "fail", "f"), *_many(2, "skip", "s")])
    path = write_junit(report, tmp_path / "a" / "junit.xml")
    root = ET.parse(path).getroot()  # noqa: S314 (our own output)
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("name") == "smoke"
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
    ) == (
        "9",
        "4",
        "1",
        "3",
    )
    cases = suite.findall("testcase")
    assert len(cases) == 9
    assert {c.get("classname") for c in cases} == {"smoke.sandbox"}
    assert len(suite.findall("testcase/failure")) == 4
    assert len(suite.findall("testcase/error")) == 1
    assert len(suite.findall("testcase/skipped")) == 3
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["sha"] == "0123abc"
    assert props["sync-ci.version"] == __version__


def test_junit_escapes_markup_quotes_and_control_characters() -> None:
    root = ET.fromstring(render_junit(_report()))  # noqa: S314 (our own output)
    push = next(c for c in root.iter("testcase") if c.get("name") == "push")
    failure = push.find("failure")
    assert failure is not None
    assert failure.get("message") == "línea 1 | pipe"
    assert failure.text is not None
    # the ESC byte (invalid in XML 1.0) is written visibly instead of breaking the file
    assert "\\x1b[31mred" in failure.text
    assert "<b>&\"'" in failure.text
    assert '"status": 201' in failure.text
    assert push.get("time") == "0.500"


# --- markdown --------------------------------------------------------------------------------


def _cells(row: str) -> list[str]:
    return re.split(r"(?<!\\)\|", row.strip().strip("|"))


def test_render_markdown_alert_file() -> None:
    text = render_markdown(
        _report(), title="Sync degraded", next_steps=["check `GET /_health`", "rerun | later"]
    )
    assert text.startswith("# Sync degraded\n")
    first = text.split("## What failed first", 1)[1].split("## Results", 1)[0]
    assert "`push` push state 日本語 (fail)" in first
    assert "```text\nlínea 1 | pipe\nline 2 100% \\x1b[31mred" in first
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + 4
    assert all(len(_cells(row)) == 5 for row in rows)
    push_row = next(row for row in rows if "`push`" in row)
    assert "línea 1 \\| pipe<br>line 2 100%" in push_row
    assert "&lt;b>" in push_row
    for fact in (
        "target: sandbox",
        "sha: `0123abc`",
        f"sync-ci version: {__version__}",
        "started at: 2026-01-02T03:04:05Z",
        "duration: 1.23 s",
    ):
        assert f"- {fact}" in text
    assert text.endswith("## What to look at next\n\n- check `GET /_health`\n- rerun | later\n")


def test_render_markdown_when_nothing_failed() -> None:
    text = render_markdown(_report(_many(2)), title="ok")
    assert "Nothing failed." in text
    assert "What to look at next" not in text


# --- GitHub Actions ----------------------------------------------------------------------------


def test_annotation_escaping() -> None:
    assert escape_annotation_data("100%\r\nx:y,z") == "100%25%0D%0Ax:y,z"
    assert escape_annotation_property("100%\r\nx:y,z") == "100%25%0D%0Ax%3Ay%2Cz"


def test_render_annotations_levels_properties_and_escaping() -> None:
    lines = render_annotations(_report())
    assert lines == [
        "::error file=tests/a%2Cb%3Ac.py,line=7,title=push%3A push state 日本語::"
        "línea 1 | pipe%0Aline 2 100%25 \\x1b[31mred%0D%0A<b>&\"'",
        "::error title=worker%3A worker health::could not check: timed out after 5 s",
    ]


def test_render_annotations_caps_and_notice() -> None:
    warnings = [
        Result(id=f"w{i}", title="w", status="fail", observed={"level": "warning"})
        for i in range(15)
    ]
    report = _report([*_many(30, "fail", "e"), *warnings, *_many(5, "pass")])
    lines = render_annotations(report)
    assert sum(line.startswith("::error ") for line in lines) == 10
    assert sum(line.startswith("::warning ") for line in lines) == 10
    assert lines[-1] == (
        "::notice::25 more findings not annotated; see the step summary / JSON artifact"
    )
    # raising the per-level cap still respects GitHub's 50 per job, notice included
    wide = render_annotations(_report(_many(80, "error")), max_per_level=100)
    assert len(wide) == 50
    assert wide[-1].startswith("::notice::31 more findings")
    assert render_annotations(_report(_many(3))) == []
    exact = render_annotations(_report(_many(10, "fail")))
    assert len(exact) == 10
    assert not any(line.startswith("::notice") for line in exact)


def test_step_summary_of_20000_rows_stays_under_the_cap() -> None:
    failing = _many(50, "fail", "broken")
    report = _report([*_many(19_950), *failing])
    text = render_step_summary(report)
    size = len(text.encode())
    assert size <= STEP_SUMMARY_BUDGET_BYTES < 1024 * 1024
    assert size > STEP_SUMMARY_BUDGET_BYTES - 4096  # the budget is used, not wasted
    rows = [line for line in text.splitlines() if line.startswith("| ")][2:]
    # failures come first even though they were last in the report
    assert all("`broken-" in row for row in rows[:50])
    cut = 20_000 - len(rows)
    assert f"_{cut:,} more rows not shown (0 of them failing)" in text
    assert text.startswith("### ❌ sync-ci smoke on sandbox (write): 19950 passed, 50 failed")


def test_step_summary_small_report_is_whole_and_shortens_huge_details() -> None:
    huge = Result(id="big", title="big", status="fail", detail="x" * 100_000)
    text = render_step_summary(_report([huge, *_many(3)]))
    assert "more rows not shown" not in text
    assert len(text) < 5_000
    assert "x" * 299 + "…" in text
    assert f"sync-ci {__version__}" in text


def test_write_github_outputs_only_in_actions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step text\n", encoding="utf-8")
    write_github_outputs(_report(), {"GITHUB_STEP_SUMMARY": str(summary)})
    assert summary.read_text(encoding="utf-8") == "earlier step text\n"
    assert capsys.readouterr().out == ""

    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    write_github_outputs(_report(), env)
    content = summary.read_text(encoding="utf-8")
    assert content.startswith("earlier step text\n### ❌ sync-ci smoke")
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[0] for line in out] == ["::error", "::error"]


# --- emit --------------------------------------------------------------------------------------


@pytest.fixture
def no_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep emit from writing GitHub outputs when the tests themselves run in Actions."""
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.mark.usefixtures("no_actions")
def test_emit_exit_codes_and_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = Outputs(json=tmp_path / "out" / "r.json", junit=tmp_path / "out" / "x" / "j.xml")
    assert emit(_report(), outputs) == 1
    out = capsys.readouterr().out
    assert "catalog readable" in out
    assert out.rstrip().endswith("1 error in 1.23 s")
    assert read_json(tmp_path / "out" / "r.json") == _report()
    junit = ET.parse(tmp_path / "out" / "x" / "j.xml")  # noqa: S314 (our own output)
    assert junit.getroot().tag == "testsuites"

    assert emit(_report(_many(2)), Outputs()) == ExitCode.OK
    unmeasured = _report(_many(2), unmeasured=True)
    assert emit(unmeasured, Outputs()) == 3
    assert exit_code(unmeasured) is ExitCode.UNMEASURED


@pytest.mark.usefixtures("no_actions")
def test_emit_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    assert emit(_report(_many(2)), Outputs(quiet=True)) == 0
    assert capsys.readouterr() == ("", "")
    assert emit(_report(), Outputs(quiet=True)) == 1
    out = capsys.readouterr().out
    assert "push" in out
    assert "worker" in out
    assert "catalog" not in out
    assert "kv probe" not in out


@pytest.mark.usefixtures("no_actions")
def test_emit_unwritable_path_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(UsageError, match="cannot write --json"):
        emit(_report(), Outputs(quiet=True, json=blocker / "r.json"))


# --- secrets and control characters ------------------------------------------------------------

# Characters the renderers encode (&, <, %, |, ',', ':', `): a secret holding them must be masked
# before the encoding, which would otherwise split it past a later text match.
SECRET = "Zq9sentinel&<%|,:`x-secret"
SECRET_CORE = "Zq9sentinel"
TOKEN = "tok" + "0123456789abcdef" * 4


@pytest.fixture
def secrets_registered() -> Iterator[None]:
    """Register this module's secrets (as settings do when they load) and forget them after."""
    redaction.register_secrets([SECRET + "\n", TOKEN])
    try:
        yield
    finally:
        redaction.forget_secrets()


def _leaky_report() -> Report:
    """A report whose every text field quotes a secret."""
    row = Result(
        id=f"push-{TOKEN}",
        title=f"push as {SECRET}",
        status="fail",
        detail=f"server said: Authorization: Bearer {TOKEN}\nkey={SECRET}",
        observed={"header": f"Bearer {TOKEN}", "nested": [{"k": SECRET}], SECRET: 1},
        threshold={"status": 201, "why": (TOKEN,)},
    )
    return make_report(
        suite="smoke",
        target="ci",
        mode="write",
        sha="0123abc",
        started_at=STARTED,
        duration_s=1.0,
        results=[row],
        extra={"echo": SECRET},
    )


def _every_rendering(report: Report) -> dict[str, str]:
    result = report.results[0]
    return {
        "table": render_table(report, color=False),
        "json": to_json_text(report),
        "to_json": json.dumps(report.to_json()),
        "junit": render_junit(report),
        "markdown": render_markdown(report, title=f"degraded {SECRET}", next_steps=[TOKEN]),
        "summary": render_step_summary(report),
        "annotations": "\n".join(render_annotations(report)),
        "matrix": render_matrix([result.detail], [TOKEN], {(result.detail, TOKEN): "ok"}),
    }


def _assert_no_secret(renderings: dict[str, str]) -> None:
    for name, text in renderings.items():
        assert SECRET_CORE not in text, name
        assert TOKEN not in text, name
        assert TOKEN[:20] not in text, name


@pytest.mark.usefixtures("secrets_registered")
def test_the_result_model_masks_secrets_where_they_enter() -> None:
    document = _leaky_report().to_json()
    row = document["results"][0]
    assert row["detail"] == "server said: Authorization: Bearer ***\nkey=***"
    assert row["title"] == "push as ***"
    assert row["observed"] == {"header": "Bearer ***", "nested": [{"k": "***"}], "***": 1}
    assert row["threshold"] == {"status": 201, "why": ("***",)}
    assert document["extra"] == {"echo": "***"}
    _assert_no_secret(_every_rendering(_leaky_report()))


@pytest.mark.usefixtures("secrets_registered")
def test_every_renderer_masks_secrets_that_got_past_the_model() -> None:
    report = _leaky_report()
    result = report.results[0]
    # A row whose fields were set after it was built (a path that skipped the model's masking).
    for name, value in (
        ("id", f"push-{TOKEN}"),
        ("title", f"push as {SECRET}"),
        ("detail", f"Bearer {TOKEN} / {SECRET}"),
        ("observed", {"file": f"{SECRET}.py", "echo": SECRET, "line": 3}),
    ):
        object.__setattr__(result, name, value)
    object.__setattr__(report, "extra", {"echo": SECRET})
    renderings = _every_rendering(report)
    renderings.pop("to_json")  # the raw document: masked when built, which this row skipped
    _assert_no_secret(renderings)
    assert "***" in renderings["annotations"]
    assert "***" in renderings["junit"]


@pytest.mark.usefixtures("secrets_registered")
def test_a_header_error_quoting_a_secret_is_masked() -> None:
    import requests

    request = requests.Request(
        "GET", "http://127.0.0.1:9/", headers={"authorization": f"Bearer {TOKEN}\n"}
    )
    with pytest.raises(requests.exceptions.InvalidHeader) as caught:
        requests.Session().prepare_request(request)
    assert TOKEN in str(caught.value)  # requests quotes the header value in its message
    row = Result(id="push", title="push", status="error", detail=str(caught.value))
    assert TOKEN not in row.detail
    assert "***" in row.detail
    _assert_no_secret(_every_rendering(_report([row])))


def test_renderers_escape_c1_bidi_and_escape_sequences() -> None:
    forged = "ok\x1b[2J\x9b2J\u202eno alerts recorded\u2066"
    row = Result(id=f"check{forged}", title=forged, status="fail", detail=forged)
    report = _report([row])
    renderings = _every_rendering(report)
    renderings.pop("to_json")  # the data itself is kept; every text rendering of it is escaped
    for name, text in renderings.items():
        for char in ("\x1b", "\x9b", "\u202e", "\u2066"):
            assert char not in text, (name, char)
    assert "\\x9b2J\\u202eno alerts recorded" in renderings["table"]
    # The JSON file still decodes to the same text.
    assert json.loads(renderings["json"])["results"][0]["detail"] == forged


@pytest.mark.usefixtures("secrets_registered")
def test_the_error_line_is_one_masked_escaped_line(capsys: pytest.CaptureFixture[str]) -> None:
    def fails(args: argparse.Namespace) -> int:
        raise WorkerError(f"Worker said 403: Bearer {TOKEN}\n\x1b[2Jall clear")

    assert run_handler(fails, argparse.Namespace()) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert err == "sync-ci: error: Worker said 403: Bearer ***\\x0a\\x1b[2Jall clear\n"


@pytest.mark.usefixtures("secrets_registered")
def test_an_unexpected_error_is_one_line_without_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def breaks(args: argparse.Namespace) -> int:
        raise ValueError(f"header {SECRET!r}\nsecond line")

    assert run_handler(breaks, argparse.Namespace()) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("sync-ci: error: unexpected ValueError: header '***")
    assert SECRET_CORE not in err
    assert "Traceback" not in err
    with pytest.raises(ValueError, match="second line"):
        run_handler(breaks, argparse.Namespace(debug=True))


def test_json_and_junit_files_are_owner_only(tmp_path: Path) -> None:
    # Failure details may quote what a server said; the alert files are owner-only for that too.
    (tmp_path / "r.json").write_text("old")
    (tmp_path / "r.json").chmod(0o644)
    for path in (
        write_json(_report(), tmp_path / "r.json"),
        write_junit(_report(), tmp_path / "r.xml"),
    ):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert read_json(tmp_path / "r.json").results[1].detail == NASTY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.xml"]


def test_a_secret_quoted_as_json_or_repr_is_masked() -> None:
    odd = "Zq9quote\"back\\slash'é-secret"
    redaction.register_secrets([odd + "\n"])
    try:
        echoed = json.dumps({"error": f"you sent {odd}"})  # a JSON body echoed back
        quoted = f"invalid header value {odd + chr(10)!r}"  # an error quoting the header
        for text in (echoed, json.dumps(odd, ensure_ascii=False), quoted, repr(odd)):
            assert "Zq9quote" in text
            row = Result(id="push", title="push", status="error", detail=text)
            assert "Zq9quote" not in row.detail, text
            assert "***" in row.detail
    finally:
        redaction.forget_secrets()


@pytest.mark.usefixtures("secrets_registered")
def test_whatever_a_command_prints_itself_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    before = sys.stdout, sys.stderr

    def chatty(args: argparse.Namespace) -> int:
        print(f"sync-ci: warning: the Worker said Bearer {TOKEN}")
        print(f"sync-ci: alert failed: {SECRET!r}", file=sys.stderr)
        sys.stderr.writelines([f"{TOKEN}\n"])
        raise WorkerError("and then it failed")

    assert run_handler(chatty, argparse.Namespace()) == ExitCode.FAILED
    captured = capsys.readouterr()
    assert captured.out == "sync-ci: warning: the Worker said Bearer ***\n"
    assert captured.err == (
        "sync-ci: alert failed: '***'\n***\nsync-ci: error: and then it failed\n"
    )
    assert (sys.stdout, sys.stderr) == before


# --- the model's own facts: start time, could-not-measure, parity cells -----------------------


def test_started_at_is_one_utc_stamp_in_every_renderer() -> None:
    """A start given in any zone is held in UTC, whole seconds, and written the same everywhere."""
    east = STARTED.astimezone(timezone(timedelta(hours=5, minutes=30)))
    report = _report(_many(1), started_at=east)
    assert report.started_at == STARTED.replace(microsecond=0)
    assert report.started_at.tzinfo is UTC
    stamp = "2026-01-02T03:04:05Z"
    assert report.to_json()["started_at"] == stamp
    suite = ET.fromstring(render_junit(report)).find("testsuite")  # noqa: S314 (our own output)
    assert suite is not None and suite.get("timestamp") == stamp
    assert f"- started at: {stamp}" in render_markdown(report, title="t")
    assert f"started {stamp}" in render_step_summary(report)
    naive = _report(_many(1), started_at=datetime(2026, 1, 2, 3, 4, 5))
    assert naive.started_at == report.started_at  # a naive time is taken to be UTC
    with pytest.raises(TypeError, match="started_at must be a datetime"):
        _report(started_at=stamp)  # type: ignore[arg-type]


def test_a_reader_parses_started_at_from_this_and_older_writers(tmp_path: Path) -> None:
    doc = _report().to_json()
    for written in (
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:04:05+00:00",
        "2026-01-02T08:34:05+05:30",
    ):
        doc["started_at"] = written
        assert report_from_json(doc).started_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    doc["started_at"] = "yesterday"
    with pytest.raises(ContractError, match="started_at 'yesterday' is not an ISO-8601 time"):
        report_from_json(doc)


def test_could_not_measure_is_a_field_that_survives_the_json_round_trip(tmp_path: Path) -> None:
    unmeasured = _report(_many(2), unmeasured=True, extra={"gate": "load"})
    doc = unmeasured.to_json()
    assert doc["extra"] == {"gate": "load", "unmeasured": True}  # the documented place
    back = read_json(write_json(unmeasured, tmp_path / "r.json"))
    assert back == unmeasured and back.unmeasured and back.extra == {"gate": "load"}
    assert exit_code(back) is ExitCode.UNMEASURED
    measured = _report(_many(2))
    assert "extra" not in measured.to_json()
    assert exit_code(read_json(write_json(measured, tmp_path / "m.json"))) is ExitCode.OK
    with pytest.raises(ValueError, match="unmeasured: a field of Report"):
        _report(extra={"unmeasured": True})
    doc["extra"]["unmeasured"] = "yes"
    with pytest.raises(ContractError, match=r"extra\.unmeasured is not true or false"):
        report_from_json(doc)


def test_parity_cells_stay_objects_and_round_trip_through_json(tmp_path: Path) -> None:
    from sync_ci.parity import MISSING, Observation, evaluate_cells

    cells = evaluate_cells(
        [
            Observation(artifact="f", surface="bucket", digest="a" * 64),
            Observation(artifact="f", surface="worker", digest=MISSING),
        ]
    )
    report = _report(_many(1), parity=tuple(cells), extra={"root": "r/"})
    assert report.parity == tuple(cells)  # the same objects the phase produced
    assert report.to_json()["extra"]["parity"] == [c.to_json() for c in cells]
    back = read_json(write_json(report, tmp_path / "r.json"))
    assert back.parity == report.parity and back.extra == {"root": "r/"}
    with pytest.raises(ValueError, match="parity: a field of Report"):
        _report(extra={"parity": []})


def test_no_module_reads_could_not_measure_from_extra() -> None:
    """The field has one spelling: a reader of `extra["unmeasured"]` would see False forever."""
    root = Path(__file__).resolve().parents[1]
    # A read, not report.to_json writing the documented JSON place (`extra["unmeasured"] = ...`).
    pattern = re.compile(r"""extra(\.get\(|\[)\s*["']unmeasured["'](?!\]\s*=[^=])""")
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("sync_ci", "checks")
        for path in sorted((root / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


# --- outputs: built from the parsed options in one place ---------------------------------------


def test_outputs_come_from_the_common_options(tmp_path: Path) -> None:
    from sync_ci.options import Parser, add_common, outputs

    parser = Parser(prog="sync-ci x")
    add_common(parser)
    given = outputs(
        parser.parse_args(["--json", str(tmp_path / "r.json"), "--junit", "j.xml", "-q"])
    )
    assert given == Outputs(json=tmp_path / "r.json", junit=Path("j.xml"), quiet=True)
    assert outputs(parser.parse_args([])) == Outputs()


@pytest.mark.usefixtures("no_actions")
def test_emit_leaves_github_outputs_out_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert emit(_report(), Outputs(quiet=True, github=False)) == 1
    assert "::error" not in capsys.readouterr().out and not summary.exists()
    assert emit(_report(), Outputs(quiet=True)) == 1
    assert "::error" in capsys.readouterr().out and summary.exists()
