"""The ci-loop pass history: one JSON line per pass, written by ci-loop and drawn by `status`.

`<alerts dir>/ci-loop-passes.jsonl` holds one `sync-ci/pass@1` object per line, oldest first. It
lives in the owner-only alert directory, each append replaces the file whole (a temporary file
renamed over it, under the ci-loop lock), and it keeps 30 days and at most 2,000 passes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sync_ci import alert_files
from sync_ci.alert_files import AlertDirError
from sync_ci.clock import parse_utc_stamp, utc_stamp

if TYPE_CHECKING:
    from sync_ci.report import Report

Outcome = Literal["pass", "fail", "unmeasured", "not-run"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "unmeasured", "not-run")
SCHEMA = "sync-ci/pass@1"
FILE_NAME = "ci-loop-passes.jsonl"
MAX_AGE = timedelta(days=30)
MAX_RECORDS = 2000
MAX_BYTES = 4 * 1024 * 1024  # read at most this much of the file's end
MAX_FAILING = 20
MAX_NAME = 120


@dataclass(frozen=True, slots=True, kw_only=True)
class PassRecord:
    """One ci-loop pass: when, how it ended, whether it recovered a failure, what failed."""

    at: datetime
    outcome: Outcome
    recovered: bool = False
    failing: tuple[str, ...] = ()
    duration_s: float = 0.0
    target: str = ""

    @property
    def healthy(self) -> bool:
        """True for a pass that measured and found nothing failing."""
        return self.outcome == "pass"


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """What the history file held: its passes oldest first, lines it could not parse, a problem."""

    records: tuple[PassRecord, ...] = ()
    skipped: int = 0
    problem: str = ""


def path_for(alerts_dir: Path) -> Path:
    """Return the history file of the alert directory `alerts_dir`."""
    return alerts_dir / FILE_NAME


# --- pure ------------------------------------------------------------------------------------


def record_for(report: Report, at: datetime, *, recovered: bool) -> PassRecord:
    """Return the record of a pass that ran and produced `report`."""
    outcome: Outcome = "unmeasured" if report.unmeasured else "pass" if report.ok else "fail"
    failing = tuple(r.id.removeprefix("phase:")[:MAX_NAME] for r in report.failing())
    return PassRecord(
        at=at,
        outcome=outcome,
        recovered=recovered and outcome == "pass",
        failing=failing[:MAX_FAILING],
        duration_s=report.duration_s,
        target=report.target,
    )


def not_run(at: datetime) -> PassRecord:
    """Return the record of a pass that could not run at all."""
    return PassRecord(at=at, outcome="not-run")


def to_line(record: PassRecord) -> str:
    """Render one record as its JSON line (with the newline)."""
    document = {
        "schema": SCHEMA,
        "at": utc_stamp(record.at),
        "outcome": record.outcome,
        "recovered": record.recovered,
        "failing": list(record.failing),
        "duration_s": round(record.duration_s, 3),
        "target": record.target,
    }
    return json.dumps(document, sort_keys=True, ensure_ascii=True) + "\n"


def from_json(document: Mapping[str, Any]) -> PassRecord | None:
    """Parse one decoded line; None when it is not a `sync-ci/pass@1` record."""
    if document.get("schema") != SCHEMA or document.get("outcome") not in OUTCOMES:
        return None
    try:
        at = parse_utc_stamp(str(document["at"]))
        failing = document.get("failing") or []
        if not isinstance(failing, list):
            return None
        outcome: Outcome = document["outcome"]
        return PassRecord(
            at=at,
            outcome=outcome,
            recovered=document.get("recovered") is True,
            failing=tuple(str(name)[:MAX_NAME] for name in failing[:MAX_FAILING]),
            duration_s=float(document.get("duration_s", 0.0)),
            target=str(document.get("target", ""))[:MAX_NAME],
        )
    except (KeyError, TypeError, ValueError):
        return None


def parse(text: str) -> History:
    """Parse the file's text: records oldest first and the number of lines that were not one."""
    records: list[PassRecord] = []
    skipped = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError:
            document = None
        record = from_json(document) if isinstance(document, dict) else None
        if record is None:
            skipped += 1
        else:
            records.append(record)
    return History(records=tuple(sorted(records, key=lambda r: r.at)), skipped=skipped)


def prune(records: Iterable[PassRecord], now: datetime) -> list[PassRecord]:
    """Keep the records of the last 30 days, at most 2,000 of them, oldest first."""
    kept = sorted((r for r in records if now - r.at <= MAX_AGE), key=lambda r: r.at)
    return kept[-MAX_RECORDS:]


def within(records: Sequence[PassRecord], start: datetime, end: datetime) -> list[PassRecord]:
    """Return the records from `start` to `end` inclusive."""
    return [r for r in records if start <= r.at <= end]


# --- edges -----------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - MAX_BYTES))
        data = handle.read(MAX_BYTES)
    if size > MAX_BYTES:  # the first line read is probably cut: drop it
        data = data.split(b"\n", 1)[-1]
    return data.decode("utf-8", errors="replace")


def read(alerts_dir: Path) -> History:
    """Read the history of `alerts_dir`; a missing or unreadable file is a History's problem."""
    path = path_for(alerts_dir)
    try:
        return parse(_read_text(path))
    except FileNotFoundError:
        return History(
            problem=f"no ci-loop pass history at {alert_files.absolute(path)} yet: ci-loop "
            "records each pass there from its next run"
        )
    except OSError as exc:
        return History(
            problem=f"cannot read the ci-loop pass history {alert_files.absolute(path)}: "
            f"{exc.strerror or exc}"
        )


def append(alerts_dir: Path, record: PassRecord, now: datetime) -> Path:
    """Add `record` to the history, dropping what is too old; AlertDirError when it cannot."""
    path = path_for(alerts_dir)
    existing = read(alerts_dir).records  # an unreadable file is replaced, not kept
    kept = prune([*existing, record], now)
    try:
        alert_files.ensure_dir(alerts_dir)
        alert_files.write_owner_only(path, "".join(to_line(r) for r in kept).encode("ascii"))
    except OSError as exc:
        raise AlertDirError(
            f"cannot record the pass in {alert_files.absolute(path)}: {exc.strerror or exc}"
        ) from None
    return path
