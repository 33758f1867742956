"""What every subcommand's arguments share: the parser class, number ranges, the common options.

The subcommand modules build their parsers from these; `sync_ci.cli` (the top floor) only
gathers them, so no module below it imports `sync_ci.cli`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, TypedDict

from sync_ci.errors import ExitCode

if TYPE_CHECKING:
    from sync_ci.report_emit import Outputs


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit 2, like every other."""

    def error(self, message: str) -> NoReturn:
        """Print `sync-ci: error: ...` naming the command and how to get its help, then exit 2."""
        from sync_ci.redaction import clean

        text = clean(message, keep_newlines=False)
        self.exit(int(ExitCode.USAGE), f"sync-ci: error: {text} (see `{self.prog} --help`)\n")


def number(
    kind: type[int] | type[float],
    *,
    minimum: float,
    maximum: float,
    above: bool = False,
    unit: str = "",
    why: str = "",
) -> Callable[[str], float]:
    """Return an argparse `type=` that accepts a finite number of `kind` in the given range.

    `above` makes the lower end exclusive (a budget or a timeout must be more than 0). The message
    names the accepted range, which argparse prefixes with the option's name, and `why` if given.
    """
    what = "a whole number" if kind is int else "a number"
    span = (
        f"more than {_plain(minimum)} and at most {_plain(maximum)}"
        if above
        else f"from {_plain(minimum)} to {_plain(maximum)}"
    )
    accepted = f"{what} {span}{' ' + unit if unit else ''}{f' ({why})' if why else ''}"

    def parse(text: str) -> float:
        try:
            value: float = kind(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {accepted}") from None
        too_low = value <= minimum if above else value < minimum
        if not math.isfinite(value) or too_low or value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is out of range: want {accepted}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some of its own messages
    return parse


def within(parse: Callable[[str], float], value: float, flag: str, command: str = "") -> float:
    """Check a value a front end other than argparse typed (an invoke task) against `parse`,
    the same `number(...)` argparse uses for `flag`, so a range has one owner.

    Out of range is a usage error worded as argparse words it: `argument --flag: ...`, ending,
    when `command` is given, with the same "(see `sync-ci COMMAND --help`)" its parser adds.
    """
    from sync_ci.errors import UsageError

    # A whole float as argparse was given it ("0", not "0.0"), so the line reads the same.
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        see = f" (see `sync-ci {command} --help`)" if command else ""
        raise UsageError(f"argument {flag}: {exc}{see}") from None


def choice(
    value: str | None,
    choices: Sequence[str],
    flag: str,
    *,
    required: bool = False,
    command: str = "",
) -> None:
    """Refuse a value outside `choices` (None: not given) as argparse's `choices=` would, for
    a front end that typed it (an invoke task), in argparse's words (and, given `command`, with
    the "(see `sync-ci COMMAND --help`)" its parser adds)."""
    from sync_ci.errors import UsageError

    see = f" (see `sync-ci {command} --help`)" if command else ""
    if value is None or (value == "" and required):
        if required:
            raise UsageError(f"the following arguments are required: {flag}{see}")
        return
    if value not in choices:
        offered = ", ".join(repr(c) for c in choices)
        raise UsageError(f"argument {flag}: invalid choice: {value!r} (choose from {offered}){see}")


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


TARGETS = ("sandbox", "ci", "live")


def add_common(parser: argparse.ArgumentParser, *, targets: Sequence[str] = TARGETS) -> None:
    """Add the options every suite shares; `targets` are the ones this suite can run against."""
    parser.add_argument(
        "--target",
        choices=tuple(targets),
        help="what to run against (default: settings, else sandbox)",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="settings file (default: SYNC_CI_CONFIG, ./sync-ci.toml, user config dir)",
    )
    parser.add_argument(
        "--json", metavar="PATH", dest="json_path", help="also write the result document as JSON"
    )
    parser.add_argument(
        "--junit", metavar="PATH", dest="junit_path", help="also write a JUnit XML report"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


# A run's bound in seconds, the same range for every command that takes `--budget`.
MAX_BUDGET_S = 86_400
BUDGET_S = number(float, minimum=0, above=True, maximum=MAX_BUDGET_S, unit="seconds")


def add_budget(
    parser: argparse.ArgumentParser, *, default: float, bounds: str = "run", note: str = ""
) -> None:
    """Add `--budget SECONDS` (range BUDGET_S): the bound on the whole `bounds`, then `note`."""
    parser.add_argument(
        "--budget",
        type=BUDGET_S,
        default=default,
        metavar="SECONDS",
        help=f"bound on the whole {bounds}, 0 < SECONDS <= {MAX_BUDGET_S}{note} "
        "(default %(default)s)",
    )


def outputs(args: argparse.Namespace) -> Outputs:
    """The report outputs the common options asked for (`--json`, `--junit`, `--quiet`).

    The one place the parsed arguments become `report.Outputs`; below the CLI nothing reads them.
    """
    return report_outputs(
        getattr(args, "json_path", None),
        getattr(args, "junit_path", None),
        quiet=bool(getattr(args, "quiet", False)),
    )


class Common(TypedDict):
    """What `add_common` parsed, as the keywords every `command()` takes."""

    target: str | None
    config: str | None
    outputs: Outputs


def common(args: argparse.Namespace) -> Common:
    """`--target`, `--config` and the report options, for `command(**common(args), ...)`."""
    return Common(target=args.target, config=args.config, outputs=outputs(args))


def report_outputs(
    json: str | None = None, junit: str | None = None, *, quiet: bool = False
) -> Outputs:
    """`report.Outputs` from option values as typed (an empty path is not given): the CLI's
    parsed options and the invoke tasks' parameters both become outputs here."""
    from pathlib import Path

    from sync_ci.report_emit import Outputs

    return Outputs(
        json=Path(json) if json else None, junit=Path(junit) if junit else None, quiet=quiet
    )
