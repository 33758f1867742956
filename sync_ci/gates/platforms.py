"""The platforms gate: read asciicast v2/v3 recordings of the standard script and judge each one.

A recording passes on evidence, not on a claim: every step's start and exit 0, what the machine
says it is (`uname -srm`, /etc/os-release, `sw_vers`, the WSL kernel), and one installed digest.
Over 400 lines because reading the recording, its evidence per platform and the verdict rows are
one chain over the same parsed events.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync_ci.errors import SettingsError, UsageError
from sync_ci.report import Result, Status

PLATFORMS: tuple[str, ...] = ("ubuntu", "macos", "wsl2")
STEPS: tuple[str, ...] = ("install", "doctor", "smoke")
SENTINEL_RE = re.compile(r"SYNC_CI_RESULT rc=(-?\d+) version=(\S+) platform=(\S+)")
STEP_RE = re.compile(r"(?m)^SYNC_CI_STEP ([a-z]+) (?:(start)\b.*|exit (-?\d+))[ \t]*$")
EVIDENCE_RE = re.compile(r"(?m)^SYNC_CI_EVIDENCE ([a-z0-9_]+)=(.*?)[ \t]*$")
DIGEST_RE = re.compile(r"[0-9a-f]{64}")
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
MACOS_PRODUCTS = ("macOS", "Mac OS X")
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
    truncated: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CastVerdict:
    """Why one platform's recording passes or fails (or could not be read at all)."""

    platform: str
    path: str
    problems: tuple[str, ...] = ()
    measured: bool = True
    sentinel: Mapping[str, str] = field(default_factory=dict)
    evidence: Mapping[str, str] = field(default_factory=dict)
    cast_version: int = 0
    exit_status: str | None = None


class CastError(Exception):
    """A recording that cannot be read as asciicast (missing, unreadable, malformed)."""


def parse_cast(text: str) -> Cast:
    """Parse asciicast v2 or v3 text; raise CastError for anything that is not a recording.

    A recording cut short (its last event incomplete) still parses, with `truncated` saying so,
    so the gate can also say which steps it lost.
    """
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
    truncated = ""
    last = max((i for i, line in enumerate(lines) if line.strip()), default=0)
    for index, line in enumerate(lines[1:], 1):
        if not line.strip() or (version == 3 and line.startswith("#")):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if index == last:
                truncated = f"truncated: line {index + 1} is an incomplete event"
                break
            raise CastError(f"line {index + 1} is not a JSON event") from None
        if (
            not isinstance(event, list)
            or len(event) != 3
            or not isinstance(event[0], int | float)
            or not isinstance(event[1], str)
            or not isinstance(event[2], str)
        ):
            raise CastError(f"line {index + 1} is not a [time, code, data] event")
        events += 1
        if event[1] == "o":
            output.append(event[2])
        elif event[1] == "x" and version == 3:
            exit_status = event[2]
    if not truncated and events and not text.endswith("\n"):
        # A writer always ends an event with a newline; a missing one means it was cut short.
        truncated = "truncated: the last event has no end of line"
    return Cast(
        version=version,
        header=header,
        output="".join(output),
        exit_status=exit_status,
        events=events,
        truncated=truncated,
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


def terminal_text(cast: Cast) -> str:
    """Return what the terminal showed, without colour codes and carriage returns."""
    return ANSI_RE.sub("", cast.output).replace("\r", "")


def read_evidence(text: str) -> dict[str, tuple[str, ...]]:
    """Collect every `SYNC_CI_EVIDENCE key=value` line: key -> distinct values in order."""
    found: dict[str, list[str]] = {}
    for key, value in EVIDENCE_RE.findall(text):
        values = found.setdefault(key, [])
        if value not in values:
            values.append(value)
    return {key: tuple(values) for key, values in found.items()}


def evaluate_steps(text: str, steps: Sequence[str] = STEPS) -> list[str]:
    """Return what is wrong with the steps: each must start, then exit 0, in order."""
    starts: dict[str, list[int]] = {}
    exits: dict[str, list[tuple[int, int]]] = {}
    for match in STEP_RE.finditer(text):
        name, start, code = match.groups()
        if start:
            starts.setdefault(name, []).append(match.start())
        else:
            exits.setdefault(name, []).append((match.start(), int(code)))
    problems: list[str] = []
    previous_end = -1
    for name in steps:
        begun, ended = starts.get(name, []), exits.get(name, [])
        if not begun:
            problems.append(f"step {name} never started (no 'SYNC_CI_STEP {name} start' line)")
            continue
        if len(begun) > 1 or len(ended) > 1:
            problems.append(f"step {name} ran {max(len(begun), len(ended))} times, not once")
        after = [(at, code) for at, code in ended if at > begun[0]]
        if not after:
            problems.append(
                f"step {name} started but has no exit line (the recording stops inside it)"
            )
            continue
        at, code = after[0]
        if code != 0:
            problems.append(f"step {name} exited {code}")
        if begun[0] < previous_end:
            problems.append(f"step {name} started before the step before it ended")
        previous_end = at
    return problems


def _one(evidence: Mapping[str, tuple[str, ...]], key: str) -> str:
    values = evidence.get(key, ())
    return values[0] if values else ""


def evaluate_evidence(evidence: Mapping[str, tuple[str, ...]], platform: str) -> list[str]:
    """Return every way the recorded evidence is missing or contradicts the claimed platform."""
    problems = [
        f"contradictory evidence: {key} recorded as {' and '.join(repr(v) for v in values)}"
        for key, values in evidence.items()
        if len(values) > 1
    ]
    uname = _one(evidence, "uname")
    parts = uname.split()
    if not uname:
        return [*problems, "no platform evidence: no 'SYNC_CI_EVIDENCE uname=' (`uname -srm`) line"]
    if len(parts) != 3:
        return [*problems, f"uname evidence {uname!r} is not `uname -srm` (SYSTEM RELEASE MACHINE)"]
    system, release = parts[0], parts[1]
    os_id = _one(evidence, "os_release_id")
    os_version = _one(evidence, "os_release_version_id")
    product = _one(evidence, "sw_vers_product")
    wsl_kernel = "microsoft" in release.lower()
    if platform == "macos":
        if system != "Darwin":
            problems.append(f"uname says {system} ({uname!r}), not Darwin: this is not a Mac")
        if not product:
            problems.append("no sw_vers evidence: every Mac has `sw_vers`, and none was recorded")
        elif product not in MACOS_PRODUCTS:
            problems.append(f"sw_vers names {product!r}, not macOS")
        elif not _one(evidence, "sw_vers_version"):
            problems.append("sw_vers recorded no ProductVersion")
        if os_id:
            problems.append(f"/etc/os-release ID {os_id!r} was recorded: macOS has no os-release")
        return problems
    if system != "Linux":
        problems.append(f"uname says {system} ({uname!r}), not Linux")
    if product:
        problems.append(f"sw_vers evidence ({product!r}) was recorded: only macOS has sw_vers")
    if platform == "ubuntu":
        if not os_id:
            problems.append("no /etc/os-release ID recorded")
        elif os_id != "ubuntu":
            problems.append(f"/etc/os-release ID is {os_id!r}, not 'ubuntu'")
        if os_id and not os_version:
            problems.append("/etc/os-release has no VERSION_ID")
        if wsl_kernel:
            problems.append(f"kernel {release!r} is a WSL kernel: this is WSL, not native Ubuntu")
        elif _one(evidence, "wsl_interop") == "present":
            problems.append("WSL interop is registered: this is WSL, not native Ubuntu")
    elif platform == "wsl2":
        if not wsl_kernel:
            problems.append(f"kernel {release!r} carries no WSL marker (microsoft...WSL2)")
        elif "wsl2" not in release.lower():
            problems.append(f"kernel {release!r} is WSL 1, not WSL2 (no WSL2 marker)")
        if not os_id:
            problems.append("no /etc/os-release ID recorded")
    else:
        problems.append(f"no evidence rule for platform {platform!r}; the gate reads {PLATFORMS}")
    return problems


def evaluate_distribution(evidence: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Return what is wrong with the recorded installed-distribution digest."""
    digest = _one(evidence, "dist_sha256")
    if not digest or digest == "missing":
        return ["no installed-distribution digest (SYNC_CI_EVIDENCE dist_sha256=) recorded"]
    if not DIGEST_RE.fullmatch(digest):
        return [f"dist_sha256 {digest[:80]!r} is not a sha256 hex digest"]
    return []


def evaluate_cast(cast: Cast, *, platform: str, version: str) -> list[str]:
    """Return every problem with a parsed recording (empty when it passes)."""
    problems: list[str] = [cast.truncated] if cast.truncated else []
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
    text = terminal_text(cast)
    problems.extend(evaluate_steps(text))
    evidence = read_evidence(text)
    problems.extend(evaluate_evidence(evidence, platform))
    problems.extend(evaluate_distribution(evidence))
    installed = _one(evidence, "dist_version")
    if installed and installed != version:
        problems.append(
            f"the installed distribution is version {installed}, not the version being launched "
            f"({version})"
        )
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


def _unmeasured(platform: str, path: Path, why: str) -> CastVerdict:
    return CastVerdict(platform=platform, path=str(path), problems=(why,), measured=False)


def check_recording(path: Path, *, platform: str, version: str) -> CastVerdict:
    """Read and judge one recording; a missing or unreadable file could not be measured."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _unmeasured(platform, path, f"no recording at {path}")
    except (OSError, UnicodeDecodeError) as exc:
        return _unmeasured(platform, path, f"cannot read {path}: {exc}")
    try:
        cast = parse_cast(text)
    except CastError as exc:
        return _unmeasured(platform, path, f"{path} is not an asciicast recording: {exc}")
    text_out = terminal_text(cast)
    found = list(SENTINEL_RE.finditer(text_out))
    sentinel = (
        dict(zip(("rc", "version", "platform"), found[-1].groups(), strict=True)) if found else {}
    )
    return CastVerdict(
        platform=platform,
        path=str(path),
        problems=tuple(evaluate_cast(cast, platform=platform, version=version)),
        sentinel=sentinel,
        evidence={key: values[0] for key, values in read_evidence(text_out).items()},
        cast_version=cast.version,
        exit_status=cast.exit_status,
    )


def verdict_row(verdict: CastVerdict, version: str) -> Result:
    """Render one platform's verdict as a result row."""
    status: Status = "error" if not verdict.measured else "fail" if verdict.problems else "pass"
    detail = "; ".join(verdict.problems)
    if not verdict.measured:
        detail = (
            f"could not measure: {detail} (record it with "
            f"`sync-ci gate record-cast --platform {verdict.platform}`)"
        )
    ev = verdict.evidence
    return Result(
        id=f"platforms.{verdict.platform}",
        title=f"{verdict.platform} recording of the standard script, version {version}",
        status=status,
        detail=detail
        or f"rc=0, version {version}, {ev.get('uname', '')}, asciicast v{verdict.cast_version}",
        observed={
            "path": verdict.path,
            "cast_version": verdict.cast_version,
            "exit_status": verdict.exit_status,
            "sentinel": dict(verdict.sentinel),
            "evidence": dict(ev),
            "problems": list(verdict.problems),
        },
        threshold={
            "exit_status": "0",
            "rc": "0",
            "steps": list(STEPS),
            "version": version,
            "platform": verdict.platform,
        },
    )


def distribution_row(verdicts: Sequence[CastVerdict]) -> Result:
    """Compare the installed-distribution digest across every recording: one build everywhere."""
    digests = {v.platform: v.evidence.get("dist_sha256", "") for v in verdicts}
    unread = [v.platform for v in verdicts if not v.measured]
    absent = [p for p, d in digests.items() if not DIGEST_RE.fullmatch(d)]
    distinct = sorted({d for d in digests.values() if DIGEST_RE.fullmatch(d)})
    status: Status = "pass"
    if unread:
        status = "error"
        detail = f"could not measure: no readable recording for {', '.join(unread)}"
    elif absent:
        status = "fail"
        detail = f"no installed-distribution digest recorded for {', '.join(absent)}"
    elif len(distinct) > 1:
        status = "fail"
        detail = "different sync-ci builds were installed: " + ", ".join(
            f"{p} {d[:12]}" for p, d in digests.items()
        )
    else:
        detail = f"one build on all {len(verdicts)}: sha256 {distinct[0][:12]}"
    return Result(
        id="platforms.distribution",
        title="every recording installed the same sync-ci distribution",
        status=status,
        detail=detail,
        observed={"dist_sha256": digests},
        threshold={"distinct_digests": 1},
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
    """Judge every platform's recording, then whether they all installed one build."""
    verdicts = [check_recording(path, platform=p, version=version) for p, path in paths.items()]
    return [*(verdict_row(v, version) for v in verdicts), distribution_row(verdicts)]


def unmeasured(results: Sequence[Result]) -> bool:
    """Tell whether some recording could not be read: no data is exit 3, never a pass."""
    return any(r.status == "error" for r in results)


# --- evidence (run on the recorded machine by the standard script) -------------------------------


def distribution_digest(root: Path | None = None) -> str:
    """Return the sha256 over the installed sync_ci package: each file's path and content, sorted."""
    package = root or Path(__file__).resolve().parent.parent
    total = hashlib.sha256()
    files = sorted(
        p
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )
    for path in files:
        total.update(path.relative_to(package).as_posix().encode() + b"\0")
        total.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return total.hexdigest()


def print_evidence() -> int:
    """Print the installed version and distribution digest as evidence lines."""
    from sync_ci import __version__

    print(f"SYNC_CI_EVIDENCE dist_version={__version__}")
    print(f"SYNC_CI_EVIDENCE dist_sha256={distribution_digest()}")
    return 0


# --- recording (edge) ----------------------------------------------------------------------------


def record_cast(
    platform: str,
    out_path: str | os.PathLike[str],
    *,
    script_cmd: str | None = None,
    version: str | None = None,
    timeout_s: float = RECORD_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> int:
    """Record the standard script (or `script_cmd`) with asciinema; return 0 when the cast passes."""
    from sync_ci import __version__
    from sync_ci.sandbox.processes import spawn, stop_process_group

    platform = platform.lower()
    if not re.fullmatch(r"[a-z0-9_.-]+", platform):
        raise UsageError(
            f"platform {platform!r} must be a short name such as ubuntu, macos or wsl2"
        )
    base = dict(os.environ if env is None else env)
    # Also beside this interpreter: a venv's tools are there even when its bin is not on PATH.
    asciinema = shutil.which("asciinema", path=base.get("PATH")) or shutil.which(
        "asciinema", path=str(Path(sys.executable).parent)
    )
    if asciinema is None:
        raise SettingsError(
            "asciinema is not installed; install asciinema 2.4.0 (`pip install asciinema==2.4.0`)"
        )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = script_cmd or f"bash {STANDARD_SCRIPT}"
    title = f"sync-ci {version or __version__} platform={platform}"
    argv = [asciinema, "rec", "--overwrite", "-q", "-t", title]
    argv += ["-e", f"SHELL,TERM,{PLATFORM_ENV}", "-c", command, str(out)]
    # asciinema's stderr is kept aside: stopping its group makes its workers print tracebacks.
    with tempfile.TemporaryFile() as errors:
        process = spawn(
            argv, stdin=subprocess.DEVNULL, stderr=errors, env={**base, PLATFORM_ENV: platform}
        )
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise SettingsError(
                f"recording {platform} took longer than {timeout_s:g} s; it was stopped"
            ) from None
        finally:
            stop_process_group(process)
        if code != 0:
            errors.seek(0)
            said = errors.read().decode("utf-8", "replace").strip().splitlines()
            print(f"asciinema exited {code}: {said[-1] if said else 'no message'}", file=sys.stderr)
            return int(code)
    verdict = check_recording(out, platform=platform, version=version or __version__)
    return 1 if verdict.problems else 0


def main(argv: Sequence[str]) -> int:
    """`python -m sync_ci.gates.platforms evidence`: what the standard script runs after install."""
    if list(argv) != ["evidence"]:
        print("usage: python -m sync_ci.gates.platforms evidence", file=sys.stderr)
        return 2
    return print_evidence()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
