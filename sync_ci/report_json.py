"""The result document as JSON text and files: write, read back, validate (`sync-ci/result@1`)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sync_ci import redaction
from sync_ci.errors import ContractError
from sync_ci.files import write_private
from sync_ci.report import SCHEMA, STATUSES, Report, Result, make_report, redact_value

_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


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


def inline_json(value: Mapping[str, Any]) -> str:
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


def write_result_file(path: str | os.PathLike[str], text: str) -> Path:
    """Write atomically and owner-only, creating parent directories (a reader never sees half)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Failure details may quote what a server said: owner-only, like the alert files.
    return write_private(target, text)


def write_json(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write the result document to `path` (parents created)."""
    return write_result_file(path, to_json_text(report))


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
