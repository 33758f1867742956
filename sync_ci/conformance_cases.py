"""The generated cases: the OpenAPI document loaded, Hypothesis drawing cases operation by
operation and along the document's links, each given the run's real data, sent and examined.

What generation itself raises is told apart from what the Worker did. Hypothesis and
Schemathesis are imported only when a run loads the document or starts drawing.
"""

from __future__ import annotations

import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from sync_ci.conformance_probes import examine, secured_by
from sync_ci.conformance_run import (
    BudgetSpent,
    OperationTally,
    Run,
    Unanswered,
    request_headers,
    send,
)
from sync_ci.errors import SettingsError, SyncCIError, UnreachableError
from sync_ci.extras import require_extra


def load_contract(path: Path) -> Any:
    """Load the OpenAPI document with Schemathesis; a missing or broken one is a settings error."""
    require_extra("schemathesis", "conformance", needed_by="conformance")
    require_extra("hypothesis", "conformance", needed_by="conformance")
    import schemathesis

    if not path.is_file():
        raise SettingsError(f"no OpenAPI document at {path}; pass --spec PATH")
    try:
        return schemathesis.openapi.from_path(str(path))
    except Exception as exc:  # schemathesis raises several loader errors; all mean the same here
        raise SettingsError(f"cannot load the OpenAPI document {path}: {exc}") from None


def operations(schema: Any, *, read_only: bool) -> list[Any]:
    """The document's operations a run may send: GET (and HEAD) only on a read-only target."""
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if read_only and operation.method.upper() not in ("GET", "HEAD"):
            continue
        found.append(operation)
    return found


def prepare(run: Run, case: Any, secured: str, pick: int) -> None:
    """Give a case real data: the run's root, valid credentials, an existing object name."""
    from schemathesis.core.parameters import ParameterLocation

    case.headers = request_headers(
        case.method,
        case.headers,
        secured=secured,
        credentials=run.credentials,
        read_root=run.read_root,
        write_root=run.write_root,
        # On ci the client itself names the CI root on every request, so a generated one never
        # reaches the Worker; sending it anyway would test nothing.
        keep_invalid_root=not run.pinned_root
        and case.meta is not None
        and case.meta.is_negative_at(ParameterLocation.HEADER),
    )
    positive = case.meta is None or not case.meta.generation.mode.is_negative
    if (
        positive
        and "sha256" in (case.path_parameters or {})
        and run.object_names
        and pick < len(run.object_names)
    ):
        case.path_parameters = {**case.path_parameters, "sha256": run.object_names[pick]}


def exercise(
    run: Run,
    operation: Any,
    *,
    mode: Any,
    base_url: str,
    where: str,
    max_examples: int,
    tally_as: str = "",
) -> None:
    """Generate up to `max_examples` cases of one operation in one mode, send and judge each."""
    import hypothesis
    from hypothesis import strategies as st

    secured = secured_by(operation.definition.raw)
    label = tally_as or operation.label
    tally = run.tallies.setdefault((where, label), OperationTally(operation=label, where=where))

    @hypothesis.settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
        report_multiple_bugs=False,
    )
    @hypothesis.seed(run.seed)
    @hypothesis.given(
        case=operation.as_strategy(generation_mode=mode),
        pick=st.integers(min_value=0, max_value=max(len(run.object_names), 1) * 2),
    )
    def one(case: Any, pick: int) -> None:
        if run.out_of_time():
            tally.skipped = "budget spent before every case was sent"
            return
        prepare(run, case, secured, pick)
        started = time.perf_counter()
        response = send(run, case, base_url)
        tally.count(response.status_code, time.perf_counter() - started)
        examine(run, case, response, base_url, where, negative=mode.is_negative)

    try:
        one()
    except generation_errors() as exc:
        # A replay that drew differently (Flaky), or a case that cannot be built or sent as drawn:
        # every case sent was judged already, and the inconsistency says nothing about the Worker.
        reraise_own(run, exc)
        tally.skipped = tally.skipped or f"Hypothesis stopped early ({generation_note(exc)})"


def generation_errors() -> tuple[type[BaseException], ...]:
    """What Hypothesis or Schemathesis raise about generation itself, never about an answer.

    Flaky (FlakyStrategyDefinition, FlakyReplay, FlakyFailure: a replay that drew differently),
    Unsatisfiable (no case fits the schema) and a case Schemathesis cannot serialise.
    """
    from hypothesis.errors import Flaky, Unsatisfiable
    from schemathesis.core.errors import SerializationError

    return (Flaky, Unsatisfiable, SerializationError)


def reraise_own(run: Run, exc: BaseException) -> None:
    """Raise what a generation error wraps of our own: a Worker gone silent, a guard's refusal."""
    if run.unanswered:
        raise Unanswered(run.unanswered) from None
    if isinstance(exc, BaseExceptionGroup):
        found: BaseException | None = exc.subgroup(lambda e: isinstance(e, SyncCIError))
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        if found is not None:
            raise found


def generation_note(exc: BaseException) -> str:
    """A one-line name for a generation error: its type and first line."""
    first = next(iter(str(exc).strip().splitlines()), "")
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def run_operations(
    run: Run, schema: Any, *, read_only: bool, regions: list[tuple[str, str]]
) -> None:
    """Every operation, valid then invalid data, on the main URL; GETs on every other region."""
    from schemathesis import GenerationMode

    from sync_ci import progress

    ops = operations(schema, read_only=read_only)
    plans: list[tuple[Any, Any, str, str, int, str]] = []
    # Valid data for every operation first, so a budget that runs out cuts depth, not breadth.
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in ops:
            plans.append((operation, mode, run.base_url, "", run.max_examples, ""))
    # Every region serves the same contract: its GETs with valid data, a fifth of the examples.
    for colo, url in regions:
        for operation in ops:
            if operation.method.upper() == "GET":
                examples = max(1, run.max_examples // 5)
                plans.append(
                    (operation, GenerationMode.POSITIVE, url, colo, examples, "GET operations")
                )
    shown = progress.current()
    for operation, mode, url, where, examples, tally_as in plans:
        shown.note(f"conformance: {tally_as or operation.label}{f' @{where}' if where else ''} ...")
        if run.out_of_time():
            label = tally_as or operation.label
            tally = run.tallies.setdefault(
                (where, label), OperationTally(operation=label, where=where)
            )
            tally.skipped = tally.skipped or f"budget spent before its {mode.value} cases ran"
            continue
        try:
            exercise(
                run,
                operation,
                mode=mode,
                base_url=url,
                where=where,
                max_examples=examples,
                tally_as=tally_as,
            )
        except Unanswered:
            raise UnreachableError(f"the Worker stopped answering ({run.unanswered})") from None


def run_stateful(run: Run, schema: Any, *, read_only: bool) -> None:
    """Follow the document's links: an alert, then /_status, and the same alert again."""
    import hypothesis

    if read_only or run.out_of_time():
        return
    tally = run.tallies.setdefault(("", "links"), OperationTally(operation="links"))

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def step(self, input: Any) -> Any:
            from schemathesis.generation.stateful.state_machine import StepOutput

            case = input.case
            if run.out_of_time():
                tally.skipped = "budget spent before every sequence ran"
                raise BudgetSpent
            secured = secured_by(case.operation.definition.raw)
            prepare(run, case, secured, len(run.object_names))
            started = time.perf_counter()
            response = send(run, case, run.base_url)
            tally.count(response.status_code, time.perf_counter() - started)
            negative = case.meta is not None and case.meta.generation.mode.is_negative
            examine(run, case, response, run.base_url, "", negative=negative)
            return StepOutput(response, case)

    from hypothesis.stateful import get_state_machine_test

    sequences = get_state_machine_test(
        Machine,
        settings=hypothesis.settings(
            max_examples=max(1, run.max_examples // 2),
            stateful_step_count=4,
            database=None,
            deadline=None,
            phases=[hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        ),
        _min_steps=2,
    )
    with suppress(BudgetSpent):
        try:
            hypothesis.seed(run.seed)(sequences)()
        except generation_errors() as exc:
            # Hypothesis replays a sequence and finds the link targets drawn differently (the
            # Worker's answers feed the next step). Every step sent was already judged by
            # `examine`; the replay's inconsistency says nothing about the Worker.
            reraise_own(run, exc)
            tally.skipped = tally.skipped or f"Hypothesis stopped early ({generation_note(exc)})"
