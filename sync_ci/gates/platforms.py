"""The platforms gate: read asciicast v2/v3 recordings of the standard script and judge each one."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync_ci.errors import SettingsError, UsageError
from sync_ci.report import Result

PLATFORMS: tuple[str, ...] = ("ubuntu", "macos", "wsl2")
SENTINEL_RE = re.compile(r"SYNC_CI_RESULT rc=(-?\d+) version=(\S+) platform=(\S+)")
PLATFORM_ENV = "SYNC_CI_PLATFORM"
HEADER_FIELD = "sync_ci_platform"
TITLE_PLATFORM_RE = re.compile(r"platform=([A-Za-z0-9_.-]+)")
ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
ERROR_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("python traceback", re.compile(r"Traceback \(most recent call last\)")),
    ("sync-ci error line", re.compile(r"sync-ci: error:")),
    ("error line", re.compile(r"(?m)^\s*(?:ERROR|Error|error)(?:\[[^\]]*\])?:")),
    ("command not found", re.compile(r"command not found|is not recognized as an internal")),
    ("crash", re.compile(r"Segmentation fault|core dumped|\bpanic:|Killed\b")),
)
STANDARD_SCRIPT = Path(__file__).with_name("standard_script.sh")
RECORD_TIMEOUT_S = 1800.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Cast:
    """What a recording says: its header, its printed output, and its exit status if recorded."""

    version: int
    header: Mapping[str, Any]
    output: str
    exit_status: str | None = None
    events: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CastVerdict:
    """Why one platform's recording passes or fails."""

    platform: str
    path: str
    problems: tuple[str, ...] = ()
    sentinel: Mapping[str, str] = field(default_factory=dict)
    cast_version: int = 0
    exit_status: str | None = None


class CastError(Exception):
    """A recording that cannot be read as asciicast (missing, unreadable, truncated, malformed)."""


def parse_cast(text: str) -> Cast:
    """Parse asciicast v2 or v3 text; raise CastError for anything incomplete or malformed."""
    lines = text.split("\n")
    if not text.strip():
        raise CastError("the recording is empty")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as exc:
        raise CastError(f"the header is not JSON ({exc.msg})") from None
    if not isinstance(header, dict) or header.get("version") not in (2, 3):
        raise CastError("the header is not an asciicast v2 or v3 header")
    version = int(header["version"])
    output: list[str] = []
    exit_status: str | None = None
    events = 0
    body = lines[1:]
    for number, line in enumerate(body, 2):
        if not line.strip():
            continue
        if version == 3 and line.startswith("#"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            where = (
                "last" if number == len(lines) or not any(x.strip() for x in lines[number:]) else ""
            )
            if where:
                raise CastError(f"truncated: line {number} is an incomplete event") from None
            raise CastError(f"line {number} is not a JSON event") from None
        if (
            not isinstance(event, list)
            or len(event) != 3
            or not isinstance(event[0], int | float)
            or not isinstance(event[1], str)
            or not isinstance(event[2], str)
        ):
            raise CastError(f"line {number} is not a [time, code, data] event")
        events += 1
        if event[1] == "o":
            output.append(event[2])
        elif event[1] == "x" and version == 3:
            exit_status = event[2]
    if not text.endswith("\n") and events:
        # A writer always ends an event with a newline; a missing one means it was cut short.
        raise CastError("truncated: the last event has no end of line")
    return Cast(
        version=version,
        header=header,
        output="".join(output),
        exit_status=exit_status,
        events=events,
    )


def header_platform(header: Mapping[str, Any]) -> str:
    """Return the platform a header names (our field, env SYNC_CI_PLATFORM, or the title)."""
    value = header.get(HEADER_FIELD)
    if isinstance(value, str) and value:
        return value.lower()
    env = header.get("env")
    if isinstance(env, dict) and isinstance(env.get(PLATFORM_ENV), str) and env[PLATFORM_ENV]:
        return str(env[PLATFORM_ENV]).lower()
    title = header.get("title")
    if isinstance(title, str):
        match = TITLE_PLATFORM_RE.search(title)
        if match:
            return match.group(1).lower()
    return ""


def evaluate_cast(cast: Cast, *, platform: str, version: str) -> list[str]:
    """Return every problem with a parsed recording (empty when it passes)."""
    problems: list[str] = []
    if cast.version == 3:
        if cast.exit_status is None:
            problems.append("no exit event ('x') recorded: the session did not finish")
        elif cast.exit_status.strip() != "0":
            problems.append(f"the recorded session exited {cast.exit_status}")
    named = header_platform(cast.header)
    if not named:
        problems.append(
            f"the header names no platform ({HEADER_FIELD}, env {PLATFORM_ENV} or 'platform=' in title)"
        )
    elif named != platform:
        problems.append(f"the header names platform {named!r}, not {platform!r}")
    text = ANSI_RE.sub("", cast.output).replace("\r", "")
    matches = list(SENTINEL_RE.finditer(text))
    if not matches:
        problems.append(
            "no result sentinel (SYNC_CI_RESULT rc=... version=... platform=...) in the output"
        )
    else:
        rc, seen_version, seen_platform = matches[-1].groups()
        if rc != "0":
            problems.append(f"the standard script reported rc={rc}")
        if seen_version != version:
            problems.append(
                f"recorded version {seen_version} is not the version being launched ({version})"
            )
        if seen_platform.lower() != platform:
            problems.append(f"the sentinel names platform {seen_platform!r}, not {platform!r}")
    for label, pattern in ERROR_PATTERNS:
        hit = pattern.search(text)
        if hit:
            problems.append(f"{label} in the output: {_line_at(text, hit.start())[:120]!r}")
    return problems


def _line_at(text: str, index: int) -> str:
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text[start : end if end >= 0 else len(text)].strip()


def check_recording(path: Path, *, platform: str, version: str) -> CastVerdict:
    """Read and judge one recording; a missing or unreadable file is a failure, not a skip."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CastVerdict(platform=platform, path=str(path), problems=(f"no recording at {path}",))
    except (OSError, UnicodeDecodeError) as exc:
        return CastVerdict(
            platform=platform, path=str(path), problems=(f"cannot read {path}: {exc}",)
        )
    try:
        cast = parse_cast(text)
    except CastError as exc:
        return CastVerdict(platform=platform, path=str(path), problems=(f"{path}: {exc}",))
    text_out = ANSI_RE.sub("", cast.output).replace("\r", "")
    found = list(SENTINEL_RE.finditer(text_out))
    sentinel = (
        dict(zip(("rc", "version", "platform"), found[-1].groups(), strict=True)) if found else {}
    )
    return CastVerdict(
        platform=platform,
        path=str(path),
        problems=tuple(evaluate_cast(cast, platform=platform, version=version)),
        sentinel=sentinel,
        cast_version=cast.version,
        exit_status=cast.exit_status,
    )


def verdict_row(verdict: CastVerdict, version: str) -> Result:
    """Render one platform's verdict as a result row."""
    return Result(
        id=f"platforms.{verdict.platform}",
        title=f"{verdict.platform} recording of the standard script, version {version}",
        status="fail" if verdict.problems else "pass",
        detail="; ".join(verdict.problems)
        or f"rc=0, version {version}, asciicast v{verdict.cast_version}",
        observed={
            "path": verdict.path,
            "cast_version": verdict.cast_version,
            "exit_status": verdict.exit_status,
            "sentinel": dict(verdict.sentinel),
            "problems": list(verdict.problems),
        },
        threshold={"exit_status": "0", "rc": "0", "version": version, "platform": verdict.platform},
    )


def recording_paths(
    directory: Path, explicit: Mapping[str, str], platforms: Sequence[str] = PLATFORMS
) -> dict[str, Path]:
    """Map each required platform to its recording: `--cast NAME=PATH`, else DIR/NAME.cast."""
    unknown = sorted(set(explicit) - set(platforms))
    if unknown:
        raise UsageError(
            f"--cast names unknown platforms {unknown}; the gate reads {list(platforms)}"
        )
    return {p: Path(explicit[p]) if p in explicit else directory / f"{p}.cast" for p in platforms}


def check_platforms(paths: Mapping[str, Path], version: str) -> list[Result]:
    """Judge every platform's recording."""
    return [
        verdict_row(check_recording(path, platform=p, version=version), version)
        for p, path in paths.items()
    ]


# --- recording (edge) ----------------------------------------------------------------------------


def record_cast(
    platform: str,
    out_path: str | os.PathLike[str],
    *,
    script_cmd: str | None = None,
    version: str | None = None,
    timeout_s: float = RECORD_TIMEOUT_S,
) -> int:
    """Record the standard script (or `script_cmd`) with asciinema; return 0 when the cast passes."""
    from sync_ci import __version__

    platform = platform.lower()
    if not re.fullmatch(r"[a-z0-9_.-]+", platform):
        raise UsageError(
            f"platform {platform!r} must be a short name such as ubuntu, macos or wsl2"
        )
    asciinema = shutil.which("asciinema")
    if asciinema is None:
        raise SettingsError(
            "asciinema is not installed; install asciinema 2.4.0 (`pip install asciinema==2.4.0`)"
        )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = script_cmd or f"bash {STANDARD_SCRIPT}"
    env = {**os.environ, PLATFORM_ENV: platform}
    title = f"sync-ci {version or __version__} platform={platform}"
    try:
        finished = subprocess.run(
            [
                asciinema,
                "rec",
                "--overwrite",
                "-q",
                "-t",
                title,
                "-e",
                f"SHELL,TERM,{PLATFORM_ENV}",
                "-c",
                command,
                str(out),
            ],
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SettingsError(
            f"recording {platform} took longer than {timeout_s:g} s; it was stopped"
        ) from None
    if finished.returncode != 0:
        return int(finished.returncode)
    verdict = check_recording(out, platform=platform, version=version or __version__)
    return 1 if verdict.problems else 0
