"""The gates HTML report: drawn from the result document, checked for structure in Chromium.

Documents come from the real code: `load_report`/`latency_report` over histograms recorded with
`gates.histogram`, a real `sync-ci gate latency` run against the sandbox, and `--merge` of both.
The structure check must fail on a page with a threshold line or a failing curve removed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sync_ci import charts
from sync_ci.cli import main
from sync_ci.gates import histogram, html_report
from sync_ci.gates import thresholds as threshold_table
from sync_ci.gates.outcome import OpStats, PhaseOutcome, RegionOutcome
from sync_ci.gates.scenario import LatencyScenario, LoadScenario
from sync_ci.gates.verdict import latency_report, load_report
from tests.browser import (
    Element,
    console_lines,
    find,
    needs_chromium,
    parse_dom,
    read_png,
    run_chromium,
)

REGIONS = {"fra": "FRA", "gru": "GRU", "iad": "IAD", "sin": "SIN", "sjc": "SJC"}
LOAD_LIMITS = {"load.install.p95_ms", "load.push.p95_ms", "load.start_spread_ms"}
LATENCY_LIMITS = {"latency.region.p95_ms", "latency.region.p99_ms"}
CHART_ROWS = 700
SWATCH = 170  # pixels of one legend swatch


def encoded(low_ms: float, high_ms: float, count: int) -> str:
    """A histogram of `count` latencies spread evenly from low to high."""
    hist = histogram.new()
    for i in range(count):
        histogram.record_us(hist, int((low_ms + (high_ms - low_ms) * i / max(count - 1, 1)) * 1000))
    return histogram.encode(hist)


def load_document(*, install_high_ms: float = 1500.0) -> dict[str, Any]:
    ops = {
        "install": OpStats(planned=1000, ok=1000, histogram=encoded(100, install_high_ms, 1000)),
        "push": OpStats(planned=100, ok=100, histogram=encoded(200, 900, 100)),
    }
    phase = PhaseOutcome(
        phase="burst", ops=ops, start_first_ns=0, start_last_ns=120_000_000, wall_s=2, cpu_s=0.5
    )
    report = load_report(
        [phase],
        threshold_table.resolve(),
        LoadScenario(),
        target="sandbox",
        sha="a" * 40,
        duration_s=2.5,
    )
    return report.to_json()


def latency_document(*, slow: str = "sin") -> dict[str, Any]:
    regions = {
        name: RegionOutcome(
            name=name,
            colo=colo,
            planned=200,
            ok=200,
            histogram=encoded(40 + 30 * index, 900 if name == slow else 150 + 60 * index, 200),
        )
        for index, (name, colo) in enumerate(REGIONS.items())
    }
    report = latency_report(
        regions,
        threshold_table.resolve(),
        LatencyScenario(),
        target="sandbox",
        sha="b" * 40,
        duration_s=3.0,
    )
    return report.to_json()


def report_problems(
    elements: list[Element],
    *,
    curves: set[str],
    failing: set[str],
    limits: set[str],
    rows: int,
) -> list[str]:
    """What a report page lacks: a curve per name, failing curves marked, each limit, the rows."""
    problems = []
    drawn = {e.attrs.get("data-name", "") for e in find(elements, "g", "curve")}
    if drawn != curves:
        problems.append(f"curves {sorted(drawn)}, expected {sorted(curves)}")
    for group in find(elements, "g", "curve"):
        if not find([e for e in elements if group in e.parents], "polyline"):
            problems.append(f"curve {group.attrs.get('data-name')} has no line")
    marked = {e.attrs.get("data-name", "") for e in find(elements, "g", "failing")}
    if marked != failing:
        problems.append(f"failing curves {sorted(marked)}, expected {sorted(failing)}")
    found = {e.attrs.get("data-threshold", "") for e in find(elements, "g", "threshold")}
    if not limits <= found:
        problems.append(f"threshold lines {sorted(found)} lack {sorted(limits - found)}")
    lines = [e for e in find(elements, "line", "threshold-line")]
    if len(lines) < len(limits):
        problems.append(f"{len(lines)} threshold lines drawn for {len(limits)} thresholds")
    table = [e for e in find(elements, "tr") if e.within("table", id_="verdict-table")]
    body = [e for e in table if e.attrs.get("data-id")]
    if len(body) != rows:
        problems.append(f"{len(body)} verdict rows, expected {rows}")
    return problems


def failing_ids(document: dict[str, Any]) -> list[str]:
    return [r["id"] for r in document["results"] if r["status"] in ("fail", "error")]


def test_the_load_report_draws_each_operation_its_limits_and_the_spread() -> None:
    document = load_document(install_high_ms=2600)  # install p95 above 2000 ms: failing
    page = html_report.render_report(document)
    assert failing_ids(document) == ["load.burst.install.p95_ms"]
    elements = parse_dom(page)
    assert (
        report_problems(
            elements,
            curves={"install", "push"},
            failing={"install"},
            limits=LOAD_LIMITS,
            rows=len(document["results"]),
        )
        == []
    )
    [bar] = find(elements, "g", "bar")
    assert bar.attrs["data-name"] == "burst" and "pass" in bar.classes
    verdict_rows = [e for e in find(elements, "tr") if e.attrs.get("data-id")]
    assert verdict_rows[0].attrs["data-id"] == "load.burst.install.p95_ms"  # failing first
    assert "FAILED" in page and not re.search(r"<script|(src|href)=\"(?!data:)", page)


def test_the_latency_report_draws_a_curve_per_region_and_both_limits() -> None:
    document = latency_document(slow="sin")
    page = html_report.render_report(document)
    assert failing_ids(document) == ["latency.region.sin"]
    curves = {f"{name} ({colo})" for name, colo in REGIONS.items()}
    assert (
        report_problems(
            parse_dom(page),
            curves=curves,
            failing={"sin (SIN)"},
            limits=LATENCY_LIMITS,
            rows=len(document["results"]),
        )
        == []
    )
    counts = {
        e.attrs["data-name"]: e.attrs["data-count"] for e in find(parse_dom(page), "g", "curve")
    }
    assert set(counts.values()) == {"200"}


def test_the_check_fails_on_a_missing_threshold_line_or_failing_mark() -> None:
    document = latency_document(slow="sin")
    page = html_report.render_report(document)
    expect: dict[str, Any] = {
        "curves": {f"{name} ({colo})" for name, colo in REGIONS.items()},
        "failing": {"sin (SIN)"},
        "limits": LATENCY_LIMITS,
        "rows": len(document["results"]),
    }
    no_p95 = re.sub(
        r'<g class="threshold" data-threshold="latency.region.p95_ms">.*?</g>', "", page
    )
    assert no_p95 != page
    assert any("p95_ms" in p for p in report_problems(parse_dom(no_p95), **expect))
    unmarked = page.replace('class="curve failing"', 'class="curve"')
    assert unmarked != page and report_problems(parse_dom(unmarked), **expect)
    healthy = html_report.render_report(latency_document(slow=""))
    assert report_problems(parse_dom(healthy), **expect)  # nothing failing where sin should


def test_gate_all_draws_the_load_and_the_latency_sections() -> None:
    from sync_ci.gates.verdict import combine
    from sync_ci.report_json import report_from_json

    parts = [report_from_json(load_document()), report_from_json(latency_document())]
    document = combine(parts, target="sandbox", sha="c" * 40, duration_s=5.0).to_json()
    page = html_report.render_report(document)
    regions = {f"{name} ({colo})" for name, colo in REGIONS.items()}
    assert (
        report_problems(
            parse_dom(page),
            curves={"install", "push", *regions},
            failing={"sin (SIN)"},
            limits=LOAD_LIMITS | LATENCY_LIMITS,
            rows=len(document["results"]),
        )
        == []
    )


def test_hostile_text_in_a_document_is_masked_and_escaped() -> None:
    from sync_ci import redaction

    secret = "s3cr3t-token-value-123456"
    redaction.register_secrets([secret])
    document = latency_document()
    document["results"][0]["detail"] = f"<script>alert(1)</script> {secret} \x1b[2J"
    document["extra"]["regions"]["iad"]["histogram"] = "not a histogram"
    page = html_report.render_report(document)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert secret not in page and "***" in page
    assert "\x1b" not in page
    assert "iad (IAD): histogram unreadable" in page


def test_gate_cli_writes_the_report_from_a_real_run_and_from_merged_results(
    gate_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result, page = tmp_path / "latency.json", tmp_path / "latency.html"
    code = main(["gate", "latency", "-q", "--json", str(result), "--html", str(page)])
    document = json.loads(result.read_text())
    assert code in (0, 1), capsys.readouterr()
    assert page.stat().st_mode & 0o077 == 0
    failing = {
        f"{n} ({c})" for n, c in REGIONS.items() if f"latency.region.{n}" in failing_ids(document)
    }
    curves = {f"{n} ({c})" for n, c in REGIONS.items()}
    rows = len(document["results"])
    expect: dict[str, Any] = {"curves": curves, "limits": LATENCY_LIMITS, "rows": rows}
    assert report_problems(parse_dom(page.read_text()), failing=failing, **expect) == []

    merged = tmp_path / "merged.html"
    code = main(
        ["gate", "latency", "-q", "--merge", str(result), str(result), "--html", str(merged)]
    )
    elements = parse_dom(merged.read_text())
    assert report_problems(elements, failing=failing, **expect) == []
    assert {e.attrs["data-count"] for e in find(elements, "g", "curve")} == {"400"}
    assert find(elements, "p", "note", id="merged")

    load_json, load_page = tmp_path / "load.json", tmp_path / "load.html"
    load_json.write_text(json.dumps(load_document()))
    assert main(["gate", "load", "-q", "--merge", str(load_json), "--html", str(load_page)]) == 0
    load_doc = load_document()
    assert (
        report_problems(
            parse_dom(load_page.read_text()),
            curves={"install", "push"},
            failing=set(),
            limits=LOAD_LIMITS,
            rows=len(load_doc["results"]),
        )
        == []
    )


def test_an_unwritable_html_path_is_one_usage_line(
    gate_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_json = tmp_path / "load.json"
    load_json.write_text(json.dumps(load_document()))
    target = tmp_path / "missing-dir" / "load.html"
    assert main(["gate", "load", "-q", "--merge", str(load_json), "--html", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sync-ci: error: cannot write --html") and "Traceback" not in err


@pytest.mark.browser
@needs_chromium
def test_the_report_renders_in_chromium_with_its_marks_and_colours(tmp_path: Path) -> None:
    document = latency_document(slow="sin")
    page = tmp_path / "latency.html"
    page.write_text(html_report.render_report(document))
    dom = run_chromium(page, tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_lines(dom) == []
    assert (
        report_problems(
            parse_dom(dom.stdout),
            curves={f"{name} ({colo})" for name, colo in REGIONS.items()},
            failing={"sin (SIN)"},
            limits=LATENCY_LIMITS,
            rows=len(document["results"]),
        )
        == []
    )
    shot = tmp_path / "latency.png"
    taken = run_chromium(page, tmp_path / "profile", screenshot=shot)
    assert taken.returncode == 0, taken.stderr[-2000:]
    image = read_png(shot, max_rows=CHART_ROWS)
    assert image.distinct() > 10
    assert (
        image.count(charts.THRESHOLD, tolerance=24) > 4 * SWATCH
    )  # two dashed lines across the chart
    for colour in charts.PALETTE[:5]:
        assert image.count(colour, tolerance=24) > SWATCH + 100, (
            colour
        )  # its curve, not only the swatch

    bare = tmp_path / "no-limits.html"
    bare.write_text(re.sub(r'<g class="threshold".*?</g>', "", page.read_text()))
    taken = run_chromium(bare, tmp_path / "profile", screenshot=shot)
    assert taken.returncode == 0, taken.stderr[-2000:]
    # Only the legend's swatch is left in the threshold colour.
    assert read_png(shot, max_rows=CHART_ROWS).count(charts.THRESHOLD, tolerance=24) <= SWATCH
