"""The gates' typed entry: invoke's gate tasks and `sync-ci gate` run one request, checked once.

The tasks call `sync_ci.gates.cli` with typed values (no argv rebuilt for argparse); these tests
show that each refusal reads the same from both front ends and that a task's run is the command's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from sync_ci import __version__, cli
from sync_ci.errors import UsageError
from sync_ci.gates import options
from sync_ci.gates.options import DEFAULTS, GateRequest, gate_request, load_options
from tests.gates.casts import write_passing_casts
from tests.gates.verdicts import assert_honest
from tests.test_front_ends import INVOKE_USAGE, run_invoke

# invoke types a float itself (`--timeout 0` arrives as 0.0), so its range line quotes `0.0`.
FLOAT_OPTIONS = ("--timeout", "--rate", "--duration")
GATE_USAGE = [
    (tasks, argv)
    for tasks, argv, _ in INVOKE_USAGE
    if tasks[0].startswith(("gates.", "record-cast"))
    and not any(flag in tasks for flag in FLOAT_OPTIONS)
]


def document(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def verdicts(doc: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    return {row["id"]: (row["status"], row["observed"]) for row in doc["results"]}


@pytest.mark.parametrize(("tasks", "argv"), GATE_USAGE, ids=[" ".join(t) for t, _ in GATE_USAGE])
def test_a_gate_task_refuses_with_its_command_s_very_line(
    tasks: list[str], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    expected = capsys.readouterr()
    assert run_invoke(*tasks) == 2
    got = capsys.readouterr()
    assert got.err == expected.err and got.err.count("\n") == 1
    assert got.out == expected.out == ""


def test_the_cases_cover_every_gate_task() -> None:
    covered = {tasks[0] for tasks, _ in GATE_USAGE}
    assert covered >= {"gates.load", "gates.latency", "gates.all", "record-cast"}


# --- the request, as plain values --------------------------------------------------------------


def test_a_request_takes_comma_lists_and_empty_strings_as_invoke_spells_them() -> None:
    request = gate_request(
        {"target": "", "merge": "a.json, b.json,", "fault": "5xx_rate=0.1", "launch_version": ""}
    )
    assert request.target is None and request.launch_version is None
    assert tuple(request.merge) == ("a.json", "b.json")
    assert tuple(request.fault) == ("5xx_rate=0.1",)
    # argparse's lists pass as they are.
    assert list(gate_request({"merge": ["a b.json"]}).merge) == ["a b.json"]
    with pytest.raises(TypeError, match="no option 'instals'"):
        gate_request({"instals": 2000})


def test_the_defaults_and_the_numbers_checked_are_the_parsers() -> None:
    """`DEFAULTS` is what an option left out means, and each gate checks the numbers it offers."""
    parser = cli.build_parser(["gate"])
    for gate in ("load", "latency", "all", "platforms"):
        parsed = vars(parser.parse_args(["gate", gate]))
        for name, value in parsed.items():
            if hasattr(DEFAULTS, name):
                given = getattr(DEFAULTS, name)
                assert (list(given) if isinstance(given, tuple) else given) == value, (gate, name)
        offered = {name for name in parsed if name in options.NUMBERS}
        assert offered == set(options.GATE_NUMBERS[gate]), gate


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"installs": 999}, "argument --installs: 999 is out of range"),
        ({"pushes": 100_001}, "argument --pushes: 100001 is out of range"),
        ({"processes": 257}, "argument --processes: 257 is out of range"),
        ({"timeout": 600.5}, "argument --timeout: 600.5 is out of range"),
        ({"rate": 5.0}, "--rate and --duration go together"),
        ({"duration": 5.0}, "--rate and --duration go together"),
        ({"target": "live"}, "argument --target: invalid choice: 'live'"),
        ({"engine": "wrk"}, "argument --engine: invalid choice: 'wrk'"),
        ({"threshold": ["load.push.p95_ms=5001"]}, "cannot be loosened"),
        ({"threshold": ["load.5xx=nan"]}, "--threshold"),
    ],
)
def test_each_rule_of_the_load_gate_is_checked_on_the_typed_path(
    values: dict[str, Any], words: str
) -> None:
    with pytest.raises(UsageError, match=words):
        load_options(gate_request(values))


def test_the_ends_of_each_range_are_accepted() -> None:
    """The refusals above are the ends of the ranges, not a check that refuses everything."""
    request = GateRequest(
        installs=100_000, pushes=100, processes=256, timeout=600.0, rate=1.0, duration=0.5
    )
    run = load_options(request)
    assert (run.scenario.installs, run.processes, run.timeout_s) == (100_000, 256, 600.0)
    tightened = load_options(GateRequest(threshold=["load.push.p95_ms=4000"]))
    assert tightened.thresholds["load.push.p95_ms"].limit == 4000
    latency = options.latency_options(GateRequest(target="live", samples=200, concurrency=1000))
    assert latency.scenario.concurrency == 1000


def test_the_engine_flags_are_read_from_a_request_or_a_namespace() -> None:
    assert options.check_engine_options(GateRequest()) is False
    flags = argparse.Namespace(**{f: getattr(DEFAULTS, f) for f in options.REQUEST_FIELDS})
    assert options.check_engine_options(flags) is False
    with pytest.raises(UsageError, match="need --engine locust"):
        options.check_engine_options(GateRequest(master=True))


# --- the same run from both front ends, against the sandbox ------------------------------------


def test_invoke_load_runs_the_burst_sync_ci_runs_and_merges_alike(
    gate_env: dict[str, str], tmp_path: Path
) -> None:
    """The minimum burst from each front end; then both merge the two into the same verdict."""
    by_invoke, by_cli = tmp_path / "invoke.json", tmp_path / "cli.json"
    invoke_code = run_invoke("gates.load", "--quiet", "--json", str(by_invoke))
    cli_code = cli.main(["gate", "load", "-q", "--json", str(by_cli)])
    for path, code in ((by_invoke, invoke_code), (by_cli, cli_code)):
        doc = document(path)
        assert_honest(doc, code)
        assert doc["suite"] == "gate.load"
        install = verdicts(doc)["load.burst.install.p95_ms"][1]
        assert install["ok"] == 1000
    assert set(verdicts(document(by_invoke))) == set(verdicts(document(by_cli)))
    # Judging files measures nothing, so the two front ends must agree to the letter.
    merged_invoke, merged_cli = tmp_path / "m-invoke.json", tmp_path / "m-cli.json"
    files = [str(by_invoke), str(by_cli)]
    code = run_invoke(
        "gates.load", "--quiet", "--merge", ",".join(files), "--json", str(merged_invoke)
    )
    assert cli.main(["gate", "load", "-q", "--merge", *files, "--json", str(merged_cli)]) == code
    assert verdicts(document(merged_invoke)) == verdicts(document(merged_cli))
    assert verdicts(document(merged_cli))["load.burst.install.p95_ms"][1]["count"] == 2000


def test_invoke_load_injects_its_fault_and_fails_on_it(
    gate_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every answer a 503: the gate stops at its first push, from each front end alike."""
    assert run_invoke("gates.load", "--quiet", "--fault", "5xx_rate=1") == 1
    by_invoke = capsys.readouterr().err
    assert cli.main(["gate", "load", "-q", "--fault", "5xx_rate=1"]) == 1
    by_cli = capsys.readouterr().err
    for err in (by_invoke, by_cli):
        assert err.startswith("sync-ci: error: the first push answered 503"), err


def test_invoke_platforms_judges_as_sync_ci_does(tmp_path: Path) -> None:
    casts = write_passing_casts(tmp_path / "casts", __version__)
    by_invoke, by_cli = tmp_path / "invoke.json", tmp_path / "cli.json"
    assert (
        run_invoke("gates.platforms", "--quiet", "--casts", str(casts), "--json", str(by_invoke))
        == 0
    )
    assert cli.main(["gate", "platforms", "-q", "--casts", str(casts), "--json", str(by_cli)]) == 0
    assert verdicts(document(by_invoke)) == verdicts(document(by_cli))
    (casts / "macos.cast").unlink()
    assert run_invoke("gates.platforms", "--quiet", "--casts", str(casts)) == 3
    assert cli.main(["gate", "platforms", "-q", "--casts", str(casts)]) == 3
