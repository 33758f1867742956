"""Doctor checks of this machine's files: settings, tenant and secrets file, state directory,
the last pull, free space.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from sync_ci.field.doctor_context import Context, new_row
from sync_ci.report import Result, Status

MAX_PULL_AGE_S = 24 * 3600.0

MIN_FREE_BYTES = 100 * 1024 * 1024

LAST_PULL_STAMP = "last-pull"


def evaluate_pull_age(
    stamp_mtime: float | None, now: float, max_age_s: float = MAX_PULL_AGE_S
) -> Result:
    """Judge the age of the last successful pull from its stamp file's mtime (None = no stamp)."""
    title = f"last successful pull within {max_age_s / 3600:g} h"
    if stamp_mtime is None:
        return Result(
            id="last-pull",
            title=title,
            status="skip",
            detail=f"no {LAST_PULL_STAMP} stamp in the state directory yet (no pull recorded)",
        )
    age = now - stamp_mtime
    status: Status = "fail" if age > max_age_s else "pass"
    return Result(
        id="last-pull",
        title=title,
        status=status,
        detail=f"last pull {age / 3600:.1f} h ago" + ("; run a pull" if status == "fail" else ""),
        observed={"age_s": round(age)},
        threshold={"max_age_s": max_age_s},
    )


def evaluate_free_space(free_bytes: int, path: Path, min_free: int = MIN_FREE_BYTES) -> Result:
    """Require some free space where the state directory lives."""
    status: Status = "fail" if free_bytes < min_free else "pass"
    return Result(
        id="free-space",
        title="free space for the state directory",
        status=status,
        detail=f"{free_bytes / 2**20:.0f} MiB free at {path}",
        observed={"free_bytes": free_bytes},
        threshold={"min_free_bytes": min_free},
    )


def evaluate_secrets_file(path: Path | None, mode: int, owner: int, uid: int) -> Result:
    """A secrets file, when used, must belong to this user and be unreadable by anyone else."""
    title = "secrets file owner-only"
    if path is None:
        return new_row(
            "secrets-file", title, "skip", "no SYNC_CI_SECRETS_FILE (secrets from the environment)"
        )
    if owner != uid:
        return new_row("secrets-file", title, "fail", f"{path} belongs to uid {owner}, not {uid}")
    if mode & 0o077:
        return new_row(
            "secrets-file", title, "fail", f"{path} has mode {mode:o}; run: chmod 600 {path}"
        )
    return new_row("secrets-file", title, "pass", f"{path} mode {mode:o}")


def evaluate_state_dir(path: Path, problem: str) -> Result:
    """Judge the writability probe of the state directory ('' = a temp file came and went)."""
    title = "state directory writable"
    if not problem:
        return new_row("state-dir", title, "pass", f"{path} (created and removed a file)")
    return new_row(
        "state-dir",
        title,
        "fail",
        f"cannot write in {path}: {problem}; make it a directory this user owns "
        "(mkdir -p, chown) or point [tenant] state_dir / SYNC_CI_STATE_DIR elsewhere",
    )


def check_settings(ctx: Context) -> list[Result]:
    """Settings load and name a Worker."""
    title = "settings valid"
    if ctx.settings is None:
        return [new_row("settings", title, "fail", ctx.settings_error)]
    settings = ctx.settings
    if not settings.worker_url:
        return [
            new_row(
                "settings",
                title,
                "fail",
                "no Worker URL: set [worker] url in sync-ci.toml or SYNC_CI_WORKER_URL",
            )
        ]
    return [
        new_row(
            "settings",
            title,
            "pass",
            f"target {settings.target}, config {settings.config_path or '(none)'}",
        )
    ]


def check_tenant(ctx: Context) -> list[Result]:
    """Tenant id valid, token present, secrets file owner-only."""
    from sync_ci.contract import validate_tenant_id
    from sync_ci.errors import ContractError

    settings = ctx.need_settings()
    title = "tenant id and token present"
    rows: list[Result] = []
    problems = []
    try:
        validate_tenant_id(settings.tenant_id)
    except ContractError as exc:
        problems.append(f"{exc} (set [tenant] id or SYNC_CI_TENANT_ID)")
    if not (settings.secrets.tenant_token or settings.secrets.tenant_secret):
        problems.append(
            "no tenant token (set SYNC_CI_TENANT_TOKEN in the env or SYNC_CI_SECRETS_FILE)"
        )
    rows.append(
        new_row(
            "tenant",
            title,
            "fail" if problems else "pass",
            "; ".join(problems) or f"tenant {settings.tenant_id}",
        )
    )
    path = settings.secrets_file
    if path is not None:
        try:
            info = path.stat()
        except OSError as exc:
            rows.append(
                new_row(
                    "secrets-file", "secrets file owner-only", "fail", f"{path}: {exc.strerror}"
                )
            )
        else:
            rows.append(
                evaluate_secrets_file(path, stat.S_IMODE(info.st_mode), info.st_uid, os.getuid())
            )
    else:
        rows.append(evaluate_secrets_file(None, 0, 0, 0))
    return rows


def check_state_dir(ctx: Context) -> list[Result]:
    """The state directory exists (or can be made) and a file can be created in it."""
    settings = ctx.need_settings()
    return [evaluate_state_dir(settings.state_dir, ctx.state_problem())]


def check_last_pull(ctx: Context) -> list[Result]:
    """Age of the last successful pull."""
    state_dir = ctx.need_state_dir()
    try:
        mtime: float | None = (state_dir / LAST_PULL_STAMP).stat().st_mtime
    except FileNotFoundError:
        mtime = None
    return [evaluate_pull_age(mtime, ctx.now().timestamp())]


def check_free_space(ctx: Context) -> list[Result]:
    """Free space where the state directory lives."""
    settings = ctx.need_settings()
    path = settings.state_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    return [evaluate_free_space(shutil.disk_usage(path).free, path)]


def record_pull(state_dir: Path) -> None:
    """Touch the last-pull stamp (called by whatever performs a successful pull)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (state_dir / LAST_PULL_STAMP).touch()
