"""Who may do what: a crontab's user from the password database, and whether they can read,
run or create a path, with permission bits as the kernel applies them (ACLs aside).
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from sync_ci.errors import UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """The user a crontab belongs to, from the password database (cron runs jobs as them)."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]
    home: str


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
