"""A copy of the repository (without caches) in tmp_path, for tests that break it on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IGNORED = shutil.ignore_patterns(
    ".git",
    ".nox",
    ".venv",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "*.egg-info",
    "state",
    "results",
)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """Return a fresh copy of the working tree this test may change."""
    target = tmp_path / "repo"
    shutil.copytree(REPO, target, ignore=IGNORED, symlinks=True)
    return target
