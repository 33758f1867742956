"""The one result model (`sync-ci/result@1`) and every renderer of it."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from sync_ci import __version__, redaction
from sync_ci.clock import utc_stamp
from sync_ci.errors import ContractError, ExitCode, UsageError
from sync_ci.files import write_private

SCHEMA = "sync-ci/result@1"
Status = Literal["pass", "fail", "skip", "error"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "skip", "error")


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """One row: a phase, a lint finding, a parity cell, a gate threshold."""

    id: str
    title: str
    status: Status
    duration_s: float = 0.0
    detail: str = ""
    observed: Mapping[str, Any] = field(default_factory=dict)
    threshold: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Secrets are masked where text enters the model, so every reader of `to_json()` (doctor's
        # last-doctor.json, alert bodies) is covered, not only the renderers below.
        for name in ("id", "title", "detail"):
            object.__setattr__(self, name, redaction.redact(getattr(self, name)))
        object.__setattr__(self, "observed", redact_value(self.observed))
        object.__setattr__(self, "threshold", redact_value(self.threshold))

    def to_json(self) -> dict[str, Any]:
        """Render as the schema's result object."""
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "duration_s": round(self.duration_s, 6),
            "detail": self.detail,
            "observed": dict(self.observed),
            "threshold": dict(self.threshold),
        }


# Facts the Report holds as fields; in the JSON document they travel inside `extra` (the
# documented shape), so `extra` itself may not carry them.
EXTRA_FIELDS = ("unmeasured", "parity")


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """A whole suite's outcome.

    `unmeasured` says the suite could not measure (the target did not answer): exit 3, whatever
    the rows say. `parity` holds the parity-matrix cells (smoke), kept apart from the rows.
    `started_at` is when the run began, held as an aware UTC datetime in whole seconds (a naive
    one is taken to be UTC); every renderer writes it through `clock.utc_stamp`.
    """

    suite: str
    target: str
    mode: str
    sha: str
    started_at: datetime
    duration_s: float
    results: tuple[Result, ...]
    unmeasured: bool = False
    parity: tuple[Result, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.started_at, datetime):
            raise TypeError(f"started_at must be a datetime, not {type(self.started_at).__name__}")
        taken = [name for name in EXTRA_FIELDS if name in self.extra]
        if taken:
            raise ValueError(f"{', '.join(taken)}: a field of Report, not a key of extra")
        # Whole seconds in UTC, as the stamp says: what is held is what every renderer writes.
        at = self.started_at if self.started_at.tzinfo else self.started_at.replace(tzinfo=UTC)
        object.__setattr__(self, "started_at", at.astimezone(UTC).replace(microsecond=0))
        object.__setattr__(self, "extra", redact_value(self.extra))

    @property
    def started_stamp(self) -> str:
        """The start as every renderer writes it (`2026-11-27T06:00:00Z`)."""
        return utc_stamp(self.started_at)

    @property
    def counts(self) -> dict[str, int]:
        """Count results by status."""
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status] += 1
        return counts

    @property
    def ok(self) -> bool:
        """True when nothing failed or errored."""
        counts = self.counts
        return counts["fail"] == 0 and counts["error"] == 0

    def failing(self) -> tuple[Result, ...]:
        """Return the rows that failed or errored."""
        return tuple(r for r in self.results if r.status in ("fail", "error"))

    def to_json(self) -> dict[str, Any]:
        """Render as the `sync-ci/result@1` document."""
        document: dict[str, Any] = {
            "schema": SCHEMA,
            "suite": self.suite,
            "target": self.target,
            "mode": self.mode,
            "sha": self.sha,
            "started_at": self.started_stamp,
            "duration_s": round(self.duration_s, 6),
            "ok": self.ok,
            "counts": self.counts,
            "results": [r.to_json() for r in self.results],
        }
        extra = dict(self.extra)
        if self.parity:
            extra["parity"] = [cell.to_json() for cell in self.parity]
        if self.unmeasured:
            extra["unmeasured"] = True
        if extra:
            document["extra"] = extra
        return document


def redact_value(value: Any) -> Any:
    """Mask registered secrets in every string of a JSON-like value (keys included)."""
    if isinstance(value, str):
        return redaction.redact(value)
    if isinstance(value, Mapping):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(redact_value(v) for v in value)
    return value


def make_report(
    *,
    suite: str,
    target: str,
    mode: str,
    sha: str,
    started_at: datetime,
    duration_s: float,
    results: Iterable[Result],
    unmeasured: bool = False,
    parity: Iterable[Result] = (),
    extra: Mapping[str, Any] | None = None,
) -> Report:
    """Build a Report from any iterable of results."""
    return Report(
        suite=suite,
        target=target,
        mode=mode,
        sha=sha,
        started_at=started_at,
        duration_s=duration_s,
        results=tuple(results),
        unmeasured=unmeasured,
        parity=tuple(parity),
        extra=dict(extra or {}),
    )


# --------------------------------------------------------------------------------------------
# Renderers. Pure functions unless named write_*/emit; tabulate is imported inside the two
# functions that use it, because `import tabulate` costs ~70 ms and doctor's start-up matters.
# --------------------------------------------------------------------------------------------

STATUS_LABELS: Mapping[str, str] = {
    "pass": "PASS",
    "fail": "FAIL",
    "skip": "SKIP",
    "error": "ERROR",
}
_ANSI: Mapping[str, str] = {"pass": "32", "fail": "31", "skip": "33", "error": "35"}
_MD_ICONS: Mapping[str, str] = {"pass": "✅", "fail": "❌", "skip": "⏭️", "error": "⚠️"}

# Marks of the parity matrix; `matrix_mark` maps a result status onto them.
MARK_OK, MARK_DIFF, MARK_SKIP, MARK_ERR = "ok", "DIFF", "-", "ERR"
_STATUS_MARKS: Mapping[str, str] = {
    "pass": MARK_OK,
    "fail": MARK_DIFF,
    "skip": MARK_SKIP,
    "error": MARK_ERR,
}

TABLE_DETAIL_CHARS = 80
TABLE_TITLE_CHARS = 60
# GitHub rejects a step summary over 1 MiB (the upload aborts); keep well under it.
STEP_SUMMARY_BUDGET_BYTES = 900 * 1024
STEP_SUMMARY_DETAIL_CHARS = 300
# GitHub shows at most 10 error + 10 warning annotations per step and 50 per job; the rest are
# dropped silently, so we cut them ourselves and say so.
ANNOTATIONS_PER_LEVEL = 10
ANNOTATIONS_TOTAL = 50

_WHITESPACE = re.compile(r"\s+")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Characters XML 1.0 cannot carry at all, even escaped (plus lone surrogates). Compiled on first
# use: this class takes ~6 ms to compile, and most commands never write JUnit.
_XML_INVALID = "[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


def exit_code(report: Report) -> ExitCode:
    """Return the exit code a report stands for: UNMEASURED beats FAILED beats OK."""
    if report.unmeasured:
        return ExitCode.UNMEASURED
    return ExitCode.OK if report.ok else ExitCode.FAILED


def matrix_mark(status: Status) -> str:
    """Map a result status onto a parity-matrix mark."""
    return _STATUS_MARKS[status]


def format_duration(seconds: float) -> str:
    """Format seconds for people: '850 ms', '1.23 s', '2 min 05 s'."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _visible_controls(text: str, *, keep_cr: bool = False) -> str:
    """Mask secrets and make control characters visible (CR kept for annotations to encode)."""
    # Escape sequences in a detail (from a server, a file name) must not reach the terminal.
    if keep_cr:
        return "\r".join(redaction.clean(part) for part in redaction.redact(text).split("\r"))
    return redaction.clean(text)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _one_line(text: str, limit: int) -> str:
    """Collapse whitespace (newlines included), make controls visible, cut to `limit` chars."""
    return _shorten(_visible_controls(_WHITESPACE.sub(" ", text).strip()), limit)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary_line(report: Report) -> str:
    """Say in one line what ran where and how it went."""
    counts = report.counts
    text = (
        f"{report.suite} on {report.target} ({report.mode}): {counts['pass']} passed, "
        f"{counts['fail']} failed, {counts['skip']} skipped, {_plural(counts['error'], 'error')} "
        f"in {format_duration(report.duration_s)}"
    )
    if report.unmeasured:
        text += " - could not measure, treated as a failure"
    return text


def color_wanted(stream: TextIO | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Decide on colour: only on a TTY and only when NO_COLOR is unset or empty (no-color.org)."""
    stream = sys.stdout if stream is None else stream
    env = os.environ if env is None else env
    if env.get("NO_COLOR", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def _detail_cell(result: Result) -> str:
    """A passing row's detail is cut to one line; a failing row's is wrapped, never cut.

    The detail of a failing row is often the fix itself (`run: chmod 600 ...`): it is the only
    thing a tenant reads in `doctor --silent`, so every word of it is kept.
    """
    if result.status not in ("fail", "error"):
        return _one_line(result.detail, TABLE_DETAIL_CHARS)
    import textwrap

    text = _visible_controls(_WHITESPACE.sub(" ", result.detail).strip())
    lines = textwrap.wrap(text, TABLE_DETAIL_CHARS, break_long_words=True, break_on_hyphens=False)
    return "\n".join(lines)


def render_table(report: Report, *, only_failing: bool = False, color: bool | None = None) -> str:
    """Render the results as a terminal table followed by the summary line."""
    from tabulate import tabulate

    use_color = color_wanted() if color is None else color
    rows = report.failing() if only_failing else report.results
    lines: list[str] = []
    if rows:
        table = [
            [
                _paint(STATUS_LABELS[r.status], _ANSI[r.status], use_color),
                _one_line(r.id, 120),
                _one_line(r.title, TABLE_TITLE_CHARS),
                format_duration(r.duration_s),
                _detail_cell(r),
            ]
            for r in rows
        ]
        lines.append(
            tabulate(
                table,
                headers=["status", "id", "title", "time", "detail"],
                tablefmt="simple",
                disable_numparse=True,
            )
        )
    summary = summary_line(report)
    good = report.ok and not report.unmeasured
    lines.append(_paint(summary, "32" if good else "1;31", use_color))
    return redaction.redact("\n".join(lines))


def render_matrix(
    rows: Sequence[str], columns: Sequence[str], cells: Mapping[tuple[str, str], str]
) -> str:
    """Render the parity matrix (artifacts x surface pairs); a missing cell shows as skipped."""
    from tabulate import tabulate

    table = [
        [_visible_controls(row), *(cells.get((row, col), MARK_SKIP) for col in columns)]
        for row in rows
    ]
    body = tabulate(
        table,
        headers=["", *(_visible_controls(c) for c in columns)],
        tablefmt="simple",
        disable_numparse=True,
    )
    legend = (
        f"{MARK_OK} = same, {MARK_DIFF} = differs, {MARK_SKIP} = skipped, "
        f"{MARK_ERR} = could not compare"
    )
    return redaction.redact(f"{body}\n{legend}")


def render_rows(
    rows: Iterable[Sequence[object]],
    headers: Sequence[str] = (),
    *,
    style: Literal["plain", "simple"] = "plain",
) -> str:
    """Render rows that are not results (settings, endpoints, rules, status lines) as a table.

    Every cell is cleaned to one line (secrets masked, control characters made visible), and
    numbers are left as written.
    """
    from tabulate import tabulate

    def cell(value: object) -> str:
        return redaction.clean(str(value), keep_newlines=False)

    return tabulate(
        [[cell(value) for value in row] for row in rows],
        headers=[cell(h) for h in headers],
        tablefmt=style,
        disable_numparse=True,
    )


# --- JSON ------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    # NaN/Infinity are not JSON; other tools (jq, check-jsonschema) reject them.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(str(v) for v in value)
    return value


def _inline_json(value: Mapping[str, Any]) -> str:
    text = json.dumps(_json_safe(redact_value(value)), ensure_ascii=False, default=str)
    return _JSON_UNSAFE.sub(_json_escape, text)


def to_json_text(report: Report) -> str:
    """Render the `sync-ci/result@1` document as indented JSON text."""
    text = json.dumps(_json_safe(report.to_json()), indent=2, ensure_ascii=False, default=str)
    # json.dumps escapes C0 only; DEL, C1 and bidi overrides are escaped too, so that `cat` of
    # the file cannot drive a terminal. They can occur only inside strings: still the same JSON.
    return _JSON_UNSAFE.sub(_json_escape, redaction.redact(text)) + "\n"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write atomically and owner-only, creating parent directories (a reader never sees half)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Failure details may quote what a server said: owner-only, like the alert files.
    return write_private(target, text)


def write_json(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write the result document to `path` (parents created)."""
    return _write_text(path, to_json_text(report))


def _require(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise ContractError(f"{where}: missing field {key!r}")
    value = doc[key]
    # bool is an int subclass; a duration of `true` is still wrong.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ContractError(f"{where}: field {key!r} has the wrong type (bool)")
    if not isinstance(value, kind):
        raise ContractError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _results_from_json(raw_results: list[Any], where: str) -> list[Result]:
    number = (int, float)
    results: list[Result] = []
    for index, raw in enumerate(raw_results):
        at = f"{where}[{index}]"
        if not isinstance(raw, dict):
            raise ContractError(f"{at}: not an object")
        status = _require(raw, "status", str, at)
        if status not in STATUSES:
            raise ContractError(f"{at}: status {status!r} is not one of {', '.join(STATUSES)}")
        results.append(
            Result(
                id=_require(raw, "id", str, at),
                title=_require(raw, "title", str, at),
                status=status,
                duration_s=float(_require(raw, "duration_s", number, at))
                if "duration_s" in raw
                else 0.0,
                detail=_require(raw, "detail", str, at) if "detail" in raw else "",
                observed=_require(raw, "observed", dict, at) if "observed" in raw else {},
                threshold=_require(raw, "threshold", dict, at) if "threshold" in raw else {},
            )
        )
    return results


def _started_from_json(text: str, source: str) -> datetime:
    """Read `started_at`: the project's stamp, or any ISO-8601 time an older writer used."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ContractError(
            f"{source}: started_at {text[:40]!r} is not an ISO-8601 time "
            "(e.g. 2026-11-27T06:00:00Z)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def report_from_json(doc: Any, *, source: str = "document") -> Report:
    """Validate a parsed `sync-ci/result@1` document and build the Report."""
    if not isinstance(doc, dict):
        raise ContractError(f"{source}: not a {SCHEMA} document (top level is not an object)")
    if doc.get("schema") != SCHEMA:
        raise ContractError(f"{source}: schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    results = _results_from_json(_require(doc, "results", list, source), f"{source}: results")
    extra = dict(_require(doc, "extra", dict, source)) if "extra" in doc else {}
    unmeasured = extra.pop("unmeasured", False)
    if not isinstance(unmeasured, bool):
        raise ContractError(f"{source}: extra.unmeasured is not true or false")
    parity = _results_from_json(
        _require(extra, "parity", list, f"{source}: extra") if "parity" in extra else [],
        f"{source}: extra.parity",
    )
    extra.pop("parity", None)
    report = make_report(
        suite=_require(doc, "suite", str, source),
        target=_require(doc, "target", str, source),
        mode=_require(doc, "mode", str, source),
        sha=_require(doc, "sha", str, source),
        started_at=_started_from_json(_require(doc, "started_at", str, source), source),
        duration_s=float(_require(doc, "duration_s", (int, float), source)),
        results=results,
        unmeasured=unmeasured,
        parity=parity,
        extra=extra,
    )
    # Derived fields must agree with the rows: a document claiming ok over failures is rejected.
    if "counts" in doc and doc["counts"] != report.counts:
        raise ContractError(f"{source}: counts {doc['counts']!r} do not match the results")
    if "ok" in doc and doc["ok"] is not report.ok:
        raise ContractError(f"{source}: ok={doc['ok']!r} does not match the results")
    return report


def read_json(path: str | os.PathLike[str]) -> Report:
    """Read and validate a `sync-ci/result@1` file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ContractError(f"{path}: cannot read result file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ContractError(f"{path}: result file is not UTF-8 text") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(
            f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    return report_from_json(doc, source=str(path))


# --- JUnit -----------------------------------------------------------------------------------


def _xml_text(text: str) -> str:
    # Redacted before XML escaping, which could split a secret holding '&' or '<'.
    text = redaction.clean(text)
    return re.compile(_XML_INVALID).sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _details_block(result: Result) -> str:
    parts = [result.detail] if result.detail else []
    if result.observed:
        parts.append("observed: " + _inline_json(result.observed))
    if result.threshold:
        parts.append("threshold: " + _inline_json(result.threshold))
    return _xml_text("\n".join(parts))


def render_junit(report: Report) -> str:
    """Render the report as JUnit XML: one testsuite, one testcase per result."""
    from xml.etree import ElementTree as ET

    counts = report.counts
    root = ET.Element(
        "testsuites",
        name=_xml_text(f"sync-ci {report.suite}"),
        tests=str(len(report.results)),
        failures=str(counts["fail"]),
        errors=str(counts["error"]),
        skipped=str(counts["skip"]),
        time=f"{report.duration_s:.3f}",
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=_xml_text(report.suite),
        tests=str(len(report.results)),
        failures=str(counts["fail"]),
        errors=str(counts["error"]),
        skipped=str(counts["skip"]),
        time=f"{report.duration_s:.3f}",
        timestamp=report.started_stamp,
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("target", report.target),
        ("mode", report.mode),
        ("sha", report.sha),
        ("sync-ci.version", __version__),
        ("unmeasured", "true" if report.unmeasured else "false"),
    ):
        ET.SubElement(props, "property", name=name, value=_xml_text(value))
    classname = _xml_text(f"{report.suite}.{report.target}")
    for result in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            name=_xml_text(result.id),
            classname=classname,
            time=f"{result.duration_s:.3f}",
        )
        first_line = (result.detail.strip().splitlines() or [result.title])[0]
        message = _xml_text(_shorten(first_line, 500))
        if result.status == "fail":
            node = ET.SubElement(case, "failure", message=message, type="fail")
            node.text = _details_block(result)
        elif result.status == "error":
            node = ET.SubElement(case, "error", message=message, type="error")
            node.text = _details_block(result)
        elif result.status == "skip":
            ET.SubElement(case, "skipped", message=message)
        if result.title:
            ET.SubElement(case, "system-out").text = _xml_text(result.title)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{redaction.redact(body)}\n'


def write_junit(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write the JUnit XML report to `path` (parents created)."""
    return _write_text(path, render_junit(report))


# --- Markdown (alert file, step summary) -----------------------------------------------------


def _md_cell(text: str, limit: int | None = None) -> str:
    """Make text safe inside one GitHub-flavoured markdown table cell."""
    text = _visible_controls(text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " "))
    if limit is not None:
        text = _shorten(text, limit)
    text = text.replace("|", "\\|").replace("<", "&lt;")
    return text.strip().replace("\n", "<br>")


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


_MD_HEADER = (
    _md_row(["status", "id", "title", "duration", "detail"]),
    _md_row(["---"] * 5),
)


def _md_result_row(result: Result, detail_limit: int | None) -> str:
    return _md_row(
        [
            f"{_MD_ICONS[result.status]} {result.status}",
            f"`{_md_cell(result.id).replace('`', '')}`",
            _md_cell(result.title, 300 if detail_limit else None),
            format_duration(result.duration_s),
            _md_cell(result.detail, detail_limit),
        ]
    )


def _fenced(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{_visible_controls(text)}\n{fence}"


def render_markdown(report: Report, *, title: str, next_steps: Sequence[str] = ()) -> str:
    """Render the alert-file markdown: what failed first, the table, the run, what to do next."""
    counts = report.counts
    failing = report.failing()
    lines = [f"# {_one_line(title, 200)}", ""]
    lines += [f"**{summary_line(report)}**", ""]
    lines += ["## What failed first", ""]
    if failing:
        first = failing[0]
        first_id = _md_cell(first.id).replace("`", "")
        lines.append(f"`{first_id}` {_md_cell(first.title)} ({first.status})")
        if first.detail.strip():
            lines += ["", _fenced(first.detail.strip())]
        facts = [
            (name, value)
            for name, value in (("observed", first.observed), ("threshold", first.threshold))
            if value
        ]
        if facts:
            lines.append("")
            lines += [
                f"- {name}: `{_inline_json(value).replace('`', chr(39))}`" for name, value in facts
            ]
    elif report.unmeasured:
        lines.append("Nothing could be measured (the target did not answer).")
    else:
        lines.append("Nothing failed.")
    lines += ["", "## Results", ""]
    if report.results:
        lines += [*_MD_HEADER, *(_md_result_row(r, None) for r in report.results)]
    else:
        lines.append("No results.")
    lines += [
        "",
        "## Run",
        "",
        f"- suite: {_md_cell(report.suite)}",
        f"- target: {_md_cell(report.target)}",
        f"- mode: {_md_cell(report.mode)}",
        f"- sha: `{_md_cell(report.sha)}`",
        f"- sync-ci version: {__version__}",
        f"- started at: {report.started_stamp}",
        f"- duration: {format_duration(report.duration_s)}",
        f"- counts: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['skip']} skipped, {_plural(counts['error'], 'error')}",
    ]
    if next_steps:
        lines += ["", "## What to look at next", ""]
        lines += [f"- {_one_line(step, 1000)}" for step in next_steps]
    return redaction.redact("\n".join(lines)) + "\n"


def render_step_summary(report: Report, *, budget_bytes: int = STEP_SUMMARY_BUDGET_BYTES) -> str:
    """Render the GitHub step summary, cutting rows (failures kept first) to stay in budget."""
    good = report.ok and not report.unmeasured
    head = [
        f"### {'✅' if good else '❌'} sync-ci {_md_cell(summary_line(report))}",
        "",
    ]
    foot_meta = (
        f"<sub>sync-ci {__version__} · sha `{_md_cell(report.sha)}` · "
        f"started {report.started_stamp}</sub>"
    )
    # Failures first so a cut never hides what broke; stable within each group.
    ordered = [*report.failing(), *(r for r in report.results if r.status not in ("fail", "error"))]
    cut_note_reserve = 300
    used = sum(len(line.encode()) + 1 for line in head) + len(foot_meta.encode()) + 2
    used += cut_note_reserve
    body: list[str] = []
    if ordered:
        body = list(_MD_HEADER)
        used += sum(len(line.encode()) + 1 for line in body)
    shown = 0
    for result in ordered:
        row = _md_result_row(result, STEP_SUMMARY_DETAIL_CHARS)
        size = len(row.encode()) + 1
        if used + size > budget_bytes:
            break
        body.append(row)
        used += size
        shown += 1
    lines = head + body
    cut = len(ordered) - shown
    if cut:
        failing_cut = max(len(report.failing()) - shown, 0)
        lines += [
            "",
            f"_{cut:,} more rows not shown ({failing_cut:,} of them failing) to stay under "
            "GitHub's 1 MiB step-summary cap; the full report is in the JSON artifact._",
        ]
    if not ordered:
        lines.append("No results.")
    lines += ["", foot_meta]
    return redaction.redact("\n".join(lines)) + "\n"


# --- GitHub Actions ----------------------------------------------------------------------------


def escape_annotation_data(text: str) -> str:
    """Escape an annotation message the way GitHub's toolkit does (%, CR, LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_annotation_property(text: str) -> str:
    """Escape an annotation property value: as data, plus ':' and ','."""
    return escape_annotation_data(text).replace(":", "%3A").replace(",", "%2C")


def _annotation_level(result: Result) -> str:
    level = result.observed.get("level", result.observed.get("severity"))
    return "warning" if level == "warning" else "error"


def _annotation(result: Result, level: str) -> str:
    props: list[str] = []
    file = result.observed.get("file")
    if isinstance(file, str) and file:
        props.append(f"file={escape_annotation_property(_visible_controls(file))}")
        for key, name in (("line", "line"), ("end_line", "endLine"), ("col", "col")):
            value = result.observed.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                props.append(f"{name}={value}")
    title = f"{result.id}: {result.title}" if result.title else result.id
    props.append(f"title={escape_annotation_property(_one_line(title, 200))}")
    message = result.detail.strip() or result.title or result.id
    if result.status == "error":
        message = f"could not check: {message}"
    message = _visible_controls(message, keep_cr=True)
    return redaction.redact(f"::{level} {','.join(props)}::{escape_annotation_data(message)}")


def render_annotations(report: Report, *, max_per_level: int = ANNOTATIONS_PER_LEVEL) -> list[str]:
    """Render failing results as workflow-command annotations within GitHub's caps."""
    per_level = max(0, min(max_per_level, ANNOTATIONS_TOTAL))
    findings = report.failing()
    errors = [r for r in findings if _annotation_level(r) == "error"]
    warnings = [r for r in findings if _annotation_level(r) == "warning"]
    chosen = [(r, "error") for r in errors[:per_level]] + [
        (r, "warning") for r in warnings[:per_level]
    ]
    if len(chosen) < len(findings):
        chosen = chosen[: ANNOTATIONS_TOTAL - 1]  # leave room for the notice
    else:
        chosen = chosen[:ANNOTATIONS_TOTAL]
    lines = [_annotation(r, level) for r, level in chosen]
    missing = len(findings) - len(chosen)
    if missing:
        lines.append(
            f"::notice::{missing} more findings not annotated; see the step summary / JSON artifact"
        )
    return lines


def write_github_outputs(report: Report, env: Mapping[str, str] = os.environ) -> None:
    """In GitHub Actions, append the step summary and print the annotations to stdout."""
    if env.get("GITHUB_ACTIONS") != "true":
        return
    for line in render_annotations(report):
        _print(line, sys.stdout)
    summary_path = env.get("GITHUB_STEP_SUMMARY")
    if not summary_path:
        return
    path = Path(summary_path)
    try:
        already = path.stat().st_size if path.exists() else 0
        # Several commands may append to one step's summary; share the budget with them.
        budget = max(STEP_SUMMARY_BUDGET_BYTES - already, 4096)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(render_step_summary(report, budget_bytes=budget))
    except OSError as exc:
        # A reporting side effect never changes the outcome of the job it reports.
        print(
            f"sync-ci: warning: cannot write step summary {path}: {exc.strerror or exc}",
            file=sys.stderr,
        )


# --- The one call every command makes at the end ---------------------------------------------


def _print(text: str, stream: TextIO) -> None:
    """Print, degrading characters the stream's encoding lacks instead of crashing."""
    try:
        print(text, file=stream)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outputs:
    """Where a report goes besides the exit code: built from option values in one place,
    `sync_ci.options` (`outputs` for the parsed options, `report_outputs` for the invoke tasks').

    `quiet` prints only the failing rows, and nothing on success; `github` False leaves out the
    annotations and step summary even inside GitHub Actions.
    """

    json: Path | None = None
    junit: Path | None = None
    quiet: bool = False
    github: bool = True


def write_outputs(report: Report, outputs: Outputs) -> None:
    """Write the --json/--junit files and the GitHub outputs, printing no table."""
    for path, option, writer in (
        (outputs.json, "--json", write_json),
        (outputs.junit, "--junit", write_junit),
    ):
        if path is not None:
            try:
                writer(report, path)
            except OSError as exc:
                raise UsageError(f"cannot write {option} {path}: {exc.strerror or exc}") from exc
    if outputs.github:
        write_github_outputs(report, os.environ)


def emit(report: Report, outputs: Outputs) -> int:
    """Print the table, write --json/--junit and GitHub outputs, and return the exit code."""
    code = exit_code(report)
    if not outputs.quiet:
        _print(render_table(report), sys.stdout)
    elif code != ExitCode.OK:
        _print(render_table(report, only_failing=True), sys.stdout)
    write_outputs(report, outputs)
    return int(code)
