"""The ci-loop alert-file contract: names, timestamps, parser, the still-failing rule, writes.

ci-loop writes `sync-degraded-<ts>.md` after a failed pass and `sync-recovered-<ts>.md` after the
first healthy pass that follows one; `status` reads them back. Both import this module and nothing
else decides what a name means. `<ts>` is UTC, `2026-11-27T06-00-00Z`; names in the older
`20261127T060000Z` form are still read. Files are owner-only (0600 in a 0700 directory) because a
failure's detail may quote anything the target answered, and each appears whole or not at all.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sync_ci.errors import ExitCode, SyncCIError
from sync_ci.files import write_private

Kind = Literal["degraded", "recovered"]
DEFAULT_DIR = Path("state/log/alerts")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H-%M-%SZ"
_LEGACY_FORMAT = "%Y%m%dT%H%M%SZ"
NAME_RE = re.compile(
    r"^sync-(?P<kind>degraded|recovered)-"
    r"(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z|\d{8}T\d{6}Z)\.md$"
)
TITLE_LIMIT = 4096
FILE_MODE = 0o600
DIR_MODE = 0o700


class AlertDirError(SyncCIError):
    """The alert directory cannot be read or written: nothing trustworthy can be said."""

    exit_code = ExitCode.UNMEASURED


@dataclass(frozen=True, slots=True, order=True)
class AlertFile:
    """One alert file, known by its name alone."""

    at: datetime
    kind: Kind
    path: Path

    @property
    def degraded(self) -> bool:
        """True for a `sync-degraded-*` file."""
        return self.kind == "degraded"


def timestamp(at: datetime) -> str:
    """Return the file-name timestamp of `at` in UTC (2026-11-27T06-00-00Z)."""
    return at.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def file_name(kind: Kind, at: datetime) -> str:
    """Return the alert file name for `kind` at `at`."""
    return f"sync-{kind}-{timestamp(at)}.md"


def parse_name(name: str) -> tuple[Kind, datetime] | None:
    """Return (kind, UTC time) for an alert file name, or None for any other name."""
    match = NAME_RE.match(name)
    if not match:
        return None
    stamp = match.group("ts")
    fmt = TIMESTAMP_FORMAT if "-" in stamp else _LEGACY_FORMAT
    try:
        at = datetime.strptime(stamp, fmt).replace(tzinfo=UTC)
    except ValueError:  # well formed but impossible, e.g. month 13
        return None
    kind: Kind = "degraded" if match.group("kind") == "degraded" else "recovered"
    return kind, at


def parse_path(path: Path) -> AlertFile | None:
    """Return the AlertFile a path names, or None when it is not an alert file."""
    parsed = parse_name(path.name)
    return AlertFile(at=parsed[1], kind=parsed[0], path=path) if parsed else None


def current_failure(files: Iterable[AlertFile]) -> AlertFile | None:
    """Return the degradation still open: the latest degraded file newer than every recovery."""
    latest: dict[Kind, AlertFile] = {}
    for item in files:
        if item.kind not in latest or latest[item.kind].at < item.at:
            latest[item.kind] = item
    degraded, recovered = latest.get("degraded"), latest.get("recovered")
    if degraded is None or (recovered is not None and recovered.at >= degraded.at):
        return None
    return degraded


def newest_first(files: Iterable[AlertFile]) -> list[AlertFile]:
    """Sort alert files newest first (a recovery before a degradation of the same second)."""
    return sorted(files, key=lambda f: (f.at, f.kind == "recovered"), reverse=True)


# --- edges -----------------------------------------------------------------------------------


def _describe(directory: Path, exc: OSError) -> str:
    where = absolute(Path(exc.filename)) if isinstance(exc.filename, str) else directory
    return f"{where}: {exc.strerror or exc}"


def scan(directory: Path) -> list[AlertFile]:
    """Return the alert files in `directory`, newest first; AlertDirError when it is unreadable."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        raise AlertDirError(
            f"no ci-loop alert directory at {absolute(directory)}: ci-loop has not run here "
            "yet, or it writes elsewhere (pass its --alerts-dir)"
        ) from None
    except OSError as exc:
        raise AlertDirError(
            f"cannot read ci-loop alert directory {_describe(absolute(directory), exc)}; "
            "make it a directory this user can read or pass --alerts-dir DIR"
        ) from None
    return newest_first(item for path in entries if (item := parse_path(path)) is not None)


def read_title(path: Path) -> str:
    """Return the first line of an alert file without its `# ` (raw: the caller cleans it)."""
    with path.open("rb") as handle:
        first = handle.read(TITLE_LIMIT).split(b"\n", 1)[0]
    return first.decode("utf-8", errors="replace").lstrip("#").strip()


def absolute(path: Path) -> Path:
    """Return `path` made absolute for messages (as given when the working directory is gone)."""
    try:
        return path if path.is_absolute() else Path.cwd() / path
    except OSError:
        return path


def ensure_dir(directory: Path) -> None:
    """Create `directory` owner-only (tightening one of ours), or raise AlertDirError naming it."""
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        info = directory.stat()
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            directory.chmod(DIR_MODE)
        probe = directory / f".write-probe-{secrets.token_hex(4)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        probe.unlink()
    except OSError as exc:
        raise AlertDirError(
            f"cannot write ci-loop alert files in {_describe(absolute(directory), exc)}; "
            "make it a directory this user can write, or pass --alerts-dir DIR"
        ) from None


def write_owner_only(path: Path, data: bytes) -> None:
    """Write `path` atomically (a temporary file renamed over it), readable by the owner alone."""
    write_private(path, data)


def write(directory: Path, kind: Kind, at: datetime, text: str) -> Path:
    """Write one alert file atomically and owner-only; return its path."""
    ensure_dir(directory)
    path = directory / file_name(kind, at)
    try:
        write_owner_only(path, text.encode("utf-8"))
    except OSError as exc:
        raise AlertDirError(
            f"cannot write ci-loop alert file {_describe(path, exc)}; "
            "make the directory writable or pass --alerts-dir DIR"
        ) from None
    return path


def titles(files: Sequence[AlertFile]) -> list[tuple[AlertFile, str]]:
    """Pair each file with its title; a file that vanished or cannot be read says so."""
    paired = []
    for item in files:
        try:
            title = read_title(item.path)
        except OSError as exc:
            title = f"(cannot read {item.path.name}: {exc.strerror or exc})"
        paired.append((item, title))
    return paired
