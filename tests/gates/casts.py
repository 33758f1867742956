"""Craft asciicast recordings of the standard script, internally consistent for each platform.

The machine running the tests is none of the three platforms, so a recording that passes the gate
has to be written by hand; `standard_output` prints what the standard script prints, line for line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from sync_ci.gates.platforms import PLATFORMS, STEPS

DIGEST = "0" * 63 + "1"
EVIDENCE: Mapping[str, Mapping[str, str]] = {
    "ubuntu": {
        "uname": "Linux 6.8.0-45-generic x86_64",
        "os_release_id": "ubuntu",
        "os_release_version_id": "24.04",
        "wsl_interop": "absent",
    },
    "macos": {
        "uname": "Darwin 23.6.0 arm64",
        "sw_vers_product": "macOS",
        "sw_vers_version": "14.6.1",
        "sw_vers_build": "23G93",
        "wsl_interop": "absent",
    },
    "wsl2": {
        "uname": "Linux 5.15.153.1-microsoft-standard-WSL2 x86_64",
        "os_release_id": "ubuntu",
        "os_release_version_id": "22.04",
        "wsl_interop": "present",
    },
}


def standard_output(
    platform: str,
    version: str,
    *,
    digest: str = DIGEST,
    evidence: Mapping[str, str] | None = None,
    steps: Sequence[str] = STEPS,
) -> str:
    """Return the terminal text of a passing standard-script run on `platform` (CRLF lines)."""
    lines = [f"SYNC_CI_EVIDENCE {k}={v}" for k, v in (evidence or EVIDENCE[platform]).items()]
    for name in steps:
        lines.append(f"SYNC_CI_STEP {name} start: true")
        lines.append(f"SYNC_CI_STEP {name} exit 0")
        if name == "install":
            lines += [
                f"SYNC_CI_EVIDENCE dist_version={version}",
                f"SYNC_CI_EVIDENCE dist_sha256={digest}",
            ]
    lines.append(f"SYNC_CI_RESULT rc=0 version={version} platform={platform}")
    return "".join(f"{line}\r\n" for line in lines)


def write_cast(
    path: Path, output: str, *, platform: str, version: int = 2, exit_status: str | None = None
) -> Path:
    """Write `output` as one asciicast v2 or v3 recording whose header names `platform`."""
    header: dict[str, object] = {"version": version, "title": f"sync-ci platform={platform}"}
    if version == 2:
        header |= {"width": 80, "height": 24, "env": {"SYNC_CI_PLATFORM": platform}}
    else:
        header |= {"term": {"cols": 80, "rows": 24}, "sync_ci_platform": platform}
    lines = [json.dumps(header), json.dumps([0.1, "o", output])]
    if exit_status is not None:
        lines.append(json.dumps([0.2, "x", exit_status]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_passing_casts(directory: Path, version: str, *, digest: str = DIGEST) -> Path:
    """Write ubuntu.cast, macos.cast and wsl2.cast that pass the platforms gate for `version`."""
    for name in PLATFORMS:
        write_cast(
            directory / f"{name}.cast",
            standard_output(name, version, digest=digest),
            platform=name,
        )
    return directory


def cast_output(path: Path) -> str:
    """Return every output event of a recording, joined (a line may span events)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines[1:] if line.strip() and not line.startswith("#")]
    return "".join(e[2] for e in events if e[1] == "o")


def rewrite_cast(source: Path, target: Path, replace: Mapping[str, str | None]) -> Path:
    """Copy a recording, setting each `SYNC_CI_EVIDENCE key=` line to a value (None drops it)."""
    header = json.loads(source.read_text(encoding="utf-8").splitlines()[0])
    kept: list[str] = []
    for line in cast_output(source).split("\r\n"):
        key = line.removeprefix("SYNC_CI_EVIDENCE ").partition("=")[0]
        if line.startswith("SYNC_CI_EVIDENCE ") and key in replace:
            value = replace[key]
            if value is not None:
                kept.append(f"SYNC_CI_EVIDENCE {key}={value}")
        else:
            kept.append(line)
    present = {line.partition("=")[0] for line in kept}
    added = [f"SYNC_CI_EVIDENCE {k}={v}" for k, v in replace.items() if v is not None]
    kept = [line for line in added if line.partition("=")[0] not in present] + kept
    target.write_text(
        json.dumps(header) + "\n" + json.dumps([0.1, "o", "\r\n".join(kept)]) + "\n",
        encoding="utf-8",
    )
    return target
