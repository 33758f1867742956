"""Optional dependencies: which extra of `sync-ci` provides each one, checked before it is used."""

from __future__ import annotations

import importlib.util
import sys

from sync_ci.errors import MissingExtra

# Import name -> the requirement to name in the error (tests/test_packaging.py keeps this table,
# the `require_extra` calls and pyproject.toml's extras in step).
REQUIREMENTS: dict[str, str] = {
    "aiohttp": "aiohttp",
    "moto": "moto[server]",
    "hdrh": "hdrhistogram",
    "locust": "locust",
    "gevent": "gevent",
    "schemathesis": "schemathesis",
    "hypothesis": "hypothesis",
}


def is_installed(module: str) -> bool:
    """Whether `module` can be found, without importing it (a child process may be its user)."""
    if sys.modules.get(module) is not None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        # A parent package that is missing or broken, or a module without a spec.
        return False


def require_extra(module: str, extra: str, *, needed_by: str) -> None:
    """Refuse with one line naming the extra to install when `module` is not installed."""
    if not is_installed(module):
        top = module.partition(".")[0]
        raise MissingExtra(
            f"{needed_by} needs {REQUIREMENTS.get(top, top)} (pip install 'sync-ci[{extra}]')"
        )
