"""Cron entries per role: install, uninstall, show; every line that is not ours is kept as is."""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sync_ci.errors import ExitCode, SettingsError, SyncCIError, UsageError
from sync_ci.report import Result

Role = Literal["maintainer", "tenant"]
ROLES: tuple[Role, ...] = ("maintainer", "tenant")
SCHEDULES: dict[Role, str] = {"maintainer": "0 */6 * * *", "tenant": "30 */6 * * *"}
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
CRONTAB_TIMEOUT_S = 10.0


def begin_marker(role: Role) -> str:
    """Return the first line of our block for `role`."""
    return f"# >>> sync-ci {role} (managed by `sync-ci cron`; edits inside are overwritten) >>>"


def end_marker(role: Role) -> str:
    """Return the last line of our block for `role`."""
    return f"# <<< sync-ci {role} <<<"


@dataclass(frozen=True, slots=True, kw_only=True)
class CronPaths:
    """Absolute paths a cron line names (cron's own PATH is minimal)."""

    exe: str
    flock: str
    lock: str
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
    """Return the one cron line for `role`; every path absolute, PATH explicit, under flock."""
    q = shlex.quote
    exe = _check_path("sync-ci executable", paths.exe)
    flock = _check_path("flock", paths.flock)
    lock = _check_path("lock file", paths.lock)
    path_dirs = [str(Path(exe).parent), *SYSTEM_PATH]
    exports = [f"PATH={':'.join(dict.fromkeys(path_dirs))}"]
    if paths.secrets_file:
        exports.append(f"SYNC_CI_SECRETS_FILE={q(_check_path('secrets file', paths.secrets_file))}")
    if paths.config:
        exports.append(f"SYNC_CI_CONFIG={q(_check_path('config file', paths.config))}")
    prologue = f"export {' '.join(exports)};"
    if role == "maintainer":
        repo = _check_path("repository directory", paths.repo)
        command = f"cd {q(repo)} && {q(flock)} -n {q(lock)} {q(exe)} ci-loop --target live"
    else:
        # -E 0: a run still holding the lock is not a failure, so it must not fire the alert.
        command = (
            f"{q(flock)} -n -E 0 {q(lock)} {q(exe)} doctor --silent || {q(exe)} alert doctor-failed"
        )
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


def evaluate_entry(
    text: str,
    *,
    is_executable: Callable[[str], bool] = lambda p: os.access(p, os.X_OK),
) -> Result:
    """Check the crontab text holds one sane sync-ci entry (pure but for `is_executable`)."""
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
    problems: list[str] = []
    observed: dict[str, Any] = {"roles": [b.role for b in blocks]}
    for block in blocks:
        jobs = block.jobs
        if len(jobs) != 1:
            problems.append(f"{block.role}: {len(jobs)} job lines in the block, expected 1")
            continue
        fields = jobs[0].split(None, 5)
        schedule = " ".join(fields[:5])
        command = fields[5] if len(fields) == 6 else ""
        observed[f"{block.role}_schedule"] = schedule
        if schedule != SCHEDULES[block.role]:
            problems.append(
                f"{block.role}: schedule {schedule!r}, expected {SCHEDULES[block.role]!r}"
            )
        try:
            tokens, words = _command_words(command)
        except ValueError as exc:
            problems.append(f"{block.role}: command does not parse ({exc})")
            continue
        path_values = [t[5:] for t in tokens if t.startswith("PATH=")]
        if "export" not in words or not path_values:
            problems.append(f"{block.role}: no explicit `export PATH=...`")
        elif not all(d.startswith("/") for d in path_values[0].split(":")):
            problems.append(f"{block.role}: PATH has relative entries ({path_values[0]})")
        flock_at = [i for i, t in enumerate(tokens) if Path(t).name == "flock"]
        if not flock_at or tokens[flock_at[0] + 1 : flock_at[0] + 2] != ["-n"]:
            problems.append(f"{block.role}: not run under `flock -n LOCK`")
        relative = [w for w in words if w not in ("export", "cd") and not w.startswith("/")]
        relative += [t for t in tokens if Path(t).name == "sync-ci" and not t.startswith("/")]
        if relative:
            problems.append(f"{block.role}: relative command paths {sorted(set(relative))}")
        missing = sorted(
            {t for t in tokens if Path(t).name in ("sync-ci", "flock") and t.startswith("/")}
            - {t for t in tokens if is_executable(t)}
        )
        if missing:
            problems.append(f"{block.role}: not executable: {', '.join(missing)}")
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


# --- edge: the real crontab binary ------------------------------------------------------------


def _crontab(args: list[str], user: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("crontab")
    if binary is None:
        raise SettingsError("the `crontab` program is not installed (Debian: apt-get install cron)")
    argv = [binary, *(["-u", user] if user else []), *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=CRONTAB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SyncCIError(f"`{' '.join(argv)}` did not finish in {CRONTAB_TIMEOUT_S:g} s") from None


def read_crontab(user: str = "") -> str:
    """Return the raw crontab text of `user` (current user when ''), '' when there is none."""
    done = _crontab(["-l"], user)
    if done.returncode == 0:
        return done.stdout
    if "no crontab for" in done.stderr:
        return ""
    raise SyncCIError(f"crontab -l failed: {done.stderr.strip() or done.returncode}")


def write_crontab(text: str, user: str = "") -> None:
    """Install `text` as the crontab of `user` through the real binary (it validates the syntax)."""
    with tempfile.TemporaryDirectory(prefix="sync-ci-cron-") as tmp:
        path = Path(tmp) / "crontab"
        path.write_text(text, encoding="utf-8")
        done = _crontab([str(path)], user)
    if done.returncode != 0:
        raise SyncCIError(
            f"crontab refused the new table: {done.stderr.strip() or done.returncode}"
        )


def resolve_paths(
    role: Role,
    *,
    exe: str = "",
    venv: str = "",
    repo: str = "",
    state_dir: Path,
    secrets_file: str = "",
    config: str = "",
) -> CronPaths:
    """Work out the absolute paths for a role's line from the options and this installation."""
    if exe:
        chosen = Path(exe)
    elif role == "maintainer" or venv:
        chosen = Path(venv or sys.prefix) / "bin" / "sync-ci"
    else:
        found = shutil.which("sync-ci")
        chosen = Path(found) if found else Path(sys.prefix) / "bin" / "sync-ci"
    chosen = chosen.expanduser().absolute()
    if not os.access(chosen, os.X_OK):
        raise UsageError(
            f"sync-ci executable {chosen} does not exist or is not executable; "
            "install the package or pass --exe PATH"
        )
    flock = shutil.which("flock") or "/usr/bin/flock"
    lock_name = "ci-loop.lock" if role == "maintainer" else "doctor.lock"
    repo_dir = ""
    if role == "maintainer":
        repo_dir = str(Path(repo or os.getcwd()).expanduser().absolute())
        if not (Path(repo_dir) / "pyproject.toml").is_file():
            raise UsageError(f"{repo_dir} is not the sync-ci repository; pass --repo DIR")
    return CronPaths(
        exe=str(chosen),
        flock=str(Path(flock).absolute()),
        lock=str((state_dir.expanduser() / lock_name).absolute()),
        repo=repo_dir,
        secrets_file=str(Path(secrets_file).expanduser().absolute()) if secrets_file else "",
        config=str(Path(config).expanduser().absolute()) if config else "",
    )


# --- entry points -----------------------------------------------------------------------------


def install(role: Role, paths: CronPaths, *, user: str = "", dry_run: bool = False) -> str:
    """Install or update our block for `role`; return the diff ('' when already up to date)."""
    block = render_block(role, paths)
    validate_schedule(SCHEDULES[role])
    before = read_crontab(user)
    after = apply_block(before, role, block)
    diff = render_diff(before, after, f"crontab{' -u ' + user if user else ''}")
    if diff and not dry_run:
        write_crontab(after, user)
    return diff


def uninstall(roles: tuple[Role, ...], *, user: str = "", dry_run: bool = False) -> str:
    """Remove our blocks for `roles`; return the diff."""
    before = read_crontab(user)
    after = before
    for role in roles:
        after = remove_block(after, role)
    diff = render_diff(before, after, f"crontab{' -u ' + user if user else ''}")
    if diff and not dry_run:
        write_crontab(after, user)
    return diff


def command(
    action: str,
    *,
    role: str = "",
    user: str = "",
    dry_run: bool = False,
    exe: str = "",
    venv: str = "",
    repo: str = "",
    secrets_file: str = "",
    config: str | None = None,
) -> int:
    """Run `cron install|uninstall|show` and return the exit code."""
    if role and role not in ROLES:
        raise UsageError(f"role {role!r} is unknown; use maintainer or tenant")
    if action == "install":
        if not role:
            raise UsageError("cron install needs --role maintainer|tenant")
        from sync_ci.config import load_settings

        settings = load_settings(config=config, check_remote=False)
        chosen: Role = "maintainer" if role == "maintainer" else "tenant"
        paths = resolve_paths(
            chosen,
            exe=exe,
            venv=venv,
            repo=repo,
            state_dir=settings.state_dir,
            secrets_file=secrets_file or os.environ.get("SYNC_CI_SECRETS_FILE", ""),
            config=settings.config_path,
        )
        diff = install(chosen, paths, user=user, dry_run=dry_run)
        print(diff or f"sync-ci {role} cron entry already up to date", end="" if diff else "\n")
        if not dry_run:
            settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return int(ExitCode.OK)
    if action == "uninstall":
        roles: tuple[Role, ...] = ROLES
        if role:
            roles = ("maintainer",) if role == "maintainer" else ("tenant",)
        diff = uninstall(roles, user=user, dry_run=dry_run)
        print(diff or "no sync-ci cron entry to remove", end="" if diff else "\n")
        return int(ExitCode.OK)
    if action == "show":
        text = read_crontab(user)
        shown = False
        for each in ROLES:
            block = find_block(text, each)
            if block is not None:
                print("".join(block.lines), end="")
                shown = True
        result = evaluate_entry(text)
        if not shown:
            print("no sync-ci cron entry installed")
        print(f"{result.status}: {result.detail}", file=sys.stderr)
        return int(ExitCode.OK if result.status == "pass" else ExitCode.FAILED)
    raise UsageError(f"unknown cron action {action!r}")


def add_parser(sub: Any) -> None:
    """Register `cron install|uninstall|show`."""
    parser = sub.add_parser("cron", help="install, remove or show the sync-ci cron entry")
    inner = parser.add_subparsers(dest="cron_action", metavar="ACTION", required=True)
    for action, text in (
        ("install", "add or update the entry for a role (idempotent)"),
        ("uninstall", "remove our entries only; every other line is kept"),
        ("show", "print our entries and check they are sane"),
    ):
        each = inner.add_parser(action, help=text)
        each.add_argument("--role", choices=ROLES, required=action == "install", default="")
        each.add_argument("--user", default="", help="whose crontab (needs root; default: yours)")
        each.add_argument("--config", metavar="PATH", help="settings file")
        each.add_argument("--debug", action="store_true", help="show tracebacks for errors")
        if action != "show":
            each.add_argument(
                "--dry-run", action="store_true", help="print the diff, change nothing"
            )
        if action == "install":
            each.add_argument("--exe", default="", help="absolute path of the sync-ci executable")
            each.add_argument(
                "--venv", default="", help="virtualenv holding bin/sync-ci (maintainer)"
            )
            each.add_argument(
                "--repo", default="", help="repository directory (maintainer; default: cwd)"
            )
            each.add_argument(
                "--secrets-file",
                default="",
                help="owner-only KEY=VALUE file, exported as SYNC_CI_SECRETS_FILE (default: env)",
            )
        each.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return command(
        args.cron_action,
        role=args.role,
        user=args.user,
        dry_run=getattr(args, "dry_run", False),
        exe=getattr(args, "exe", ""),
        venv=getattr(args, "venv", ""),
        repo=getattr(args, "repo", ""),
        secrets_file=getattr(args, "secrets_file", ""),
        config=args.config,
    )
