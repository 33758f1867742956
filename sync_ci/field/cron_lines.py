"""Our cron lines as text: render a role's block, find, replace and remove it in a crontab,
take a job line apart and judge it (schedule, PATH, no `flock`, every path usable).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sync_ci.errors import SyncCIError, UsageError
from sync_ci.field.cron_access import Account, access_problem, account_for
from sync_ci.report import Result

Role = Literal["maintainer", "tenant"]

ROLES: tuple[Role, ...] = ("maintainer", "tenant")

SCHEDULES: dict[Role, str] = {"maintainer": "0 */6 * * *", "tenant": "30 */6 * * *"}

SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")

SCHEDULE_START = re.compile(r"^(@\w+|[\d*/,\-]+(\s+[\d*/,\-]+){4})\s")


def begin_marker(role: Role) -> str:
    """Return the first line of our block for `role`."""
    return f"# >>> sync-ci {role} (managed by `sync-ci cron`; edits inside are overwritten) >>>"


def end_marker(role: Role) -> str:
    """Return the last line of our block for `role`."""
    return f"# <<< sync-ci {role} <<<"


@dataclass(frozen=True, slots=True, kw_only=True)
class CronPaths:
    """Absolute paths a cron line names (cron's own PATH is minimal), all for the crontab's user.

    There is no lock path: ci-loop and doctor take their own lock (sync_ci.locks) under
    `state_dir`, which the line exports so the command and `cron show` agree where it is.
    """

    exe: str
    state_dir: str
    repo: str = ""
    secrets_file: str = ""
    config: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    """Where our block sits in a crontab's lines (end is exclusive)."""

    role: Role
    start: int
    end: int
    lines: tuple[str, ...]

    @property
    def jobs(self) -> tuple[str, ...]:
        """Return the job lines inside the block (not comments, not blank)."""
        inner = self.lines[1:-1]
        return tuple(x.rstrip("\n") for x in inner if x.strip() and not x.lstrip().startswith("#"))


def _check_path(name: str, value: str) -> str:
    if not value.startswith("/"):
        raise UsageError(
            f"{name} {value!r} must be an absolute path (cron runs with a minimal PATH)"
        )
    if any(ch in value for ch in "%\n\r"):
        raise UsageError(f"{name} {value!r} holds '%' or a newline, which cron would mangle")
    return value


def render_job(role: Role, paths: CronPaths) -> str:
    """Return the one cron line for `role`: every path absolute, PATH and state dir explicit.

    The line takes no lock of its own: the command does (a `flock` around it would hold the very
    lock the command then finds busy), and a busy lock exits 0, so it never fires the alert.
    """
    q = shlex.quote
    exe = _check_path("sync-ci executable", paths.exe)
    path_dirs = [str(Path(exe).parent), *SYSTEM_PATH]
    exports = [
        f"PATH={':'.join(dict.fromkeys(path_dirs))}",
        f"SYNC_CI_STATE_DIR={q(_check_path('state directory', paths.state_dir))}",
    ]
    if paths.config:
        exports.append(f"SYNC_CI_CONFIG={q(_check_path('config file', paths.config))}")
    if paths.secrets_file:
        exports.append(f"SYNC_CI_SECRETS_FILE={q(_check_path('secrets file', paths.secrets_file))}")
    prologue = f"export {' '.join(exports)};"
    if role == "maintainer":
        repo = _check_path("repository directory", paths.repo)
        command = f"cd {q(repo)} && {q(exe)} ci-loop --target live"
    else:
        command = f"{q(exe)} doctor --silent || {q(exe)} alert doctor-failed"
    return f"{SCHEDULES[role]} {prologue} {command}"


def render_block(role: Role, paths: CronPaths) -> str:
    """Return our whole block (markers included), newline-terminated."""
    return f"{begin_marker(role)}\n{render_job(role, paths)}\n{end_marker(role)}\n"


def find_block(text: str, role: Role) -> Block | None:
    """Locate our block for `role`; raise if a marker is unpaired (we refuse to guess)."""
    lines = text.splitlines(keepends=True)
    begins = [i for i, x in enumerate(lines) if x.rstrip("\r\n") == begin_marker(role)]
    ends = [i for i, x in enumerate(lines) if x.rstrip("\r\n") == end_marker(role)]
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise SyncCIError(
            f"the crontab's sync-ci {role} markers are damaged ({len(begins)} begin, {len(ends)} "
            "end); fix them with `crontab -e` and run the command again"
        )
    start, end = begins[0], ends[0] + 1
    return Block(role=role, start=start, end=end, lines=tuple(lines[start:end]))


def apply_block(text: str, role: Role, block: str) -> str:
    """Return `text` with our block for `role` replaced or appended; other bytes are untouched."""
    found = find_block(text, role)
    lines = text.splitlines(keepends=True)
    if found is not None:
        return "".join([*lines[: found.start], block, *lines[found.end :]])
    if text and not text.endswith("\n"):
        text += "\n"  # cron ignores a last line without a newline; ours must start on its own
    return text + block


def remove_block(text: str, role: Role) -> str:
    """Return `text` without our block for `role`."""
    found = find_block(text, role)
    if found is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join([*lines[: found.start], *lines[found.end :]])


def render_diff(before: str, after: str, label: str) -> str:
    """Return a unified diff of two crontab texts ('' when equal)."""
    import difflib  # `cron --dry-run` alone: doctor reads this module every six hours

    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"{label} (installed)",
            tofile=f"{label} (proposed)",
        )
    )


def _command_words(command: str) -> tuple[list[str], list[str]]:
    """Split a shell command into tokens and the words that are executed."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    words: list[str] = []
    at_start = True
    for token in tokens:
        if token in (";", "&&", "||", "|", "&"):
            at_start = True
            continue
        if at_start:
            words.append(token)
            at_start = False
    return tokens, words


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One job line of our block, taken apart: schedule, command, exports, the `cd` and exe."""

    role: Role
    schedule: str
    command: str
    exports: dict[str, str]
    cwd: str
    executables: tuple[str, ...]
    tokens: tuple[str, ...]
    words: tuple[str, ...]


def parse_job(role: Role, line: str) -> Job:
    """Split a job line; raise ValueError when its command does not parse as shell words."""
    fields = line.split(None, 5)
    command = fields[5] if len(fields) == 6 else ""
    tokens, words = _command_words(command)
    exports: dict[str, str] = {}
    for token in tokens:
        name, sep, value = token.partition("=")
        if sep and name.isidentifier() and name not in exports:
            exports[name] = value
    cwd = next((tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "cd"), "")
    return Job(
        role=role,
        schedule=" ".join(fields[:5]),
        command=command,
        exports=exports,
        cwd=cwd,
        executables=tuple(t for t in tokens if "=" not in t and Path(t).name == "sync-ci"),
        tokens=tuple(tokens),
        words=tuple(words),
    )


def installed_jobs(text: str) -> list[Job]:
    """Return our job lines in `text`, one per role block found (raise on damaged markers)."""
    jobs = []
    for role in ROLES:
        block = find_block(text, role)
        if block is not None and len(block.jobs) == 1:
            jobs.append(parse_job(role, block.jobs[0]))
    return jobs


Access = Callable[[str, str], str]


def job_problems(job: Job, access: Access) -> list[str]:
    """Return what keeps one job line from running as intended (pure but for `access`)."""
    role = job.role
    problems: list[str] = []
    if job.schedule != SCHEDULES[role]:
        problems.append(f"{role}: schedule {job.schedule!r}, expected {SCHEDULES[role]!r}")
    path_value = job.exports.get("PATH")
    if "export" not in job.words or path_value is None:
        problems.append(f"{role}: no explicit `export PATH=...`")
    elif not all(d.startswith("/") for d in path_value.split(":")):
        problems.append(f"{role}: PATH has relative entries ({path_value})")
    if any(Path(t).name == "flock" for t in job.tokens):
        problems.append(
            f"{role}: wrapped in `flock`, which holds the lock the command takes itself, so it "
            f"never runs; reinstall: sync-ci cron install --role {role}"
        )
    relative = [w for w in job.words if w not in ("export", "cd") and not w.startswith("/")]
    relative += [t for t in job.executables if not t.startswith("/")]
    if relative:
        problems.append(f"{role}: relative command paths {sorted(set(relative))}")
    wants = [(exe, "x", "sync-ci executable") for exe in dict.fromkeys(job.executables)]
    if job.cwd:
        wants.append((job.cwd, "x", "repository directory"))
    wants += [
        (job.exports[name], want, label)
        for name, want, label in (
            ("SYNC_CI_CONFIG", "r", "config file"),
            ("SYNC_CI_SECRETS_FILE", "r", "secrets file"),
            ("SYNC_CI_STATE_DIR", "create", "state directory"),
        )
        if job.exports.get(name)
    ]
    for path, want, label in wants:
        if path.startswith("/"):
            why = access(path, want)
            if why:
                problems.append(f"{role}: {label} {why}")
    return problems


def evaluate_entry(
    text: str, *, account: Account | None = None, access: Access | None = None
) -> Result:
    """Check the crontab holds sane sync-ci entries that `account` (default: you) can run."""
    title = "cron entry installed and sane"
    try:
        blocks = [b for b in (find_block(text, r) for r in ROLES) if b is not None]
    except SyncCIError as exc:
        return Result(id="cron-entry", title=title, status="fail", detail=str(exc))
    if not blocks:
        return Result(
            id="cron-entry",
            title=title,
            status="fail",
            detail="no sync-ci entry in the crontab; run: sync-ci cron install --role tenant",
        )
    if access is None:
        who = account or account_for("")
        access = lambda path, want: access_problem(who, path, want)  # noqa: E731
    problems: list[str] = []
    observed: dict[str, Any] = {"roles": [b.role for b in blocks]}
    for block in blocks:
        if len(block.jobs) != 1:
            problems.append(f"{block.role}: {len(block.jobs)} job lines in the block, expected 1")
            continue
        try:
            job = parse_job(block.role, block.jobs[0])
        except ValueError as exc:
            problems.append(f"{block.role}: command does not parse ({exc})")
            continue
        observed[f"{block.role}_schedule"] = job.schedule
        problems += job_problems(job, access)
    return Result(
        id="cron-entry",
        title=title,
        status="fail" if problems else "pass",
        detail="; ".join(problems) if problems else ", ".join(f"{b.role} ok" for b in blocks),
        observed=observed,
    )


def validate_schedule(schedule: str) -> None:
    """Refuse a schedule python-crontab cannot parse (catches typos before crontab does)."""
    from crontab import CronSlices

    if not CronSlices.is_valid(schedule):
        raise UsageError(f"cron schedule {schedule!r} is not valid")
