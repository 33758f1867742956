"""Settings and targets: the `Settings` model and `load_settings`, where every check is made.

Every invariant on settings is checked here, once, when they load: every command and target
passes through `load_settings`, so no caller has to remember a check. What the settings file may
hold is `config_file`'s, what the environment supplies (overrides, secrets) `config_env`'s; both
only report problems, which `resolve_settings` gathers. The rows `config show` prints are
`config_cli`'s.
"""

from __future__ import annotations

import os
import re
import secrets as _secrets
import subprocess
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sync_ci.config_env import (
    Secrets,
    plain_values,
    read_secrets,
    register_settings_secrets,
)
from sync_ci.config_file import (
    PLAIN_KEYS,
    REGION_REQUIRED,
    check_config_file,
    find_config_file,
    user_state_dir,
)
from sync_ci.errors import SettingsError
from sync_ci.guards import display_url, url_problem
from sync_ci.sandbox.workerd import RUNTIMES, Runtime

Target = Literal["sandbox", "ci", "live"]
TARGETS: tuple[Target, ...] = ("sandbox", "ci", "live")
SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
# URL settings, and whether each may carry a base path: the contract lets a Worker live under a
# path of its host; an S3 endpoint never (the client puts the bucket and key in the path).
URL_KEYS: dict[str, bool] = {"endpoint_url": False, "worker_url": True, "preview_url": True}


@dataclass(frozen=True, slots=True, kw_only=True)
class Region:
    """One probe region: where to send samples and which colo must answer."""

    name: str
    url: str
    colo: str
    proxy: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Resolved settings for one command; `sources` says where each value came from."""

    target: Target
    bucket: str
    endpoint_url: str
    region_name: str
    live_root: str
    ci_root: str
    worker_url: str
    preview_url: str
    worker_timeout_s: float
    tenant_id: str
    state_dir: Path
    mirror_dir: Path
    sha: str
    regions: tuple[Region, ...] = ()
    secrets: Secrets = field(default_factory=Secrets)
    sandbox_file: str = ""
    # SYNC_CI_SECRETS_FILE as loaded (the file the secrets above were read from), or None.
    secrets_file: Path | None = None
    config_path: str = ""
    # The Worker a sandbox or a ci run without preview URL starts locally, and a user's project.
    worker_runtime: Runtime = "python"
    worker_project: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Also for settings built or changed after loading (`with_values`, a sandbox attach).
        problems = root_problems(self.ci_root, self.live_root)
        if problems:
            raise SettingsError(problems[0])

    @property
    def ci_prefix(self) -> str:
        """The only prefix a `ci` or `sandbox` run may write under."""
        return f"{self.ci_root}{self.sha}/"

    @property
    def read_only(self) -> bool:
        """A `live` target never writes."""
        return self.target == "live"

    @property
    def suite_root(self) -> str:
        """The root a smoke runs against: the CI prefix, or the production root when live."""
        return self.live_root if self.target == "live" else self.ci_prefix

    def with_values(self, **values: Any) -> Settings:
        """Return a copy with some fields replaced."""
        return replace(self, **values)


def validate_sha(value: str) -> str:
    """Return `value` if it is 7-40 lowercase hex, else raise SettingsError."""
    if not SHA_RE.fullmatch(value):
        raise SettingsError(
            f"sha {value!r} is not 7-40 lowercase hex digits; set SYNC_CI_SHA or GITHUB_SHA "
            "to the commit being tested"
        )
    return value


def validate_root(name: str, value: str) -> str:
    """Check a root prefix: relative, ends in '/', no empty or '..' segments."""
    parts = value[:-1].split("/") if value.endswith("/") else None
    if (
        not value
        or parts is None
        or value.startswith("/")
        or "\\" in value
        or any(unicodedata.category(ch)[0] == "C" for ch in value)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise SettingsError(
            f"setting {name} = {value!r} is not a prefix like 'snappy-os/': it must be relative, "
            "end with '/', and have no empty, '.' or '..' segments"
        )
    return value


def root_problems(ci_root: str, live_root: str) -> list[str]:
    """Say what is wrong with the two roots: each must be valid, and neither may hold the other."""
    problems = []
    for name, value in (("live_root", live_root), ("ci_root", ci_root)):
        try:
            validate_root(name, value)
        except SettingsError as exc:
            problems.append(str(exc))
    if problems:
        return problems
    if ci_root == live_root:
        relation = "are the same prefix"
    elif ci_root.startswith(live_root):
        relation = "overlap: ci_root lies inside live_root"
    elif live_root.startswith(ci_root):
        relation = "overlap: ci_root contains live_root"
    else:
        return []
    return [
        f"ci_root = {ci_root!r} and live_root = {live_root!r} {relation}, so CI writes would "
        "land in production; give CI a root of its own (e.g. ci_root = 'snappy-os-ci/', "
        "live_root = 'snappy-os/')"
    ]


def _git_sha(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def resolve_settings(
    *,
    config: str | None = None,
    target: str | None = None,
    env: Mapping[str, str] | None = None,
    check_remote: bool = True,
) -> tuple[Settings, list[str]]:
    """Resolve settings and list every problem at once; a setting with a problem keeps its default.

    `load_settings` raises on the first problem; `config show` prints the table and all of them.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    path: Path | None = None
    data: dict[str, Any] = {}
    try:
        path = find_config_file(config, env)
    except SettingsError as exc:
        problems.append(str(exc))
    if path:
        data, file_problems = check_config_file(path)
        problems += file_problems
    values, sources = plain_values(data, path, env)
    if target:
        values["target"], sources["target"] = target, "flag --target"
    chosen: Target = "sandbox"
    if values["target"] in TARGETS:
        chosen = values["target"]
    else:
        problems.append(
            f"target {values['target']!r} is unknown ({sources['target']}); "
            f"use one of: {', '.join(TARGETS)}"
        )

    secrets = read_secrets(env, problems)
    register_settings_secrets(secrets, values["tenant_id"])

    roots = root_problems(values["ci_root"], values["live_root"])
    if roots:
        described = f" (ci_root from {sources['ci_root']}, live_root from {sources['live_root']})"
        problems += [f"{problem}{described}" for problem in roots]
        for name in ("ci_root", "live_root"):
            if sources[name] != "default":
                sources[name] = f"default ({sources[name]} refused)"
            values[name] = PLAIN_KEYS[name][3]
    for name, allow_path in URL_KEYS.items():
        problem = url_problem(values[name], allow_path=allow_path) if values[name] else ""
        if problem:
            problems.append(
                f"setting {name} = {display_url(values[name])!r} ({sources[name]}) {problem}"
            )
            values[name] = ""
    timeout = 10.0
    try:
        timeout = float(values["worker_timeout_s"])
    except ValueError:
        problems.append(
            f"worker timeout_s = {values['worker_timeout_s']!r} is not a number of seconds"
        )
    else:
        if not 0 < timeout <= 120:
            problems.append(f"worker timeout_s = {timeout} must be between 0 and 120 seconds")
            timeout = 10.0

    sha = values["sha"] or env.get("GITHUB_SHA", "").strip()
    if sha:
        sources["sha"] = sources["sha"] if values["sha"] else "env GITHUB_SHA"
    elif chosen != "live":
        sha, sources["sha"] = _git_sha(), "git rev-parse HEAD"
        if not sha and chosen == "sandbox":
            sha, sources["sha"] = _secrets.token_hex(6), "random (no git checkout)"
    if chosen != "live":
        try:
            if not sha:
                raise SettingsError(
                    "target ci needs the commit sha: set GITHUB_SHA or SYNC_CI_SHA "
                    "(7-40 lowercase hex)"
                )
            validate_sha(sha)
        except SettingsError as exc:
            problems.append(str(exc))

    runtime, project = _worker_runtime(values, sources, path, problems)
    regions = tuple(_parse_regions(data.get("regions", []), problems))
    state_dir = (
        Path(values["state_dir"]).expanduser() if values["state_dir"] else user_state_dir(env)
    )
    mirror_dir = (
        Path(values["mirror_dir"]).expanduser() if values["mirror_dir"] else state_dir / "mirror"
    )
    settings = Settings(
        target=chosen,
        bucket=values["bucket"],
        endpoint_url=values["endpoint_url"],
        region_name=values["region_name"],
        live_root=values["live_root"],
        ci_root=values["ci_root"],
        worker_url=values["worker_url"].rstrip("/"),
        preview_url=values["preview_url"].rstrip("/"),
        worker_timeout_s=timeout,
        tenant_id=values["tenant_id"],
        state_dir=state_dir,
        mirror_dir=mirror_dir,
        sha=sha,
        regions=regions,
        secrets=secrets,
        sandbox_file=env.get("SYNC_CI_SANDBOX", ""),
        secrets_file=Path(env["SYNC_CI_SECRETS_FILE"]) if env.get("SYNC_CI_SECRETS_FILE") else None,
        config_path=str(path) if path else "",
        sources=sources,
        worker_runtime=runtime,
        worker_project=project,
    )
    if chosen in ("ci", "live") and check_remote:
        problems += remote_problems(settings)
    return settings, problems


def _worker_runtime(
    values: Mapping[str, str], sources: Mapping[str, str], path: Path | None, problems: list[str]
) -> tuple[Runtime, str]:
    """Check [worker] runtime and project; a project is a wrangler.toml and implies workerd."""
    runtime: Runtime = "python"
    if values["worker_runtime"] in RUNTIMES:
        runtime = "workerd" if values["worker_runtime"] == "workerd" else "python"
    else:
        problems.append(
            f"worker runtime = {values['worker_runtime']!r} ({sources['worker_runtime']}) is "
            f"unknown; use one of: {', '.join(RUNTIMES)}"
        )
    project = values["worker_project"]
    if not project:
        return runtime, ""
    where = Path(project).expanduser()
    if not where.is_absolute() and path and sources["worker_project"].startswith("file "):
        where = path.parent / where
    if where.name != "wrangler.toml" or not where.is_file():
        problems.append(
            f"worker project = {project!r} ({sources['worker_project']}) must name an existing "
            "wrangler.toml (the Worker project to run under workerd)"
        )
        return runtime, ""
    return "workerd", str(where.resolve())


def load_settings(
    *,
    config: str | None = None,
    target: str | None = None,
    env: Mapping[str, str] | None = None,
    check_remote: bool = True,
) -> Settings:
    """Resolve settings: defaults < settings file < SYNC_CI_* env < explicit flags.

    `check_remote=False` is for field commands (doctor, alert, cron, status) on machines that
    talk to the Worker only and hold no bucket credentials. The first problem raises
    SettingsError (saying how many more there are).
    """
    settings, problems = resolve_settings(
        config=config, target=target, env=env, check_remote=check_remote
    )
    if problems:
        more = len(problems) - 1
        suffix = f" (and {more} more: `sync-ci config show` lists them all)" if more else ""
        raise SettingsError(problems[0] + suffix)
    return settings


def _parse_regions(raw: Any, problems: list[str]) -> Iterator[Region]:
    # Shapes and types were checked with the file; here only the URLs.
    if not isinstance(raw, list):
        return
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not all(
            isinstance(item.get(key), str) for key in REGION_REQUIRED
        ):
            continue
        url, proxy = item["url"], str(item.get("proxy", ""))
        bad = [
            f"[[regions]] entry {index + 1} ({item['name']}) {what} {display_url(value)!r} "
            f"{problem}"
            for what, value, problem in (
                ("url", url, url_problem(url, allow_path=True)),
                ("proxy", proxy, url_problem(proxy, allow_path=False) if proxy else ""),
            )
            if problem
        ]
        problems += bad
        if not bad:
            yield Region(
                name=item["name"], url=url.rstrip("/"), colo=item["colo"].upper(), proxy=proxy
            )


def remote_problems(settings: Settings) -> list[str]:
    """List what a `ci` or `live` target lacks: a bucket, credentials, a Worker for live."""
    target = settings.target
    problems = []
    if not settings.bucket:
        problems.append(
            f"target {target} needs a bucket: set [store] bucket in sync-ci.toml or SYNC_CI_BUCKET"
        )
    if not (settings.secrets.access_key_id and settings.secrets.secret_access_key):
        problems.append(
            f"target {target} needs S3 credentials: set SYNC_CI_ACCESS_KEY_ID and "
            "SYNC_CI_SECRET_ACCESS_KEY (or AWS_*) in the environment or SYNC_CI_SECRETS_FILE"
        )
    if target == "live" and not settings.worker_url:
        problems.append(
            "target live needs the production Worker: set [worker] url or SYNC_CI_WORKER_URL"
        )
    return problems


def require_remote(settings: Settings) -> None:
    """Check that a `ci` or `live` target names a bucket, credentials and a Worker."""
    problems = remote_problems(settings)
    if problems:
        raise SettingsError(problems[0])
