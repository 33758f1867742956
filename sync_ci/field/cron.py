"""`sync-ci cron install|uninstall|show`: work out the line's paths for the crontab's user,
refuse what they cannot use, and install, remove or show our block (`cron_lines` renders it,
`cron_table` edits the real crontab, `cron_access` says who may use what).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from sync_ci.errors import ExitCode, UsageError
from sync_ci.field.cron_access import Account, access_problem, account_for
from sync_ci.field.cron_lines import ROLES, CronPaths, Role, evaluate_entry, find_block
from sync_ci.field.cron_table import install, read_crontab, uninstall


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
    from sync_ci.config import load_settings
    from sync_ci.config_file import user_config_dir, user_state_dir

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
    # No Settings here: these paths are what the job's own settings load will be given.
    secrets = secrets_file or (env.get("SYNC_CI_SECRETS_FILE", "") if own else "")
    secrets = str(Path(secrets).expanduser().absolute()) if secrets else ""
    config_file = config or (env.get("SYNC_CI_CONFIG", "") if own else "")
    if not config_file:
        candidates = (job_cwd / "sync-ci.toml", user_config_dir(env) / "sync-ci.toml")
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
            state_dir = user_state_dir(env)
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
