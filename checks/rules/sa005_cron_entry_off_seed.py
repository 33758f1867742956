"""A sync-ci cron entry drifts from the seed: schedule, read-only target, the lock, or quiet doctor.

**Why:** the seed fixes two cron entries. The maintainer's `0 */6 * * *` runs `ci-loop` against
the live target, which is read-only (a writing cron risks CI write, catalog rebuild, CI again),
and a slow pass must never overlap the next. Every tenant's `30 */6 * * *` runs
`doctor --silent || sync-ci alert doctor-failed`: quiet on success, an explicit alert on failure.
Exclusivity has one owner: `ci-loop` and `doctor` take the lock themselves (`sync_ci/locks.py`,
which also creates its directory), and a busy lock exits 0 so it never fires the alert. A cron
line that wraps them in `flock` holds that very lock, so every pass finds it busy and never runs
(and on a fresh machine `flock` exits 66 because the lock's directory does not exist yet).
Classic cron mistakes break this silently too: `* * * * *` (python-crontab's default when no
minute is set), `@hourly` rewrites, a doctor that mails its output every six hours, a `%` that cron
turns into a newline. In `repo` scope this reads `*.cron`/crontab files in the tree, the
templates in `sync_ci/field/cron_lines.py` (f-string placeholders are read as their expression text), and
checks that `sync_ci/ci_loop.py` and `sync_ci/field/doctor.py` still take the lock. In `field` scope
(doctor) it reads the installed user crontab's sync-ci lines.

**Fix:** reinstall the entries with `sync-ci cron install --role maintainer|tenant` (or restore the
template in `sync_ci/field/cron_lines.py`) so each line has the seed's schedule, no `flock`,
`ci-loop --target live`, and `doctor --silent || sync-ci alert doctor-failed`; keep the
`hold_lock(lock_path(..., "<job>"), "<job>")` call in the command that runs.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from checks.catalogue import CRONTAB, Finding, Subject, example
from checks.pysource import nodes, parse

ID = "SA005"
TITLE = "cron entry off the seed's schedule or target, without --silent, or double-locked"
SCOPE = ("repo", "field")

CRON_MODULE = "sync_ci/field/cron_lines.py"
LOCKING_MODULES = {"sync_ci/ci_loop.py": "ci-loop", "sync_ci/field/doctor.py": "doctor"}
# A file only sync-ci's own tree has: where it is, the modules above must be too.
PACKAGE_MARK = "sync_ci/cli.py"
CRON_FILES = ("*.cron", "*crontab", "*crontab.txt", "*.crontab")
MAINTAINER, TENANT = "0 */6 * * *", "30 */6 * * *"
FIELD = r"[\d*/,\-]+"
SCHEDULE = re.compile(rf"^\s*({FIELD}(?:\s+{FIELD}){{4}}|@\w+)\s+(.*)$")
SCHEDULE_ONLY = re.compile(rf"^{FIELD}(?:\s+{FIELD}){{4}}$|^@\w+$")
CI_LOOP = re.compile(r"(?:sync-ci|\})['\"]?\s+ci-loop\b")
DOCTOR = re.compile(r"(?:sync-ci|\})['\"]?\s+doctor\b")
TARGET = re.compile(r"--target[= ]+(\S+)")
ALERT = re.compile(r"\|\|.*\balert\s+doctor-failed\b")


def command_problems(command: str) -> list[str]:
    """Return what is wrong with one sync-ci command (cron line or template), schedule aside."""
    problems = []
    for job, pattern in (("ci-loop", CI_LOOP), ("doctor", DOCTOR)):
        if pattern.search(command) and "flock" in command:
            problems.append(
                f"{job} runs under flock, which holds the lock {job} takes itself: "
                "it never runs (drop the flock)"
            )
    if CI_LOOP.search(command):
        targets = TARGET.findall(command)
        if targets != ["live"]:
            problems.append(
                "ci-loop must run on the read-only target (--target live), "
                f"not {targets or 'the default'}"
            )
    if DOCTOR.search(command):
        if "--silent" not in command:
            problems.append("doctor runs without --silent (it must stay quiet on success)")
        if not ALERT.search(command):
            problems.append("doctor's failure is not followed by `|| sync-ci alert doctor-failed`")
    return problems


def line_problems(line: str) -> list[str]:
    """Return what is wrong with one installed crontab line that runs sync-ci."""
    match = SCHEDULE.match(line)
    if match is None:
        return []
    schedule, command = " ".join(match.group(1).split()), match.group(2)
    problems = command_problems(command)
    if re.search(r"(?<!\\)%", command):
        problems.append("unescaped '%' in the command: cron turns it into a newline")
    if CI_LOOP.search(command) and schedule != MAINTAINER:
        problems.append(f"ci-loop is scheduled {schedule!r}, the seed says {MAINTAINER!r}")
    elif DOCTOR.search(command) and schedule != TENANT:
        problems.append(f"doctor is scheduled {schedule!r}, the seed says {TENANT!r}")
    elif schedule in ("* * * * *", "@reboot", "@hourly", "@minutely"):
        problems.append(f"sync-ci entry scheduled {schedule!r}")
    return problems


def _crontab_lines(path: str, text: str) -> Iterator[Finding]:
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "sync-ci" not in stripped:
            continue
        for problem in line_problems(stripped):
            yield Finding(path=path, line=number, message=problem)


def _template_text(node: ast.JoinedStr) -> str:
    parts = []
    for value in node.values:
        if isinstance(value, ast.FormattedValue):
            parts.append("{" + ast.unparse(value.value) + "}")
        elif isinstance(value, ast.Constant):
            parts.append(str(value.value))
    return "".join(parts)


def _cron_module(path: str, tree: ast.Module) -> Iterator[Finding]:
    schedules: set[str] = set()
    for node in nodes(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SCHEDULE_ONLY.match(node.value)
        ):
            schedules.add(node.value)
            if node.value not in (MAINTAINER, TENANT):
                yield Finding(
                    path=path,
                    line=node.lineno,
                    message=f"schedule {node.value!r} is neither {MAINTAINER!r} nor {TENANT!r}",
                )
        elif isinstance(node, ast.Dict):
            pairs: dict[str, str] = {
                k.value: v.value
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant)
                and isinstance(k.value, str)
                and isinstance(v, ast.Constant)
                and isinstance(v.value, str)
            }
            for role, expected in (("maintainer", MAINTAINER), ("tenant", TENANT)):
                if role in pairs and SCHEDULE_ONLY.match(pairs[role]) and pairs[role] != expected:
                    yield Finding(
                        path=path,
                        line=node.lineno,
                        message=f"the {role} schedule is {pairs[role]!r}, "
                        f"the seed says {expected!r}",
                    )
        elif isinstance(node, ast.JoinedStr):
            for problem in command_problems(_template_text(node)):
                yield Finding(path=path, line=node.lineno, message=f"cron template: {problem}")
    missing = {MAINTAINER, TENANT} - schedules
    if missing:
        yield Finding(
            path=path,
            line=1,
            message=f"the seed's schedule(s) {sorted(missing)} are not in the cron module",
        )


def _takes_lock(path: str, tree: ast.Module, job: str) -> Iterator[Finding]:
    for node in nodes(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "hold_lock"
            and any(isinstance(a, ast.Constant) and a.value == job for a in node.args)
        ):
            return
    yield Finding(
        path=path,
        line=1,
        message=f"{job} does not take its lock (sync_ci.locks.hold_lock(..., {job!r})): "
        "two scheduled runs would overlap",
    )


def check(subject: Subject) -> Iterator[Finding]:
    """Check crontab lines (field: the user crontab; repo: crontab files and cron_lines.py templates)."""
    if subject.scope == "field":
        yield from _crontab_lines(CRONTAB, subject.files.get(CRONTAB, ""))
        return
    for path, text in subject.matching(*CRON_FILES):
        yield from _crontab_lines(path, text)
    if PACKAGE_MARK in subject.files:
        # In sync-ci's own tree a module this rule reads must be there: a rename would otherwise
        # switch the check off without a word.
        for path in (CRON_MODULE, *LOCKING_MODULES):
            if path not in subject.files:
                yield Finding(
                    path=path,
                    line=1,
                    message=f"{path} is missing, so SA005 cannot check it: if it moved, update "
                    "CRON_MODULE / LOCKING_MODULES in checks/rules/sa005_cron_entry_off_seed.py",
                )
    module = subject.files.get(CRON_MODULE)
    tree = parse(module) if module is not None else None
    if tree is not None:
        yield from _cron_module(CRON_MODULE, tree)
    for path, job in LOCKING_MODULES.items():
        source = subject.files.get(path)
        parsed = parse(source) if source is not None else None
        if parsed is not None:
            yield from _takes_lock(path, parsed, job)


_MAINT = "0 */6 * * * cd /srv/repo && /opt/bin/sync-ci ci-loop --target live"
_TENANT = "30 */6 * * * /opt/bin/sync-ci doctor --silent || /opt/bin/sync-ci alert doctor-failed"
_MODULE = (
    "SCHEDULES = {'maintainer': '0 */6 * * *', 'tenant': '30 */6 * * *'}\n"
    "def job(role, exe):\n"
    "    if role == 'maintainer':\n"
    "        return f'{exe} ci-loop --target live'\n"
    "    return f'{exe} doctor --silent || {exe} alert doctor-failed'\n"
)
_LOCKED = "with hold_lock(lock_path(settings.state_dir, '{job}'), '{job}'):\n    run()\n"
GOOD = (
    example(
        {
            "docs/example.cron": f"# sync-ci\n{_MAINT}\n{_TENANT}\n",
            CRON_MODULE: _MODULE,
            "sync_ci/ci_loop.py": _LOCKED.format(job="ci-loop"),
            "sync_ci/field/doctor.py": _LOCKED.format(job="doctor"),
        }
    ),
    example({CRONTAB: f"MAILTO=''\n{_TENANT}\n5 4 * * * /usr/bin/backup\n"}, scope="field"),
)
BAD = (
    example({CRONTAB: _TENANT.replace(" --silent", "")}, scope="field", at=[("<crontab>", 1)]),
    example(
        {CRONTAB: _MAINT.replace("&& ", "&& /usr/bin/flock -n /tmp/ci.lock ")},
        scope="field",
        at=[("<crontab>", 1)],
    ),
    example(
        {CRONTAB: _TENANT.replace("* * /", "* * /usr/bin/flock -n -E 0 /tmp/d.lock /")},
        scope="field",
        at=[("<crontab>", 1)],
    ),
    example(
        {CRONTAB: _MAINT.replace("--target live", "--target ci")},
        scope="field",
        at=[("<crontab>", 1)],
    ),
    example(
        {CRONTAB: _MAINT.replace("0 */6 * * *", "* * * * *")}, scope="field", at=[("<crontab>", 1)]
    ),
    example(
        {"ops/maintainer.cron": _TENANT.replace("30 */6", "0 */6")}, at=[("ops/maintainer.cron", 1)]
    ),
    example(
        {CRON_MODULE: _MODULE.replace("'30 */6 * * *'", "'*/5 * * * *'")},
        at=[("sync_ci/field/cron_lines.py", 1)],
    ),
    example(
        {CRON_MODULE: _MODULE.replace(" || {exe} alert doctor-failed", "")},
        at=[("sync_ci/field/cron_lines.py", 5)],
    ),
    example(
        {CRON_MODULE: _MODULE.replace("f'{exe} ci-loop", "f'flock -n {lock} {exe} ci-loop")},
        at=[("sync_ci/field/cron_lines.py", 4)],
    ),
    example({"sync_ci/ci_loop.py": "def command():\n    run()\n"}, at=[("sync_ci/ci_loop.py", 1)]),
    example(
        {"sync_ci/field/doctor.py": _LOCKED.format(job="ci-loop")},
        at=[("sync_ci/field/doctor.py", 1)],
    ),
    example(
        {CRONTAB: _TENANT.replace(" || /opt/bin/sync-ci alert doctor-failed", "; date +%s")},
        scope="field",
        at=[("<crontab>", 1)],
    ),
    # sync-ci's own tree where the cron lines' module moved and ci-loop went: both are named.
    example(
        {PACKAGE_MARK: "", "sync_ci/field/doctor.py": _LOCKED.format(job="doctor")},
        at=[(CRON_MODULE, 1), ("sync_ci/ci_loop.py", 1)],
    ),
)
