"""The last doctor report: written by `doctor`, read by `alert` and `verify`. Its name, once.

`doctor` keeps its result document as `<state dir>/last-doctor.json` (owner-only: failure details
may quote what a server said) so the alert that follows a failing run (`doctor || alert`) can
attach the failing rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sync_ci.files import write_private

LAST_DOCTOR = "last-doctor.json"


def path_in(state_dir: Path) -> Path:
    """Where the last doctor report of `state_dir` is kept."""
    return Path(state_dir) / LAST_DOCTOR


def save(document: dict[str, Any], state_dir: Path) -> None:
    """Keep `document` whole and owner-only (raises OSError; the caller decides what that means)."""
    Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path_in(state_dir), json.dumps(document))


def read(state_dir: Path) -> Any:
    """Return the kept document, or None when there is none or it cannot be read."""
    try:
        return json.loads(path_in(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
