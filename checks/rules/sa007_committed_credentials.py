"""A credential is written into a file (or a secrets file is readable by others).

**Why:** the bucket key the PR-time loop uses can write `snappy-os-ci/`, the maintainer's can read
production, and a tenant secret signs every tenant token: once any of them is committed, it is in
every clone and fork forever, and rotating it is the only fix. DESIGN section 3 says secrets come
only from the environment or an owner-only file. In `repo` scope this scans every text file for the
shapes of AWS and DigitalOcean Spaces access keys, 40-character secret keys next to a secret-ish
name, private-key blocks, GitHub/DigitalOcean/Slack tokens, and long random literals assigned to
`secret`/`token`/`password` names. In `field` scope (doctor) it scans the settings files and the
user crontab for the same shapes and checks that every secrets file is mode 600 or stricter.

**Fix:** remove the value, rotate the credential (it is compromised once pushed), and read it from
the environment or `SYNC_CI_SECRETS_FILE`; in the workflow, pass `${{ secrets.NAME }}` through
`env:`. For a secrets file: `chmod 600 <file>`. Test code builds fake keys at run time (e.g.
`"AKIA" + "0" * 16`), never as one literal.
"""

from __future__ import annotations

import math
import re
import stat
from collections import Counter
from collections.abc import Iterator

from checks.catalogue import CRONTAB, Finding, Subject, example

ID = "SA007"
TITLE = "credential committed in a file, or secrets file readable by others"
SCOPE = ("repo", "field")

SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b")),
    ("DigitalOcean Spaces access key", re.compile(r"\bDO[0-9A-Z]{18}\b")),
    ("private key block", re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,})\b")),
    ("DigitalOcean API token", re.compile(r"\bdo[por]_v1_[a-f0-9]{64}\b")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    (
        "secret access key",
        re.compile(
            r"(?i)secret[\w-]*['\"]?\s*[:=]\s*['\"]?([A-Za-z0-9/+=]{40,64})(?![A-Za-z0-9/+=])"
        ),
    ),
)
ASSIGNED = re.compile(
    r"(?i)\b[\w-]*(?:secret|token|passw(?:or)?d|api[_-]?key)[\w-]*['\"]?\s*[:=]\s*['\"]([^'\"\s]{20,})['\"]"
)
# Cheap prefilter: a line can only match a shape above if it holds one of these.
QUICK = re.compile(
    r"AKIA|ASIA|ABIA|ACCA|DO[0-9A-Z]{18}|PRIVATE KEY|gh[pousr]_|github_pat_|_v1_|xox"
    r"|(?i:secret|token|passw|api[_-]?key)"
)
# Hyphen-separated lowercase words ("s3cr3t-value-never-shown") are written by a person for a test.
WORDS = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+){2,}$")
PLACEHOLDER = re.compile(
    r"(?i)example|dummy|fake|placeholder|changeme|xxxx|your[_-]|\$\{|\{\{|<|\*\*\*"
)


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _looks_random(value: str) -> bool:
    return (
        not PLACEHOLDER.search(value)
        and not WORDS.match(value)
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and _entropy(value) >= 3.5
    )


def scan(path: str, text: str) -> Iterator[Finding]:
    """Yield a finding for every credential-shaped string in `text` (the value is never echoed)."""
    if not QUICK.search(text):
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not QUICK.search(line):
            continue
        for what, pattern in SHAPES:
            for match in pattern.finditer(line):
                value = match.group(match.lastindex or 0)
                if PLACEHOLDER.search(value):
                    continue
                if what == "DigitalOcean Spaces access key" and sum(c.isdigit() for c in value) < 3:
                    continue
                if what == "secret access key" and not _looks_random(value):
                    continue
                yield Finding(path=path, line=number, message=f"{what} in the file")
        for match in ASSIGNED.finditer(line):
            if _looks_random(match.group(1)):
                yield Finding(
                    path=path,
                    line=number,
                    message="a random-looking literal is assigned to a secret/token name",
                )
                break


def check(subject: Subject) -> Iterator[Finding]:
    """Find committed credentials (repo) or exposed settings and secrets files (field)."""
    for path, text in sorted(subject.files.items()):
        if subject.scope == "field" and path in subject.secret_files:
            continue  # a secrets file is where credentials belong; its mode is what matters
        yield from scan(path, text)
    for path, mode in sorted(subject.secret_files.items()):
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            yield Finding(
                path=path, message=f"secrets file is mode {mode:o}; run: chmod 600 {path}"
            )


# Fake credentials are assembled here so this file does not itself hold a credential shape.
_KEY_ID = "AKIA" + "Z7Q2M4N8P1R6T3W5"
_SPACES = "DO" + "801XW4QJ7KZ2MN9PLR"
_SECRET = "wJ7rX" + "q2Lm9Pz4Tn8Vb3Hd6Kf1Yc5Gs0Ae7Uo2Ri4Nx"
_PEM = "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEow...\n"
GOOD = (
    example(
        {
            "sync_ci/config.py": "KEY = os.environ['SYNC_CI_SECRET_ACCESS_KEY']\n",
            "docs/setup.md": "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
            "secret = ${{ secrets.S3_SECRET }}\n",
            "tests/test_x.py": "tenant_secret = 'not-a-real-secret'\nkey = 'AKIA' + '0' * 16\n",
        }
    ),
    example(
        {
            CRONTAB: "30 */6 * * * /usr/bin/sync-ci doctor --silent\n",
            "/home/u/.config/sync-ci/sync-ci.toml": "[store]\nbucket = 'b'\n",
            "/home/u/.config/sync-ci/secrets": f"SYNC_CI_SECRET_ACCESS_KEY={_SECRET}\n",
        },
        scope="field",
        secret_files={"/home/u/.config/sync-ci/secrets": 0o600},
    ),
)
BAD = (
    example(
        {"sync_ci/settings.py": f"ACCESS_KEY_ID = '{_KEY_ID}'\n"}, at=[("sync_ci/settings.py", 1)]
    ),
    example(
        {"deploy/env.sh": f"export SPACES_KEY={_SPACES}\nexport SPACES_SECRET={_SECRET}\n"},
        at=[("deploy/env.sh", 1), ("deploy/env.sh", 2)],
    ),
    example({".ci/deploy_key": _PEM}, at=[(".ci/deploy_key", 1)]),
    example(
        {"tests/conftest.py": "ADMIN_TOKEN = 'q8Zr2Lx7Vn4Kp1T" + "m6Wb3Hc9Jd5Fs0Ga'\n"},
        at=[("tests/conftest.py", 1)],
    ),
    example(
        {CRONTAB: f"SYNC_CI_SECRET_ACCESS_KEY={_SECRET}\n"}, scope="field", at=[("<crontab>", 1)]
    ),
    example(
        {},
        scope="field",
        secret_files={"/home/u/.config/sync-ci/secrets": 0o644},
        at=[("/home/u/.config/sync-ci/secrets", 0)],
    ),
)
