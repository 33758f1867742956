"""The three front ends speak one vocabulary: every option explained, nonsense refused as usage."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sync_ci import cli

ROOT = Path(__file__).resolve().parents[1]
# Earlier spellings kept working, hidden from --help, because an installed line or a script
# written against them uses them: (command path, option).
HIDDEN_ALIASES = {
    ("doctor", "--silent"),  # the seed's field cron line: `sync-ci doctor --silent || ...`
    ("cron install", "--user"),
    ("cron uninstall", "--user"),
    ("cron show", "--user"),
}


def _walk(
    parser: argparse.ArgumentParser, path: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """Yield (command path, parser, the help its parent lists it with) for every subcommand."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        listed = {a.dest: a.help or "" for a in action._choices_actions}
        for name, child in action.choices.items():
            where = f"{path} {name}".strip()
            yield where, child, listed.get(name, "")
            yield from _walk(child, where)


def _commands() -> list[tuple[str, argparse.ArgumentParser, str]]:
    return list(_walk(cli.build_parser()))


def test_the_walk_sees_every_command_and_nested_action() -> None:
    names = {path for path, _, _ in _commands()}
    assert set(cli.COMMANDS) <= names
    assert {"cron install", "cron show", "config show", "gate load", "gate record-cast"} <= names


def test_every_subcommand_is_listed_with_help_and_has_a_description() -> None:
    missing = [
        path
        for path, parser, listed in _commands()
        if not listed.strip() or not (parser.description or "").strip()
    ]
    assert missing == []


def test_every_option_of_every_subcommand_has_help() -> None:
    missing, hidden = [], set()
    for path, parser, _ in _commands():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            name = action.option_strings[-1] if action.option_strings else action.dest
            if action.help == argparse.SUPPRESS:
                hidden.add((path, name))
            elif not (action.help or "").strip():
                missing.append(f"{path} {name}")
    assert missing == []
    assert hidden == HIDDEN_ALIASES


def test_the_detection_sees_an_option_without_help() -> None:
    parser = cli.Parser(prog="sync-ci")
    sub = parser.add_subparsers()
    child = sub.add_parser("demo", help="a demo", description="A demo.")
    child.add_argument("--bare")
    found = [
        a.option_strings
        for _, each, _ in _walk(parser)
        for a in each._actions
        if a.option_strings and not a.help
    ]
    assert found == [["--bare"]]


def test_one_name_per_concept() -> None:
    """The quiet flag, the crontab's owner and an output path have one spelling everywhere."""
    spellings: dict[str, set[str]] = {}
    for _, parser, _ in _commands():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                spellings.setdefault(action.dest, set()).add(flag)
    assert "--silent" not in spellings.get("quiet", set())
    assert "--out" not in {f for flags in spellings.values() for f in flags}
    offered = {f for flags in spellings.values() for f in flags}
    assert "--cron-user" in offered and "--user" not in offered


# --- usage errors: exit 2 and one line naming the option and what it accepts ---------------------

USAGE = [
    (["smoke", "--budget", "0"], "--budget"),
    (["smoke", "--budget", "-5"], "--budget"),
    (["smoke", "--sample", "-1"], "--sample"),
    (["ci-loop", "--budget", "0"], "--budget"),
    (["ci-loop", "--budget", "nan"], "--budget"),
    (["conformance", "--budget", "0"], "--budget"),
    (["conformance", "--max-examples", "0"], "--max-examples"),
    (["conformance", "--seed", "-1"], "--seed"),
    (["gate", "load", "--target", "live"], "--target"),
    (["gate", "all", "--target", "live"], "--target"),
    (["gate", "load", "--threshold", "load.install.p95_ms=-1"], "--threshold"),
    (["gate", "load", "--threshold", "load.5xx=inf"], "--threshold"),
    (["gate", "latency", "--threshold", "latency.region.p95_ms=-0.5"], "--threshold"),
    (["gate", "load", "--timeout", "0"], "--timeout"),
    (["gate", "load", "--timeout", "601"], "--timeout"),
    (["gate", "load", "--processes", "0"], "--processes"),
    (["gate", "load", "--installs", "0"], "--installs"),
    (["gate", "load", "--pushes", "-100"], "--pushes"),
    (["gate", "load", "--rate", "-1"], "--rate"),
    (["gate", "load", "--duration", "-1"], "--duration"),
    (["gate", "latency", "--concurrency", "0"], "--concurrency"),
    (["gate", "latency", "--samples", "0"], "--samples"),
    (["gate", "latency", "--processes", "0"], "--processes"),
    (["gate", "latency", "--engine", "locust", "--expect-workers", "0"], "--expect-workers"),
    (["gate", "record-cast", "--platform", "beos"], "--platform"),
    (["sandbox", "--kv-miss-ms", "SIN=-1"], "--kv-miss-ms"),
    (["verify"], "--role"),
]


@pytest.mark.parametrize(("argv", "option"), USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_nonsense_is_a_usage_error_on_one_line(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("sync-ci: error: "), captured.err
    assert option in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_a_range_error_names_what_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["smoke", "--budget", "0"]) == 2
    assert "more than 0 and at most 86400 seconds" in capsys.readouterr().err


def test_a_range_checked_outside_argparse_is_worded_as_argparse_words_it() -> None:
    """`options.within` applies the argparse `type=` itself, for a front end that typed the value."""
    from sync_ci.errors import UsageError
    from sync_ci.options import number, within

    sample = number(int, minimum=0, maximum=5)
    assert within(sample, 5, "--sample") == 5
    with pytest.raises(UsageError, match=r"^argument --sample: 6 is out of range: want a whole"):
        within(sample, 6, "--sample")
    budget = number(float, minimum=0, above=True, maximum=10, unit="seconds")
    with pytest.raises(UsageError, match="more than 0 and at most 10 seconds"):
        within(budget, 0.0, "--budget")


def test_the_same_values_inside_the_range_parse() -> None:
    """The refusals above are the range's ends, not a parser that refuses everything."""
    parser = cli.build_parser()
    args = parser.parse_args(["smoke", "--budget", "0.5", "--sample", "0"])
    assert (args.budget, args.sample) == (0.5, 0)
    args = parser.parse_args(["gate", "load", "--timeout", "600", "--rate", "0", "--target", "ci"])
    assert (args.timeout, args.rate, args.target) == (600.0, 0.0, "ci")
    args = parser.parse_args(["gate", "latency", "--target", "live"])
    assert args.target == "live"
    args = parser.parse_args(["doctor", "--silent"])
    assert args.quiet is True
    args = parser.parse_args(["cron", "show", "--user", "alice"])
    assert args.user == "alice"


def test_live_from_the_environment_is_refused_by_the_load_gate_as_usage(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --target offers live to the load gate; the settings' live target is refused the same."""
    # A complete live target on a loopback port nothing listens on: the refusal comes first.
    for key, value in {
        "SYNC_CI_TARGET": "live",
        "SYNC_CI_BUCKET": "bucket",
        "SYNC_CI_ENDPOINT_URL": "http://127.0.0.1:9",
        "SYNC_CI_WORKER_URL": "http://127.0.0.1:9",
        "SYNC_CI_ACCESS_KEY_ID": "test-key-id",
        "SYNC_CI_SECRET_ACCESS_KEY": "test-secret-key",
    }.items():
        monkeypatch.setenv(key, value)
    code = cli.main(["gate", "load", "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "load gate pushes" in err and len(err.strip().splitlines()) == 1


# --- invoke -------------------------------------------------------------------------------------


def load_tasks() -> ModuleType:
    """Import tasks.py as invoke does."""
    spec = importlib.util.spec_from_file_location("sync_ci_tasks_fe", ROOT / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tasks() -> dict[str, Any]:
    ns = load_tasks().ns
    return {name: ns[name] for name in ns.task_names}


def test_every_task_parameter_has_help_and_no_other() -> None:
    for name, task in _tasks().items():
        params = [p for p in inspect.signature(task.body).parameters if p != "c"]
        assert sorted(task.help) == sorted(params), name
        assert all(str(text).strip() for text in task.help.values()), name


def test_no_task_takes_the_help_flag() -> None:
    for name, task in _tasks().items():
        saved = dict(task.help)  # get_arguments consumes the help dict
        try:
            flags = [flag for arg in task.get_arguments() for flag in arg.names]
        finally:
            task.help = saved
        assert "h" not in flags, f"invoke {name} -h would not show help"


def test_invoke_task_h_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    from invoke.program import Program

    program = Program(namespace=load_tasks().ns, name="invoke", binary="invoke")
    with pytest.raises(SystemExit) as stop:
        program.run(["invoke", "status", "-h"])
    assert stop.value.code in (0, None)
    out = capsys.readouterr().out
    assert "Usage: invoke" in out and "status" in out


# Which `sync-ci` subcommand each task fronts, and the task parameters named apart from its dest.
TASK_COMMANDS = {
    "ci-loop": "ci-loop",
    "smoke": "smoke",
    "conformance": "conformance",
    "cleanup": "cleanup",
    "install-cron": "cron install",
    "uninstall-cron": "cron uninstall",
    "cron-show": "cron show",
    "doctor": "doctor",
    "status": "status",
    "verify": "verify",
    "alert": "alert",
    "config": "config show",
    "lint": "lint",
    "sandbox": "sandbox",
    "sandbox-fault": "sandbox-fault",
    "record-cast": "gate record-cast",
    "gates.load": "gate load",
    "gates.latency": "gate latency",
    "gates.platforms": "gate platforms",
    "gates.all": "gate all",
}
DESTS = {
    "json": "json_path",
    "junit": "junit_path",
    "cron_user": "user",
    "set": "set_items",
    "version": "launch_version",
    "checks": "names",
    "format": "output_format",
}
NOT_OPTIONS = {("cleanup-lifecycle", "show")}


def test_every_task_fronts_a_command_with_its_option_names_and_defaults() -> None:
    commands = {path: parser for path, parser, _ in _commands()}
    tasks = _tasks()
    assert set(TASK_COMMANDS) | {"cleanup-lifecycle"} == set(tasks)
    for name, path in TASK_COMMANDS.items():
        defaults: dict[str, Any] = {}
        for action in commands[path]._actions:
            if action.default != argparse.SUPPRESS:  # a hidden alias's default is not its own
                defaults.setdefault(action.dest, action.default)
        for param in inspect.signature(tasks[name].body).parameters.values():
            if param.name == "c" or (name, param.name) in NOT_OPTIONS:
                continue
            candidates = (DESTS.get(param.name, ""), param.name, f"{param.name}_path")
            dest = next((d for d in candidates if d in defaults), param.name)
            assert dest in defaults, (
                f"invoke {name} --{param.name}: sync-ci {path} has no such option"
            )
            default = param.default
            if default in ("", -1, inspect.Parameter.empty):
                continue  # "not given": the command's own default applies
            expected = defaults[dest]
            if isinstance(expected, list):  # a repeatable option: the task takes a comma list
                default = default.split(",")
            assert default == expected, f"invoke {name} --{param.name} default differs"


def run_invoke(*argv: str) -> int:
    """Run `invoke ARGV` in this process as the console script does; return its exit code."""
    from invoke.program import Program

    program = Program(namespace=load_tasks().ns, name="invoke", binary="invoke")
    try:
        program.run(["invoke", *argv])
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


NUMBER_FLAGS = ("--timeout", "--installs", "--samples", "--processes")
INVOKE_USAGE = [
    (["smoke", "--budget", "0"], ["smoke", "--budget", "0"], "--budget"),
    (["smoke", "--sample", "-1"], ["smoke", "--sample", "-1"], "--sample"),
    (["smoke", "--fault", "nonsense"], ["smoke", "--fault", "nonsense"], "--fault"),
    (["ci-loop", "--budget", "0"], ["ci-loop", "--budget", "0"], "--budget"),
    (["ci-loop", "--budget", "nan"], ["ci-loop", "--budget", "nan"], "--budget"),
    (
        ["conformance", "--max-examples", "0"],
        ["conformance", "--max-examples", "0"],
        "--max-examples",
    ),
    (["conformance", "--budget", "0"], ["conformance", "--budget", "0"], "--budget"),
    (["conformance", "--seed", "-5"], ["conformance", "--seed", "-5"], "--seed"),
    (["gates.load", "--target", "live"], ["gate", "load", "--target", "live"], "--target"),
    (
        ["gates.load", "--threshold", "load.5xx=-1"],
        ["gate", "load", "--threshold", "load.5xx=-1"],
        "--threshold",
    ),
    (["gates.latency", "--timeout", "0"], ["gate", "latency", "--timeout", "0"], "--timeout"),
    (["gates.load", "--installs", "5"], ["gate", "load", "--installs", "5"], "--installs"),
    (["gates.latency", "--samples", "10"], ["gate", "latency", "--samples", "10"], "--samples"),
    (["gates.load", "--processes", "0"], ["gate", "load", "--processes", "0"], "--processes"),
    (["gates.load", "--rate", "5"], ["gate", "load", "--rate", "5"], "--rate"),
    (
        ["gates.load", "--threshold", "load.push.p95_ms=6000"],
        ["gate", "load", "--threshold", "load.push.p95_ms=6000"],
        "cannot be loosened",
    ),
    (["gates.all", "--target", "live"], ["gate", "all", "--target", "live"], "--target"),
    (
        ["gates.all", "--threshold", "load.5xx=inf"],
        ["gate", "all", "--threshold", "load.5xx=inf"],
        "--threshold",
    ),
    (
        ["record-cast", "--platform", "beos"],
        ["gate", "record-cast", "--platform", "beos"],
        "--platform",
    ),
    (["record-cast"], ["gate", "record-cast"], "--platform"),
    (
        ["gates.load", "--engine", "wrk"],
        ["gate", "load", "--engine", "wrk"],
        "--engine",
    ),
    (
        ["gates.latency", "--merge", "a.json,/nonexistent/b.json"],
        ["gate", "latency", "--merge", "a.json", "/nonexistent/b.json"],
        "a.json",
    ),
    (["lint", "--scope", "bogus"], ["lint", "--scope", "bogus"], "--scope"),
    (["lint", "--format", "xml"], ["lint", "--format", "xml"], "--format"),
    (["sandbox", "--store", "nope"], ["sandbox", "--store", "nope"], "--store"),
    (["sandbox", "--worker", "nope"], ["sandbox", "--worker", "nope"], "--worker"),
    (["verify"], ["verify"], "--role"),
    (["install-cron"], ["cron", "install"], "--role"),
    (["install-cron", "--role", "admin"], ["cron", "install", "--role", "admin"], "admin"),
    (["cleanup", "--max-delete", "-5"], ["cleanup", "--max-delete", "-5"], "--max-delete"),
    (["cleanup", "--older-than", "1m"], ["cleanup", "--older-than", "1m"], "--older-than"),
]


@pytest.mark.parametrize(
    ("tasks", "argv", "named"), INVOKE_USAGE, ids=[" ".join(t) for t, _, _ in INVOKE_USAGE]
)
def test_a_task_exits_with_the_code_and_line_of_its_command(
    tasks: list[str], argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for front_end in ("sync-ci", "invoke"):
        code = cli.main(argv) if front_end == "sync-ci" else run_invoke(*tasks)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (front_end, err)
        assert len(err) == 1 and err[0].startswith("sync-ci: error: "), (front_end, err)
        assert named in err[0], (front_end, err)


RANGE_USAGE = [
    case
    for case in INVOKE_USAGE
    if case[2] in ("--budget", "--sample", "--max-examples", "--seed", "--scope", "--format")
    or (case[0][0] == "sandbox")
    or (case[0][0].startswith("gates.") and case[2] in NUMBER_FLAGS)
]


@pytest.mark.parametrize(
    ("tasks", "argv", "named"), RANGE_USAGE, ids=[" ".join(t) for t, _, _ in RANGE_USAGE]
)
def test_a_range_or_choice_the_task_checks_reads_exactly_as_argparse_words_it(
    tasks: list[str], argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One owner per range and choice list: `options.within` and `options.choice` on the typed
    path give argparse's very line."""
    assert cli.main(argv) == 2
    expected = capsys.readouterr().err
    assert run_invoke(*tasks) == 2
    assert capsys.readouterr().err == expected


@pytest.mark.parametrize(
    ("tasks", "flag"),
    [
        (["gates.load", "--installs", "many"], "--installs"),
        (["gates.load", "--rate", "1e"], "--rate"),
        (["smoke", "--sample", "x"], "--sample"),
        (["cleanup", "--max-delete", "lots"], "--max-delete"),
    ],
)
def test_a_task_number_that_is_no_number_is_one_usage_line(
    tasks: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """invoke casts a number parameter before the task runs; its own cast raised a traceback."""
    assert run_invoke(*tasks) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sync-ci: error: argument {flag}: invalid ")
    assert "Traceback" not in captured.err and captured.out == ""


def test_a_typed_task_error_is_one_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`invoke config --target ci` with nothing set: the settings problems, exit 2, as sync-ci."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("SYNC_CI_CONFIG", "SYNC_CI_BUCKET", "SYNC_CI_SANDBOX", "SYNC_CI_TARGET"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["config", "show", "--target", "ci"]) == 2
    expected = capsys.readouterr()
    assert run_invoke("config", "--target", "ci") == 2
    got = capsys.readouterr()
    assert got.err == expected.err and "Traceback" not in got.err
    assert got.out == expected.out


# --- cleanup --max-delete: one meaning from both front ends -----------------------------------


@pytest.fixture
def ci_bucket(
    store_endpoint: Any, ci_sha: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Any:
    """`--target ci` pointed at this test's bucket through the environment, as CI sets it."""
    monkeypatch.chdir(tmp_path)
    for name in ("SYNC_CI_CONFIG", "SYNC_CI_SECRETS_FILE", "SYNC_CI_SANDBOX", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SYNC_CI_BUCKET", store_endpoint.bucket)
    monkeypatch.setenv("SYNC_CI_ENDPOINT_URL", store_endpoint.endpoint_url)
    monkeypatch.setenv("SYNC_CI_ACCESS_KEY_ID", store_endpoint.access_key_id)
    monkeypatch.setenv("SYNC_CI_SECRET_ACCESS_KEY", store_endpoint.secret_access_key)
    monkeypatch.setenv("SYNC_CI_SHA", ci_sha)
    return store_endpoint


def test_max_delete_zero_refuses_any_deletion_from_both_front_ends(
    ci_bucket: Any, admin_store: Any, ci_sha: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    key = f"snappy-os-ci/{ci_sha}/old"
    admin_store.put(key, b"x")
    later = (datetime.now(UTC) + timedelta(days=8)).isoformat()
    common = ["--target", "ci", "--now", later, "--max-delete", "0"]
    assert cli.main(["cleanup", *common]) == 1
    assert run_invoke("cleanup", *common) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("more than --max-delete 0" in line for line in err)
    assert [o.key for o in admin_store.list(f"snappy-os-ci/{ci_sha}/")] == [key]
    # Without the option neither caps the plan: the default is "no cap", spelled -1 in invoke.
    assert run_invoke("cleanup", "--target", "ci", "--now", later) == 0
    assert list(admin_store.list(f"snappy-os-ci/{ci_sha}/")) == []


# --- the README says what the code does ---------------------------------------------------------


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_readme_exit_code_table_is_the_code_s() -> None:
    import re

    from sync_ci.errors import ExitCode

    rows = re.findall(r"(?m)^\| ([0-9N, ]+) \|", _readme_section("Exit codes"))
    listed = {code.strip() for row in rows for code in row.split(",")}
    expected = {str(int(code)) for code in ExitCode} | {"N", str(cli.BROKEN_PIPE_EXIT)}
    assert listed == expected | {"130", "143"}


def test_every_flag_the_readme_names_exists_in_its_front_end() -> None:
    import re

    section = _readme_section("Tasks and sessions")
    table = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    offered = {
        flag
        for _, parser, _ in _commands()
        for action in parser._actions
        for flag in action.option_strings
    }
    task_flags = {
        "--" + param.replace("_", "-")
        for task in _tasks().values()
        for param in inspect.signature(task.body).parameters
    }
    for row in table[1:]:
        _, cli_cell, invoke_cell = (cell.strip() for cell in row.strip("|").split(" | "))
        for flag in re.findall(r"--[a-z][a-z-]*", cli_cell):
            assert flag in offered, f"README names sync-ci {flag}"
        for flag in re.findall(r"--[a-z][a-z-]*", invoke_cell):
            assert flag in task_flags, f"README names invoke {flag}"
