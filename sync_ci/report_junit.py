"""The report as JUnit XML: one testsuite, one testcase per result."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sync_ci import __version__, redaction
from sync_ci.report import Report, Result
from sync_ci.report_json import inline_json, write_result_file
from sync_ci.report_text import shorten

# Characters XML 1.0 cannot carry at all, even escaped (plus lone surrogates). Compiled on first
# use: this class takes ~6 ms to compile, and most commands never write JUnit.
_XML_INVALID = "[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


def _xml_text(text: str) -> str:
    # Redacted before XML escaping, which could split a secret holding '&' or '<'.
    text = redaction.clean(text)
    return re.compile(_XML_INVALID).sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _details_block(result: Result) -> str:
    parts = [result.detail] if result.detail else []
    if result.observed:
        parts.append("observed: " + inline_json(result.observed))
    if result.threshold:
        parts.append("threshold: " + inline_json(result.threshold))
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
        message = _xml_text(shorten(first_line, 500))
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
    return write_result_file(path, render_junit(report))
