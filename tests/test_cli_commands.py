"""The command table: each run loads only its subcommand's module, with the same help and options."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sync_ci import cli

REPO = Path(__file__).resolve().parents[1]
# What a command module may pull in that another command would not need.
HEAVY_PREFIXES = ("boto3", "botocore", "aiohttp", "locust", "gevent", "schemathesis", "checks")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _registered_by(module: str) -> list[str]:
    parser = argparse.ArgumentParser(prog="sync-ci")
    sub = parser.add_subparsers()
    importlib.import_module(module).add_parser(sub)
    return sorted(sub.choices)


def test_the_table_names_exactly_what_each_module_registers() -> None:
    for module in cli.COMMAND_MODULES:
        expected = sorted(name for name, owner in cli.COMMANDS.items() if owner == module)
        assert _registered_by(module) == expected, module


def test_a_named_subcommand_has_the_same_help_and_options_as_in_the_full_parser() -> None:
    full = _subparsers(cli.build_parser())
    assert sorted(full) == sorted(cli.COMMANDS)
    for name in cli.COMMANDS:
        lazy = _subparsers(cli.build_parser([name, "--help"]))
        assert sorted(lazy) == _registered_by(cli.COMMANDS[name]), name
        assert lazy[name].format_help() == full[name].format_help(), name


@pytest.mark.parametrize(
    "argv", [[], ["--help"], ["--version"], ["nonsense"], ["--help", "doctor"], ["-x", "doctor"]]
)
def test_without_a_known_command_first_every_module_is_loaded(argv: list[str]) -> None:
    assert sorted(_subparsers(cli.build_parser(argv))) == sorted(cli.COMMANDS)


def _modules_after(argv: list[str]) -> list[str]:
    script = (
        "import json, sys\n"
        "from sync_ci import cli\n"
        f"cli.build_parser({argv!r}).parse_known_args({argv!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": python_path},
        timeout=120,
        check=True,
    )
    modules: list[str] = json.loads(done.stdout)
    return modules


def test_doctor_loads_only_the_doctor_module() -> None:
    loaded = _modules_after(["doctor", "--silent"])
    commands = {m for m in loaded if m in cli.COMMAND_MODULES}
    assert commands == {"sync_ci.field.doctor"}
    assert [m for m in loaded if m.startswith(HEAVY_PREFIXES)] == []


def test_the_full_parser_loads_every_module_detection_check() -> None:
    # The probe above would pass vacuously if it could not see imports: the full build shows it can.
    loaded = set(_modules_after(["--version-not-a-command"]))
    assert set(cli.COMMAND_MODULES) <= loaded
