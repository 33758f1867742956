"""`sync-ci conformance`: requests generated from docs/contract.openapi.yaml, answers checked.

Schemathesis (on Hypothesis) builds valid and invalid requests for every operation; each one goes
through the guarded Worker client, and its answer is checked against the OpenAPI document. This
module runs it as a whole (`run_conformance`, for the command and the write smoke's short phase);
the run's state is `conformance_run`, the cases `conformance_cases`, the checks and probes
`conformance_probes`, the smoke row's verdict `conformance_phase`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync_ci.options import BUDGET_S, number, within
from sync_ci.report import Report, make_report

if TYPE_CHECKING:
    import argparse

    from sync_ci.config import Settings
    from sync_ci.conformance_phase import PhaseVerdict
    from sync_ci.report_emit import Outputs

SPEC_PATH = Path(__file__).resolve().parents[1] / "docs" / "contract.openapi.yaml"
DEFAULT_MAX_EXAMPLES = 25
DEFAULT_BUDGET_S = 300.0
# The accepted ranges, one owner for both front ends: argparse's `type=`, and `check_limits` for a
# typed call (an invoke task, the smoke's phase). The budget's is every command's (`--budget`).
MAX_EXAMPLES = number(int, minimum=1, maximum=10_000)
SEED = number(int, minimum=0, maximum=2**64 - 1)
# The write smoke's conformance phase: a handful of cases per operation within a few seconds, so the
# smoke stays short; `sync-ci conformance` (the PR workflow's own step) is the full run.
SMOKE_MAX_EXAMPLES = 3
SMOKE_BUDGET_S = 6.0


def check_limits(*, max_examples: int, budget_s: float, seed: int | None) -> None:
    """Refuse a value outside its option's range as a usage error worded as argparse words it."""
    within(MAX_EXAMPLES, max_examples, "--max-examples", "conformance")
    within(BUDGET_S, budget_s, "--budget", "conformance")
    if seed is not None:
        within(SEED, seed, "--seed", "conformance")


def hypothesis_cache_dir() -> Path:
    """Where Hypothesis keeps its storage for us: `$XDG_CACHE_HOME/sync-ci/hypothesis`.

    Only derived tables live there (the Unicode category map and the per-codec character sets,
    which depend on the Python build alone, and the constants Hypothesis reads from our code): the
    runs keep no example database, so a cached table changes no generated case. Computing the
    codec table costs seconds of CPU per run, which the smoke's short phase cannot spare.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sync-ci" / "hypothesis"


@contextmanager
def _private_hypothesis_home() -> Iterator[None]:
    """Point Hypothesis's storage at our own cache dir (a temp dir if that cannot be made).

    Left alone it writes `.hypothesis/` into the working directory of whoever runs the smoke.
    """
    import shutil
    import tempfile

    from hypothesis.configuration import set_hypothesis_home_dir

    home = hypothesis_cache_dir()
    made = ""
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:  # a read-only or missing home: the tables are computed again, in a temp dir
        made = tempfile.mkdtemp(prefix="sync-ci-hypothesis-")
    set_hypothesis_home_dir(made or str(home))
    try:
        yield
    finally:
        set_hypothesis_home_dir(None)
        if made:
            shutil.rmtree(made, ignore_errors=True)


def run_conformance(
    settings: Settings,
    *,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    budget_s: float = DEFAULT_BUDGET_S,
    seed: int | None = None,
    spec: Path = SPEC_PATH,
    every_region: bool = True,
    floor_cases: int = 0,
) -> Report:
    """Run conformance against already-attached settings and return its report.

    `every_region=False` sends to the main URL only (the smoke asks every region in its own
    install and catalog phases); `floor_cases` cases are sent even after the budget is spent.
    Nothing is written to the working directory.
    """
    check_limits(max_examples=max_examples, budget_s=budget_s, seed=seed)
    with _private_hypothesis_home():
        return _run_conformance(
            settings,
            max_examples=max_examples,
            budget_s=budget_s,
            seed=seed,
            spec=spec,
            every_region=every_region,
            floor_cases=floor_cases,
        )


def _run_conformance(
    settings: Settings,
    *,
    max_examples: int,
    budget_s: float,
    seed: int | None,
    spec: Path,
    every_region: bool,
    floor_cases: int,
) -> Report:
    from sync_ci.conformance_cases import load_contract, run_operations, run_stateful
    from sync_ci.conformance_probes import PROBE_CHECKS, SCHEMA_CHECKS
    from sync_ci.conformance_run import Unanswered, open_run, summarize_run
    from sync_ci.errors import UnreachableError
    from sync_ci.target import regions_to_ask

    chosen = random.SystemRandom().randrange(2**32) if seed is None else seed
    begun = time.monotonic()  # the budget bounds the whole run, loading the document included
    schema = load_contract(spec)
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    with open_run(
        settings,
        max_examples=max_examples,
        budget_s=budget_s,
        seed=chosen,
        started=begun,
        floor_cases=floor_cases,
    ) as (run, _):
        worker_url = run.base_url
        regions = [
            (r.colo, r.url.rstrip("/"))
            for r in (regions_to_ask(settings, worker_url) if every_region else [])
        ]
        run_operations(run, schema, read_only=settings.read_only, regions=regions)
        try:
            run_stateful(run, schema, read_only=settings.read_only)
        except Unanswered:
            raise UnreachableError(f"the Worker stopped answering ({run.unanswered})") from None
    rows = summarize_run(run)
    return make_report(
        suite="conformance",
        target=settings.target,
        mode="read-only" if settings.read_only else "write",
        sha=settings.sha,
        started_at=started_at,
        duration_s=time.perf_counter() - clock,
        results=rows,
        # A run whose budget ran out before one case was sent measured nothing: fail closed.
        unmeasured=not any(t.cases for t in run.tallies.values()),
        extra={
            "seed": chosen,
            "cases": sum(t.cases for t in run.tallies.values()),
            "spec": str(spec),
            "max_examples": max_examples,
            "checks": [*SCHEMA_CHECKS, *PROBE_CHECKS],
            "findings": len(run.findings),
            "notes": [
                f"{f'{t.operation} @{t.where}' if t.where else t.operation}: {t.skipped}"
                for t in run.tallies.values()
                if t.skipped
            ],
        },
    )


def run_smoke_phase(settings: Settings, *, budget_s: float = SMOKE_BUDGET_S) -> PhaseVerdict:
    """The write smoke's short conformance run against its Worker, seeded by the commit."""
    import importlib.util

    from sync_ci.conformance_phase import PhaseVerdict, smoke_seed, summarize_phase

    if importlib.util.find_spec("schemathesis") is None:
        return PhaseVerdict(
            status="skip",
            detail="schemathesis is not installed here (pip install 'sync-ci[conformance]'): "
            "no generated requests sent",
        )
    report = run_conformance(
        settings,
        max_examples=SMOKE_MAX_EXAMPLES,
        budget_s=budget_s,
        seed=smoke_seed(settings.sha),
        every_region=False,
        # However loaded the machine, the phase measures: a conforming Worker always passes it.
        floor_cases=1,
    )
    return summarize_phase(report)


def command(
    *,
    target: str | None = None,
    config: str | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    budget_s: float = DEFAULT_BUDGET_S,
    seed: int | None = None,
    spec: str = str(SPEC_PATH),
    outputs: Outputs,
) -> int:
    """Resolve settings, attach the target, run conformance, print the table.

    Out-of-range values are refused before anything is attached, from every front end.
    """
    import sys

    from sync_ci import progress
    from sync_ci.attachment import SUITE, open_target
    from sync_ci.config import load_settings
    from sync_ci.report_emit import emit

    check_limits(max_examples=max_examples, budget_s=budget_s, seed=seed)
    settings = load_settings(config=config, target=target)
    with progress.showing(progress.for_outputs(outputs)), open_target(settings, SUITE) as attached:
        report = run_conformance(
            attached, max_examples=max_examples, budget_s=budget_s, seed=seed, spec=Path(spec)
        )
    print(
        f"sync-ci conformance: seed {report.extra['seed']}, {report.extra['cases']} cases "
        f"(rerun with --seed {report.extra['seed']})",
        file=sys.stderr,
    )
    return emit(report, outputs)


def add_parser(sub: Any) -> None:
    """Register `sync-ci conformance`."""
    from sync_ci.options import add_budget, add_common

    parser = sub.add_parser(
        "conformance",
        help="check the target's Worker against docs/contract.openapi.yaml (Schemathesis)",
        description="Generate valid and invalid requests for every operation of the contract's "
        "OpenAPI document and check each answer: no server errors, documented status codes, "
        "headers and bodies, invalid data refused, credentials enforced, body limits. On live "
        "only GET operations run; on ci and sandbox every write goes under the CI prefix.",
    )
    add_common(parser)
    parser.add_argument(
        "--max-examples",
        type=MAX_EXAMPLES,
        default=DEFAULT_MAX_EXAMPLES,
        metavar="N",
        help="generated cases per operation and mode, 1 to 10000 (default %(default)s)",
    )
    add_budget(parser, default=DEFAULT_BUDGET_S, note="; what is left unsent is a skipped row")
    parser.add_argument(
        "--seed",
        type=SEED,
        default=None,
        metavar="N",
        help="reproduce an earlier run's cases (the seed it printed)",
    )
    parser.add_argument(
        "--spec",
        default=str(SPEC_PATH),
        metavar="PATH",
        help="the OpenAPI document (default: docs/contract.openapi.yaml of this checkout)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sync_ci.options import common

    return command(
        **common(args),
        max_examples=args.max_examples,
        budget_s=args.budget,
        seed=args.seed,
        spec=args.spec,
    )
