"""Cron entries per role: install, uninstall, show; every line that is not ours is kept as is."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
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
JOB_TIMEOUT_S = 1200.0  # above ci-loop's own 900 s budget
SCHEDULE_START = re.compile(r"^(@\w+|[\d*/,\-]+(\s+[\d*/,\-]+){4})\s")


def begin_marker(role: Role) -> str:
    """Return the first line of our block for `role`."""
    return f"# >>> sync-ci {role} (managed by `sync-ci cron`; edits inside are overwritten) >>>"


def end_marker(role: Role) -> str:
    """Return the last line of our block for `role`."""
    return f"# <<< sync-ci {role} <<<"


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """The user a crontab belongs to, from the password database (cron runs jobs as them)."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]
    home: str


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


# --- who may do what: permission bits as the kernel applies them (ACLs aside) ----------------

_BITS = {"r": 4, "w": 2, "x": 1}


def account_for(user: str = "") -> Account:
    """Look `user` up in the password database ('' = the user running this)."""
    try:
        entry = pwd.getpwnam(user) if user else pwd.getpwuid(os.geteuid())
    except KeyError:
        raise UsageError(
            f"user {user!r} is not in the password database; create it first"
        ) from None
    groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Account(
        name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups, home=entry.pw_dir
    )


def permits(account: Account, mode: int, uid: int, gid: int, want: str) -> bool:
    """Return whether `account` may `want` ('r', 'w', 'x' or a mix) a file of this mode/owner."""
    if account.uid == 0:  # root reads and writes anything; it executes what has some x bit
        return "x" not in want or stat.S_ISDIR(mode) or bool(mode & 0o111)
    shift = 6 if uid == account.uid else 3 if gid in account.groups else 0
    need = sum(_BITS[c] for c in want)
    return (mode >> shift) & need == need


def _describe(path: Path, info: os.stat_result) -> str:
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    return f"{path} (mode {stat.S_IMODE(info.st_mode):o}, owner {owner})"


def access_problem(account: Account, path: str, want: str) -> str:
    """Return '' when `account` may `want` `path` ('r', 'x', 'rx', or 'create'), else why not.

    Every directory on the way (and on the way to where a symlink points) must be searchable;
    'create' means the directory exists writable, or its nearest existing parent is.
    """
    target = Path(path)
    if want == "create":
        existing = target
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        why = access_problem(account, str(existing), "wx")
        return why and f"{target}: {why}"
    chains = [target, Path(os.path.realpath(target))]
    for chain in dict.fromkeys(chains):
        for directory in reversed(chain.parents):
            try:
                info = directory.stat()
            except OSError as exc:
                return f"{directory}: {exc.strerror}"
            if not permits(account, info.st_mode, info.st_uid, info.st_gid, "x"):
                return f"{target} is out of reach of {account.name}: {_describe(directory, info)} is not searchable by them"
    try:
        info = target.stat()
    except OSError as exc:
        return f"{target}: {exc.strerror}"
    if not permits(account, info.st_mode, info.st_uid, info.st_gid, want):
        verbs = "/".join({"r": "read", "w": "written", "x": "executed"}[c] for c in want)
        return f"{_describe(target, info)} cannot be {verbs} by {account.name}"
    if "x" in want and stat.S_ISREG(info.st_mode):
        return _interpreter_problem(account, target)
    return ""


def _interpreter_problem(account: Account, script: Path) -> str:
    try:
        with script.open("rb") as handle:
            first = handle.readline(512)
    except OSError:
        return ""
    if not first.startswith(b"#!"):
        return ""
    words = first[2:].decode("utf-8", "replace").split()
    if not words or Path(words[0]).name == "env":
        return ""
    info = script.stat()
    if not permits(account, info.st_mode, info.st_uid, info.st_gid, "r"):
        return f"{_describe(script, info)} is a script {account.name} cannot read"
    why = access_problem(account, words[0], "x")
    return why and f"{script}'s interpreter {why}"


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
    user: str = "",
    exe: str = "",
    venv: str = "",
    repo: str = "",
    state_dir: Path | None = None,
    secrets_file: str = "",
    config: str = "",
) -> CronPaths:
    """Work out the line's absolute paths for the crontab's user, and refuse what they can't use.

    For another user (`--user`, as bootstrap runs it as root) nothing comes from the installer's
    environment: the home is the password database's, the config is searched where the job will
    search it, and every path is checked with that user's permissions.
    """
    from sync_ci.config import _user_config_dir, _user_state_dir, load_settings

    account = account_for(user)
    own = account.uid == os.geteuid()
    env: dict[str, str] = (
        dict(os.environ) if own else {"HOME": account.home, "LOGNAME": account.name}
    )
    if not own:
        env["USER"] = account.name
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
    repo_dir = ""
    if role == "maintainer":
        repo_dir = str(Path(repo or os.getcwd()).expanduser().absolute())
        if not (Path(repo_dir) / "pyproject.toml").is_file():
            raise UsageError(f"{repo_dir} is not the sync-ci repository; pass --repo DIR")
    job_cwd = Path(repo_dir or account.home)
    secrets = secrets_file or (env.get("SYNC_CI_SECRETS_FILE", "") if own else "")
    secrets = str(Path(secrets).expanduser().absolute()) if secrets else ""
    config_file = config or (env.get("SYNC_CI_CONFIG", "") if own else "")
    if not config_file:
        candidates = (job_cwd / "sync-ci.toml", _user_config_dir(env) / "sync-ci.toml")
        config_file = next((str(c) for c in candidates if c.is_file()), "")
    config_file = str(Path(config_file).expanduser().absolute()) if config_file else ""
    if state_dir is None:
        if config_file:
            settings_env = {**env, "SYNC_CI_CONFIG": config_file}
            if secrets:
                settings_env["SYNC_CI_SECRETS_FILE"] = secrets
            state_dir = load_settings(env=settings_env, check_remote=False).state_dir
        elif env.get("SYNC_CI_STATE_DIR"):
            state_dir = Path(env["SYNC_CI_STATE_DIR"])
        else:
            state_dir = _user_state_dir(env)
    state = state_dir.expanduser()
    paths = CronPaths(
        exe=str(chosen),
        state_dir=str(state if state.is_absolute() else job_cwd / state),
        repo=repo_dir,
        secrets_file=secrets,
        config=config_file,
    )
    refuse_unusable(paths, account)
    return paths


def refuse_unusable(paths: CronPaths, account: Account) -> None:
    """Raise UsageError naming the first path `account` could not use when cron runs the line."""
    checks = [
        ("sync-ci executable", paths.exe, "x"),
        ("repository directory", paths.repo, "x"),
        ("config file", paths.config, "r"),
        ("secrets file", paths.secrets_file, "r"),
        ("state directory", paths.state_dir, "create"),
    ]
    for label, path, want in checks:
        why = access_problem(account, path, want) if path else ""
        if why:
            raise UsageError(
                f"the cron job would run as {account.name}, who cannot use the {label}: {why}; "
                f"give {account.name} access (chown/chmod) or pass a path they can use"
            )


def prepare_state_dir(path: Path, account: Account) -> None:
    """Create the state directory (owner-only) and hand what was created to `account`."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
        if account.uid != os.geteuid():
            os.chown(directory, account.uid, account.gid)


def cron_environment(text: str, account: Account) -> dict[str, str]:
    """Return the environment Debian cron gives `account`'s jobs from crontab `text`."""
    env = {
        "HOME": account.home,
        "LOGNAME": account.name,
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
    }
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or SCHEDULE_START.match(stripped):
            continue
        name, sep, value = stripped.partition("=")
        name, value = name.strip(), value.strip()
        if sep and name.isidentifier() and name != "LOGNAME":
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[name] = value
    return env


def run_job(
    job: Job, text: str, account: Account, *, timeout_s: float = JOB_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a job's command as cron does: as `account`, in its home, `sh -c` in cron's environment.

    The whole process group is killed on timeout, so no child outlives the call.
    """
    as_other = account.uid != os.geteuid()
    process = subprocess.Popen(
        ["/bin/sh", "-c", job.command],
        env=cron_environment(text, account),
        cwd=account.home if Path(account.home).is_dir() else "/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        user=account.uid if as_other else None,
        group=account.gid if as_other else None,
        extra_groups=sorted(account.groups) if as_other else None,
    )
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise SyncCIError(
            f"the installed {job.role} line did not finish in {timeout_s:g} s; it was stopped"
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a child it left behind goes too
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


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
        chosen: Role = "maintainer" if role == "maintainer" else "tenant"
        paths = resolve_paths(
            chosen,
            user=user,
            exe=exe,
            venv=venv,
            repo=repo,
            secrets_file=secrets_file,
            config=config or "",
        )
        diff = install(chosen, paths, user=user, dry_run=dry_run)
        print(diff or f"sync-ci {role} cron entry already up to date", end="" if diff else "\n")
        if not dry_run:
            prepare_state_dir(Path(paths.state_dir), account_for(user))
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
        result = evaluate_entry(text, account=account_for(user))
        if not shown:
            print("no sync-ci cron entry installed")
        print(f"{result.status}: {result.detail}", file=sys.stderr)
        return int(ExitCode.OK if result.status == "pass" else ExitCode.FAILED)
    raise UsageError(f"unknown cron action {action!r}")


def add_parser(sub: Any) -> None:
    """Register `cron install|uninstall|show`."""
    parser = sub.add_parser(
        "cron",
        help="install, remove or show the sync-ci cron entry",
        description="Manage the sync-ci block of a crontab (between its marker lines); every "
        "other line is kept byte for byte.",
    )
    inner = parser.add_subparsers(dest="cron_action", metavar="ACTION", required=True)
    for action, text, role_help in (
        ("install", "add or update the entry for a role (idempotent)", "whose entry to install"),
        ("uninstall", "remove our entries only; every other line is kept", "default: both"),
        ("show", "print our entries and check they are sane", "default: both"),
    ):
        each = inner.add_parser(action, help=text, description=f"{text[0].upper()}{text[1:]}.")
        each.add_argument(
            "--role",
            choices=ROLES,
            required=action == "install",
            default="",
            help=f"maintainer (ci-loop) or tenant (doctor); {role_help}",
        )
        each.add_argument(
            "--cron-user",
            default="",
            dest="user",
            metavar="NAME",
            help="whose crontab (needs root; default: yours)",
        )
        # The earlier spelling, kept working for bootstrap scripts written against it.
        each.add_argument("--user", dest="user", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        each.add_argument(
            "--config", metavar="PATH", help="settings file the installed line will export"
        )
        each.add_argument("--debug", action="store_true", help="show tracebacks for errors")
        if action != "show":
            each.add_argument(
                "--dry-run", action="store_true", help="print the diff, change nothing"
            )
        if action == "install":
            each.add_argument(
                "--exe", default="", metavar="PATH", help="absolute path of the sync-ci executable"
            )
            each.add_argument(
                "--venv",
                default="",
                metavar="DIR",
                help="virtualenv holding bin/sync-ci (maintainer)",
            )
            each.add_argument(
                "--repo",
                default="",
                metavar="DIR",
                help="repository directory (maintainer; default: cwd)",
            )
            each.add_argument(
                "--secrets-file",
                default="",
                metavar="PATH",
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
