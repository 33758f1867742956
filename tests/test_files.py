"""The one private file write: whole or not at all, owner-only, no temporary file left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sync_ci.files import write_private


def test_a_new_file_is_owner_only_and_whole(tmp_path: Path) -> None:
    path = write_private(tmp_path / "a" / "b" / "doc.json", "{}\n" * 50_000, parents=True)
    assert path.read_text() == "{}\n" * 50_000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["doc.json"]


def test_an_existing_file_is_replaced_not_rewritten_in_place(tmp_path: Path) -> None:
    path = tmp_path / "doc"
    path.write_bytes(b"old")
    path.chmod(0o644)
    held = path.open("rb")  # a reader that opened the old file keeps reading the old file
    write_private(path, b"new")
    assert held.read() == b"old"
    held.close()
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "dir-in-the-way"
    (target / "child").mkdir(parents=True)  # os.replace cannot put a file over a directory
    with pytest.raises(IsADirectoryError):
        write_private(target, "text")
    assert target.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir-in-the-way"]


def test_without_parents_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_private(tmp_path / "missing" / "doc", "x")
    assert not (tmp_path / "missing").exists()


def test_the_umask_cannot_widen_the_mode(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_private(tmp_path / "doc", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
