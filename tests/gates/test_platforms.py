"""The platforms gate judges evidence: real asciinema recordings prove each rejection, and crafted,
internally consistent recordings (this machine is none of the three platforms) prove acceptance."""

from __future__ import annotations

import contextlib
import json
import os
import platform as host
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sync_ci import __version__
from sync_ci.cli import main
from sync_ci.errors import SettingsError
from sync_ci.gates import platforms
from tests.gates import casts

SENTINEL_ONLY = "echo SYNC_CI_RESULT rc=0 version={v} platform={p}"


def host_os_id() -> str:
    try:
        return host.freedesktop_os_release().get("ID", "")
    except OSError:
        return ""


def script_env(**extra: str) -> dict[str, str]:
    """The standard script with cheap steps, sync-ci on PATH the way an install puts it there."""
    return {
        "HOME": os.environ.get("HOME", "/root"),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "TERM": "xterm",
        "SYNC_CI_INSTALL_CMD": "true",
        "SYNC_CI_DOCTOR_CMD": "true",
        "SYNC_CI_SMOKE_CMD": "true",
        **extra,
    }


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Recordings made here with the real asciinema, named by what they are."""
    if shutil.which("asciinema", path=script_env()["PATH"]) is None:
        pytest.fail("asciinema is required for the platforms tests (dependency group 'test')")
    directory = tmp_path_factory.mktemp("real")
    # Another build of sync-ci: a copy of the package with one more file, found first on the path.
    other = directory / "other-build"
    shutil.copytree(
        Path(platforms.__file__).parent.parent,
        other / "sync_ci",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (other / "sync_ci" / "BUILD").write_text("another build\n")
    plan: dict[str, tuple[str, str | None, dict[str, str]]] = {
        "ubuntu": ("ubuntu", None, {}),
        "macos": ("macos", None, {}),
        "wsl2": ("wsl2", None, {}),
        "sentinel-only": ("macos", SENTINEL_ONLY.format(v=__version__, p="macos"), {}),
        "truncated": ("ubuntu", None, {"SYNC_CI_DOCTOR_CMD": "kill -KILL $PPID"}),
        "other-build": ("wsl2", None, {"PYTHONPATH": str(other)}),
    }
    made: dict[str, Path] = {"other-build-package": other / "sync_ci"}
    # From a neutral directory, so `python -m` imports the installed sync_ci, not ./sync_ci.
    with contextlib.chdir(directory):
        for name, (claimed, command, env) in plan.items():
            made[name] = directory / f"{name}.cast"
            platforms.record_cast(claimed, made[name], script_cmd=command, env=script_env(**env))
    return made


def judge(path: Path, claimed: str) -> tuple[str, ...]:
    return platforms.check_recording(path, platform=claimed, version=__version__).problems


# --- real recordings: every rejection -----------------------------------------------------------


def test_a_real_linux_recording_fails_only_on_what_this_machine_really_is(
    real: dict[str, Path],
) -> None:
    header = json.loads(real["ubuntu"].read_text().splitlines()[0])
    assert header["version"] == 2 and platforms.header_platform(header) == "ubuntu"
    os_id = host_os_id()
    expected = () if os_id == "ubuntu" else (f"/etc/os-release ID is {os_id!r}, not 'ubuntu'",)
    assert judge(real["ubuntu"], "ubuntu") == expected
    evidence = platforms.check_recording(real["ubuntu"], platform="ubuntu", version="-").evidence
    assert evidence["uname"] == f"{os.uname().sysname} {os.uname().release} {os.uname().machine}"


def test_a_linux_recording_labelled_macos_fails(real: dict[str, Path]) -> None:
    problems = judge(real["macos"], "macos")
    uname = f"Linux {os.uname().release} {os.uname().machine}"
    assert f"uname says Linux ({uname!r}), not Darwin: this is not a Mac" in problems
    assert any("no sw_vers evidence" in p for p in problems)
    assert any("macOS has no os-release" in p for p in problems)
    assert (
        platforms.record_cast("macos", real["macos"].with_name("again.cast"), env=script_env()) == 1
    )


def test_a_native_linux_recording_labelled_wsl2_fails(real: dict[str, Path]) -> None:
    problems = judge(real["wsl2"], "wsl2")
    assert problems == (f"kernel {os.uname().release!r} carries no WSL marker (microsoft...WSL2)",)


def test_the_sentinel_alone_passes_for_no_platform(real: dict[str, Path]) -> None:
    problems = judge(real["sentinel-only"], "macos")
    for step in platforms.STEPS:
        assert f"step {step} never started (no 'SYNC_CI_STEP {step} start' line)" in problems
    assert any("no platform evidence" in p for p in problems)
    assert any("no installed-distribution digest" in p for p in problems)
    assert judge(real["sentinel-only"], "ubuntu")  # nor for Ubuntu


def test_a_recording_cut_inside_a_step_fails(real: dict[str, Path]) -> None:
    problems = judge(real["truncated"], "ubuntu")
    assert "step doctor started but has no exit line (the recording stops inside it)" in problems
    assert any("step smoke never started" in p for p in problems)
    assert any("no result sentinel" in p for p in problems)
    assert not any("step install" in p for p in problems)


def test_recordings_of_two_builds_fail_the_distribution_row(real: dict[str, Path]) -> None:
    other = platforms.check_recording(real["other-build"], platform="wsl2", version=__version__)
    assert other.evidence["dist_sha256"] == platforms.distribution_digest(
        real["other-build-package"]
    )
    paths = {"ubuntu": real["ubuntu"], "macos": real["macos"], "wsl2": real["other-build"]}
    row = platforms.check_platforms(paths, __version__)[-1]
    assert row.id == "platforms.distribution" and row.status == "fail"
    assert "different sync-ci builds were installed" in row.detail
    assert other.evidence["dist_sha256"][:12] in row.detail


def test_record_cast_command_records_the_standard_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in script_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "macos.cast"
    assert main(["gate", "record-cast", "--platform", "macos", "--out", str(out)]) == 1
    assert "FAILS" in capsys.readouterr().out
    assert platforms.header_platform(json.loads(out.read_text().splitlines()[0])) == "macos"
    assert "SYNC_CI_STEP smoke exit 0" in casts.cast_output(out)


# --- crafted recordings: acceptance, and each fault injected into it -----------------------------


@pytest.fixture(scope="module")
def good(real: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real recordings with only their platform evidence rewritten, consistently, and one
    digest on all three (so a concurrent edit of the package between recordings cannot matter)."""
    directory = tmp_path_factory.mktemp("good")
    digest = platforms.check_recording(real["ubuntu"], platform="ubuntu", version="-").evidence
    keys = ["uname", "os_release_id", "os_release_version_id", "wsl_interop"]
    keys += ["sw_vers_product", "sw_vers_version", "sw_vers_build"]
    for name in platforms.PLATFORMS:
        wanted: dict[str, str | None] = {key: casts.EVIDENCE[name].get(key) for key in keys}
        wanted["dist_sha256"] = digest["dist_sha256"]
        casts.rewrite_cast(real[name], directory / f"{name}.cast", wanted)
    return directory


def test_consistent_recordings_pass(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate", "platforms", "--casts", str(good)]) == 0
    out = capsys.readouterr().out
    assert "platforms.wsl2" in out and "platforms.distribution" in out and "4 passed" in out


def gate_on_copy(
    good: Path, tmp_path: Path, spoil: Callable[[Path], object]
) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run the gate on a spoiled copy of the passing set; return its exit code and rows by id."""
    directory = tmp_path / "casts"
    shutil.copytree(good, directory)
    spoil(directory)
    report = tmp_path / "r.json"
    code = main(["gate", "platforms", "--casts", str(directory), "--json", str(report)])
    return code, {r["id"]: r for r in json.loads(report.read_text())["results"]}


def _edit(name: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / f"{name}.cast"
        path.write_text(path.read_text().replace(old, new))

    return apply


def _redigest(name: str) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / f"{name}.cast"
        path.write_text(
            re.sub(r"dist_sha256=[0-9a-f]{64}", "dist_sha256=" + "f" * 64, path.read_text())
        )

    return apply


def _copy(source: str, target: str) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        shutil.copy(directory / f"{source}.cast", directory / f"{target}.cast")

    return apply


FAULTS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "ubuntu-recording-as-macos": (_copy("ubuntu", "macos"), "platforms.macos", "not 'macos'"),
    "debian": (
        _edit("ubuntu", "os_release_id=ubuntu", "os_release_id=debian"),
        "platforms.ubuntu",
        "'debian', not 'ubuntu'",
    ),
    "wsl-kernel-as-ubuntu": (
        _edit("ubuntu", "6.8.0-45-generic", "5.15.153.1-microsoft-standard-WSL2"),
        "platforms.ubuntu",
        "this is WSL, not native Ubuntu",
    ),
    "wsl1": (_edit("wsl2", "-microsoft-standard-WSL2", "-Microsoft"), "platforms.wsl2", "WSL 1"),
    "mac-without-sw_vers": (
        _edit("macos", "SYNC_CI_EVIDENCE sw_vers_product=", "x="),
        "platforms.macos",
        "no sw_vers evidence",
    ),
    "no-smoke-exit": (
        _edit("wsl2", "SYNC_CI_STEP smoke exit 0", ""),
        "platforms.wsl2",
        "step smoke started but has no exit line",
    ),
    "doctor-failed": (
        _edit("macos", "SYNC_CI_STEP doctor exit 0", "SYNC_CI_STEP doctor exit 4"),
        "platforms.macos",
        "step doctor exited 4",
    ),
    "other-digest": (_redigest("wsl2"), "platforms.distribution", "different sync-ci builds"),
    "no-digest": (
        _edit("ubuntu", "dist_sha256=", "nothing="),
        "platforms.ubuntu",
        "no installed-distribution digest",
    ),
    "other-installed-version": (
        _edit("macos", f"dist_version={__version__}", "dist_version=0.0.1"),
        "platforms.macos",
        "the installed distribution is version 0.0.1",
    ),
    "two-unames": (
        _edit(
            "ubuntu",
            "SYNC_CI_STEP install start",
            "SYNC_CI_EVIDENCE uname=Darwin 23 arm64\\r\\nSYNC_CI_STEP install start",
        ),
        "platforms.ubuntu",
        "contradictory evidence: uname",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_in_a_passing_set_fails_its_row(
    fault: str, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inject, row, detail = FAULTS[fault]
    code, results = gate_on_copy(good, tmp_path, inject)
    assert code == 1
    assert results[row]["status"] == "fail"
    assert detail in results[row]["detail"], results[row]["detail"]
    capsys.readouterr()


def test_v3_recordings_need_an_exit_event_of_zero(tmp_path: Path) -> None:
    output = casts.standard_output("macos", __version__)
    passing = casts.write_cast(
        tmp_path / "a.cast", output, platform="macos", version=3, exit_status="0"
    )
    assert judge(passing, "macos") == ()
    failed = casts.write_cast(
        tmp_path / "b.cast", output, platform="macos", version=3, exit_status="1"
    )
    assert "the recorded session exited 1" in judge(failed, "macos")
    unfinished = casts.write_cast(tmp_path / "c.cast", output, platform="macos", version=3)
    assert any("no exit event" in p for p in judge(unfinished, "macos"))


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (casts.standard_output("macos", "0.0.9"), "not the version being launched"),
        (casts.standard_output("macos", __version__).replace("rc=0", "rc=1"), "reported rc=1"),
        (
            "sync-ci: error: boom\r\n" + casts.standard_output("macos", __version__),
            "sync-ci error line",
        ),
        (
            casts.standard_output("macos", __version__, steps=("doctor", "install", "smoke")),
            "step doctor started before",
        ),
    ],
    ids=["old-version", "rc-1", "error-line", "out-of-order"],
)
def test_bad_output_fails(tmp_path: Path, output: str, expected: str) -> None:
    path = casts.write_cast(tmp_path / "c.cast", output, platform="macos")
    assert any(expected in p for p in judge(path, "macos")), judge(path, "macos")


def test_a_cast_cut_in_the_middle_of_an_event_is_truncated(tmp_path: Path) -> None:
    good = casts.write_cast(
        tmp_path / "w.cast", casts.standard_output("wsl2", __version__), platform="wsl2"
    ).read_text()
    cut = tmp_path / "cut.cast"
    cut.write_text(good[: len(good) - 15], encoding="utf-8")
    verdict = platforms.check_recording(cut, platform="wsl2", version=__version__)
    assert verdict.measured and any("truncated" in p for p in verdict.problems)


# --- no data is exit 3 ---------------------------------------------------------------------------


def test_no_recordings_could_not_be_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    assert (
        main(["gate", "platforms", "--casts", str(tmp_path / "none"), "--json", str(report)]) == 3
    )
    assert "could not measure" in capsys.readouterr().out
    results = json.loads(report.read_text())["results"]
    assert {r["status"] for r in results} == {"error"}
    assert "could not measure: no recording at" in results[0]["detail"]
    assert "sync-ci gate record-cast --platform ubuntu" in results[0]["detail"]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda p: (p.unlink(), p.mkdir()),
        lambda p: p.write_bytes(b"\xff\xfe not text"),
        lambda p: p.write_text("not a recording\n"),
        lambda p: p.unlink(),
    ],
    ids=["a-directory", "not-utf8", "not-asciicast", "missing"],
)
def test_one_unreadable_recording_is_no_data(
    spoil: Callable[[Path], object],
    good: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, results = gate_on_copy(good, tmp_path, lambda d: spoil(d / "macos.cast"))
    assert code == 3
    assert results["platforms.macos"]["status"] == "error"
    assert results["platforms.ubuntu"]["status"] == "pass"
    assert results["platforms.distribution"]["status"] == "error"
    capsys.readouterr()


def test_explicit_cast_paths_and_unknown_platforms(good: Path, tmp_path: Path) -> None:
    args = ["gate", "platforms", "--casts", str(tmp_path)]
    explicit = [f"--cast={n}={good / f'{n}.cast'}" for n in platforms.PLATFORMS]
    assert main([*args, *explicit]) == 0
    assert main([*args, "--cast", "solaris=x.cast"]) == 2


def test_the_gate_checks_the_version_being_launched(good: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    args = ["gate", "platforms", "--casts", str(good), "--version", "9.9.9", "--json", str(report)]
    assert main(args) == 1
    detail = json.loads(report.read_text())["results"][0]["detail"]
    assert "not the version being launched (9.9.9)" in detail


def test_crafted_passing_casts_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    casts.write_passing_casts(tmp_path, __version__)
    assert main(["gate", "platforms", "--casts", str(tmp_path)]) == 0
    capsys.readouterr()


def _running(marker: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if marker in cmdline.read_bytes().decode(errors="replace"):
                found.append(cmdline.parent.name)
    return found


def test_a_recording_past_its_timeout_is_stopped_with_all_it_started(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = f"600.{os.getpid()}"
    with pytest.raises(SettingsError, match="took longer than 1 s; it was stopped"):
        platforms.record_cast(
            "ubuntu",
            tmp_path / "u.cast",
            script_cmd=f"sleep {marker}",
            timeout_s=1,
            env=script_env(),
        )
    # The recorded shell dies of the hang-up its closed terminal sends; allow for a loaded machine.
    for _ in range(300):
        if not _running(f"sleep {marker}"):
            break
        time.sleep(0.1)
    assert _running(f"sleep {marker}") == []
    assert "Traceback" not in capfd.readouterr().err
