"""Find the rules under `checks.rules`, run them over a subject, and turn findings into results.

A rule module (`checks/rules/saNNN_<slug>.py`) defines `ID`, `TITLE`, `SCOPE`, a docstring with
**Why:** and **Fix:** paragraphs, a pure `check(subject) -> Iterator[Finding]`, and `GOOD`/`BAD`
example subjects. Adding a rule touches that one file.

Two scopes share this runner:

* ``repo`` (PR time, `sync-ci lint`, `nox -s lint_sync`): the subject is the repository tree as
  text, built by :func:`load_tree`.
* ``field`` (doctor, on a tenant machine): the subject is built by :func:`field_subject` from the
  installed user crontab and the settings/secrets files. Doctor calls::

      from checks.catalogue import field_subject, read_user_crontab, run_rules
      subject = field_subject(crontab=read_user_crontab(), files=[settings_path],
                              secret_files=[secrets_path])
      outcome = run_rules(scope="field", subject=subject)   # list of RuleOutcome
      rows = to_results(outcome)                             # sync_ci.report.Result rows

A finding on a line carrying ``# sync-ci: allow SA0NN`` (or on the line right after such a
comment) is suppressed; use it only where a violation is deliberate and say why next to it.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import re
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType
from typing import Literal, cast

from sync_ci.report import Result

Scope = Literal["repo", "field"]
SCOPES: tuple[Scope, ...] = ("repo", "field")
CRONTAB = "<crontab>"
RULE_MODULE = re.compile(r"^sa(\d{3})_[a-z0-9_]+$")
PRAGMA = re.compile(r"sync-ci:\s*allow\s+([A-Z]{2}\d{3}(?:\s*,\s*[A-Z]{2}\d{3})*)")
MAX_FILE_BYTES = 1_000_000
# Directories that hold caches, virtualenvs or build output, never project source.
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".nox",
        ".tox",
        ".venv",
        "venv",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "node_modules",
        "build",
        "dist",
        ".eggs",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One violation: what is wrong, and where (path relative to the root, 1-based line)."""

    message: str
    path: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """What rules look at: text files by relative path, plus field facts (file modes, crontab)."""

    scope: Scope = "repo"
    files: Mapping[str, str] = field(default_factory=dict)
    secret_files: Mapping[str, int] = field(default_factory=dict)
    root: str = ""
    # BAD examples only: the (path, line) of every finding the rule must report, when pinned.
    expected_at: tuple[tuple[str, int], ...] = ()

    def matching(self, *patterns: str) -> Iterator[tuple[str, str]]:
        """Yield (path, text) for files whose path matches any glob (`*` also crosses `/`)."""
        for path in sorted(self.files):
            if any(fnmatchcase(path, pattern) for pattern in patterns):
                yield path, self.files[path]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """A rule module, loaded."""

    id: str
    title: str
    scopes: frozenset[Scope]
    doc: str
    check: Callable[[Subject], Iterable[Finding]]
    good: tuple[Subject, ...]
    bad: tuple[Subject, ...]
    module: str

    @property
    def scope_label(self) -> str:
        """Return the scopes as 'repo', 'field' or 'repo+field'."""
        return "+".join(s for s in SCOPES if s in self.scopes)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleOutcome:
    """One rule's findings over one subject."""

    rule: Rule
    findings: tuple[Finding, ...]
    duration_s: float = 0.0
    error: str = ""


def example(
    files: Mapping[str, str] | None = None,
    *,
    scope: Scope = "repo",
    secret_files: Mapping[str, int] | None = None,
    at: Iterable[tuple[str, int]] = (),
) -> Subject:
    """Build a GOOD/BAD example subject from literal files; `at` pins a BAD one's findings."""
    return Subject(
        scope=scope,
        files=dict(files or {}),
        secret_files=dict(secret_files or {}),
        expected_at=tuple(sorted(at)),
    )


def _load_rule(module: ModuleType) -> Rule:
    name = module.__name__.rsplit(".", 1)[-1]
    missing = [
        a for a in ("ID", "TITLE", "SCOPE", "check", "GOOD", "BAD") if not hasattr(module, a)
    ]
    doc = (module.__doc__ or "").strip()
    if missing or "**Why:**" not in doc or "**Fix:**" not in doc:
        what = ", ".join(missing) or "a docstring with **Why:** and **Fix:**"
        raise TypeError(f"rule module {module.__name__} lacks {what}")
    rule_id = str(module.ID)
    match = RULE_MODULE.fullmatch(name)
    if match is None or rule_id != f"SA{match.group(1)}":
        raise TypeError(
            f"rule module {name} must be named sa<NNN>_<slug> and define ID = 'SA<NNN>'"
        )
    scopes = frozenset(cast(Iterable[Scope], module.SCOPE))
    if not scopes or not scopes <= set(SCOPES):
        raise TypeError(f"rule {rule_id}: SCOPE must be a non-empty subset of {SCOPES}")
    return Rule(
        id=rule_id,
        title=str(module.TITLE),
        scopes=scopes,
        doc=doc,
        check=module.check,
        good=tuple(module.GOOD),
        bad=tuple(module.BAD),
        module=module.__name__,
    )


@functools.cache
def discover() -> tuple[Rule, ...]:
    """Import every module in `checks.rules` and return its rules sorted by ID."""
    package = importlib.import_module("checks.rules")
    rules = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        rules.append(_load_rule(importlib.import_module(f"checks.rules.{info.name}")))
    ids = [r.id for r in rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise TypeError(f"rule IDs used twice: {', '.join(duplicates)}")
    return tuple(sorted(rules, key=lambda r: r.id))


def select_rules(
    rules: Sequence[Rule], *, scope: Scope | None = None, select: Iterable[str] | None = None
) -> list[Rule]:
    """Return the rules in `scope` whose ID is in `select` (prefixes like 'SA00' allowed)."""
    wanted = [s.strip().upper() for s in (select or ()) if s.strip()]
    chosen = []
    for rule in rules:
        if scope is not None and scope not in rule.scopes:
            continue
        if wanted and not any(rule.id.startswith(w) for w in wanted):
            continue
        chosen.append(rule)
    return chosen


def explain(rule: Rule) -> str:
    """Return the text `--explain ID` prints: ID, title, scope, then the Why/Fix docstring."""
    return f"{rule.id}  {rule.title}\nscope: {rule.scope_label}\n\n{rule.doc}\n"


def allowed_by_pragma(subject: Subject, finding: Finding, rule_id: str) -> bool:
    """True when the finding's line, or the line above it, carries `sync-ci: allow <rule_id>`."""
    text = subject.files.get(finding.path)
    if text is None or finding.line <= 0:
        return False
    lines = text.splitlines()
    for number in (finding.line, finding.line - 1):
        if 1 <= number <= len(lines):
            match = PRAGMA.search(lines[number - 1])
            if match and rule_id in {p.strip() for p in match.group(1).split(",")}:
                return True
    return False


def run_rules(
    *,
    scope: Scope,
    subject: Subject,
    select: Iterable[str] | None = None,
    rules: Sequence[Rule] | None = None,
    clock: Callable[[], float] | None = None,
) -> list[RuleOutcome]:
    """Run every rule of `scope` (optionally only `select`ed IDs) over `subject`."""
    import time

    tick = clock or time.perf_counter
    outcomes = []
    for rule in select_rules(
        rules if rules is not None else discover(), scope=scope, select=select
    ):
        started = tick()
        scoped = subject if subject.scope == scope else _rescope(subject, scope)
        try:
            found = [f for f in rule.check(scoped) if not allowed_by_pragma(scoped, f, rule.id)]
        except Exception as exc:  # a broken rule is reported, never a traceback for the user
            outcomes.append(
                RuleOutcome(rule=rule, findings=(), duration_s=tick() - started, error=repr(exc))
            )
            continue
        outcomes.append(RuleOutcome(rule=rule, findings=tuple(found), duration_s=tick() - started))
    return outcomes


def _rescope(subject: Subject, scope: Scope) -> Subject:
    return Subject(
        scope=scope, files=subject.files, secret_files=subject.secret_files, root=subject.root
    )


def to_results(outcomes: Iterable[RuleOutcome]) -> list[Result]:
    """Turn outcomes into result rows: one per finding, one `pass` row per clean rule."""
    rows: list[Result] = []
    for outcome in outcomes:
        rule = outcome.rule
        if outcome.error:
            rows.append(
                Result(
                    id=rule.id,
                    title=rule.title,
                    status="error",
                    duration_s=outcome.duration_s,
                    detail=f"the rule itself failed: {outcome.error}",
                )
            )
            continue
        if not outcome.findings:
            rows.append(
                Result(id=rule.id, title=rule.title, status="pass", duration_s=outcome.duration_s)
            )
            continue
        for finding in outcome.findings:
            where = finding.path + (f":{finding.line}" if finding.line else "")
            rows.append(
                Result(
                    id=rule.id,
                    title=rule.title,
                    status="fail",
                    duration_s=outcome.duration_s / len(outcome.findings),
                    detail=f"{where}: {finding.message}" if where else finding.message,
                    observed={
                        "file": finding.path,
                        "line": finding.line,
                        "scope": rule.scope_label,
                    },
                )
            )
    return rows


def _read_text(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def load_tree(root: Path) -> Subject:
    """Read every text file under `root` (skipping caches, venvs and binaries) as a repo subject."""
    files: dict[str, str] = {}
    root = root.resolve()
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")
        )
        for name in filenames:
            path = Path(directory, name)
            if path.is_symlink():
                continue
            text = _read_text(path)
            if text is not None:
                files[path.relative_to(root).as_posix()] = text
    return Subject(scope="repo", files=files, root=str(root))


def load_paths(paths: Sequence[Path]) -> list[Subject]:
    """Build one repo subject per directory given, and one for all single files together."""
    subjects = []
    single: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            subjects.append(load_tree(path))
        else:
            text = _read_text(path)
            if text is None:
                raise FileNotFoundError(f"{path} is not a readable text file")
            single[path.as_posix()] = text
    if single:
        subjects.append(Subject(scope="repo", files=single, root="."))
    return subjects


def field_subject(
    *,
    crontab: str = "",
    files: Iterable[Path] = (),
    secret_files: Iterable[Path] = (),
) -> Subject:
    """Build the field subject: user crontab text, settings files, owner-only secret files."""
    texts: dict[str, str] = {CRONTAB: crontab}
    for path in files:
        text = _read_text(path)
        if text is not None:
            texts[str(path)] = text
    modes: dict[str, int] = {}
    for path in secret_files:
        try:
            modes[str(path)] = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
    return Subject(scope="field", files=texts, secret_files=modes, root="field")


def read_user_crontab(timeout_s: float = 5.0) -> str:
    """Return the current user's crontab (`crontab -l`), or '' when there is none or no cron."""
    try:
        done = subprocess.run(
            ["crontab", "-l"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""
