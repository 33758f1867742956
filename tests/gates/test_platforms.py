"""The platforms gate over real asciinema recordings and hand-made bad ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sync_ci import __version__
from sync_ci.cli import main
from sync_ci.gates import platforms

GOOD = "echo installing; echo SYNC_CI_RESULT rc=0 version={v} platform={p}"


def write_v2(path: Path, output: str, *, platform: str = "ubuntu", newline: bool = True) -> Path:
    header = {"version": 2, "width": 80, "height": 24, "env": {"SYNC_CI_PLATFORM": platform}}
    lines = [json.dumps(header), json.dumps([0.1, "o", output])]
    path.write_text("\n".join(lines) + ("\n" if newline else ""), encoding="utf-8")
    return path


def write_v3(path: Path, output: str, exit_status: str | None, platform: str = "macos") -> Path:
    header = {"version": 3, "term": {"cols": 80, "rows": 24}, "sync_ci_platform": platform}
    lines = [json.dumps(header), "# a comment line", json.dumps([0.1, "o", output])]
    if exit_status is not None:
        lines.append(json.dumps([0.2, "x", exit_status]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sentinel(platform: str, version: str = __version__, rc: int = 0) -> str:
    return f"doctor ok\r\nSYNC_CI_RESULT rc={rc} version={version} platform={platform}\r\n"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three recordings made on this machine with asciinema, each printing a good sentinel."""
    if shutil.which("asciinema") is None:
        pytest.fail("asciinema is required for the platforms tests (dependency group 'test')")
    directory = tmp_path_factory.mktemp("casts")
    for name in platforms.PLATFORMS:
        code = platforms.record_cast(
            name, directory / f"{name}.cast", script_cmd=GOOD.format(v=__version__, p=name)
        )
        assert code == 0
    return directory


def test_real_recordings_pass(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header = json.loads((recorded / "ubuntu.cast").read_text().splitlines()[0])
    assert header["version"] == 2
    assert platforms.header_platform(header) == "ubuntu"
    assert main(["gate", "platforms", "--casts", str(recorded)]) == 0
    out = capsys.readouterr().out
    assert "platforms.wsl2" in out and "3 passed" in out


def test_recording_a_failing_script_fails(tmp_path: Path) -> None:
    out = tmp_path / "ubuntu.cast"
    script = "echo 'Traceback (most recent call last):'; echo SYNC_CI_RESULT rc=1 version=x platform=ubuntu"
    assert platforms.record_cast("ubuntu", out, script_cmd=script) == 1
    verdict = platforms.check_recording(out, platform="ubuntu", version=__version__)
    assert any("rc=1" in p for p in verdict.problems)
    assert any("traceback" in p for p in verdict.problems)


def test_v3_with_exit_zero_passes(tmp_path: Path) -> None:
    cast = write_v3(tmp_path / "m.cast", sentinel("macos"), "0")
    assert platforms.check_recording(cast, platform="macos", version=__version__).problems == ()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: write_v3(d / "c.cast", sentinel("macos"), "1"), "exited 1"),
        (lambda d: write_v3(d / "c.cast", sentinel("macos"), None), "no exit event"),
        (
            lambda d: write_v2(d / "c.cast", sentinel("macos", version="0.0.9"), platform="macos"),
            "0.0.9",
        ),
        (lambda d: write_v2(d / "c.cast", "doctor ok\r\n", platform="macos"), "no result sentinel"),
        (lambda d: write_v2(d / "c.cast", sentinel("macos"), platform="ubuntu"), "not 'macos'"),
        (
            lambda d: write_v2(d / "c.cast", sentinel("macos"), platform="macos", newline=False),
            "truncated",
        ),
        (lambda d: d / "absent.cast", "no recording"),
        (
            lambda d: write_v2(
                d / "c.cast", "sync-ci: error: boom\r\n" + sentinel("macos"), platform="macos"
            ),
            "sync-ci error line",
        ),
    ],
    ids=[
        "exit-1",
        "no-exit",
        "old-version",
        "no-sentinel",
        "wrong-platform",
        "no-eol",
        "missing",
        "error-line",
    ],
)
def test_bad_recordings_fail(tmp_path: Path, make: object, expected: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    verdict = platforms.check_recording(path, platform="macos", version=__version__)
    assert verdict.problems, "a bad recording passed"
    assert any(expected in p for p in verdict.problems), verdict.problems


def test_cut_in_the_middle_of_an_event_is_truncated(tmp_path: Path) -> None:
    good = write_v2(tmp_path / "w.cast", sentinel("wsl2"), platform="wsl2").read_text()
    cut = tmp_path / "cut.cast"
    cut.write_text(good[: len(good) - 15], encoding="utf-8")
    verdict = platforms.check_recording(cut, platform="wsl2", version=__version__)
    assert any("truncated" in p for p in verdict.problems)


def test_gate_fails_when_one_platform_is_missing(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ubuntu", "wsl2"):
        shutil.copy(recorded / f"{name}.cast", tmp_path / f"{name}.cast")
    assert main(["gate", "platforms", "--casts", str(tmp_path)]) == 1
    assert "no recording" in capsys.readouterr().out


def test_gate_checks_the_version_being_launched(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gate", "platforms", "--casts", str(recorded), "--version", "9.9.9"]) == 1
    assert "not the version being launched (9.9.9)" in capsys.readouterr().out


def test_explicit_cast_paths_and_unknown_platforms(recorded: Path, tmp_path: Path) -> None:
    args = ["gate", "platforms", "--casts", str(tmp_path)]
    explicit = [f"--cast={n}={recorded / f'{n}.cast'}" for n in platforms.PLATFORMS]
    assert main([*args, *explicit]) == 0
    assert main([*args, "--cast", "solaris=x.cast"]) == 2


def test_record_cast_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "wsl2.cast"
    command = GOOD.format(v=__version__, p="wsl2")
    assert (
        main(["gate", "record-cast", "--platform", "wsl2", "--out", str(out), "--command", command])
        == 0
    )
    assert "passes" in capsys.readouterr().out
    assert platforms.header_platform(json.loads(out.read_text().splitlines()[0])) == "wsl2"
