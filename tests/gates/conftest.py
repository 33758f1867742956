"""Gate fixtures: a tiny stand-in Worker (subprocess on 127.0.0.1) and sandbox environments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TINY_WORKER = Path(__file__).with_name("tiny_worker.py")
TINY_SECRET = "tiny-secret"

TinyWorker = Callable[..., dict[str, object]]


@pytest.fixture
def tiny_worker() -> Iterator[TinyWorker]:
    """Start tiny Workers for this test: `start("--latency-ms", "50")` returns {"url", "regions"}."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> dict[str, object]:
        process = subprocess.Popen(
            [sys.executable, str(TINY_WORKER), "--secret", TINY_SECRET, *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"tiny worker exited with {process.wait(timeout=5)}")
        document: dict[str, object] = json.loads(line)
        return document

    try:
        yield start
    finally:
        for process in started:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            if process.stdout:
                process.stdout.close()


@pytest.fixture
def gate_env(
    sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """Run in-process CLI calls against the session sandbox, with nothing from the real home."""
    return use_env(sandbox_env, monkeypatch, tmp_path)


def use_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, cwd: Path) -> dict[str, str]:
    """Make `env` the only SYNC_CI_* settings of this process for the test, run from `cwd`."""
    for name in list(os.environ):
        if name.startswith("SYNC_CI_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    return env
