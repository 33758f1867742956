"""Run each `benchmarks/bench_*.py` main(), or only those whose name contains an argument."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def discover() -> list[str]:
    """Return the bench module names in this package, sorted."""
    here = str(Path(__file__).resolve().parent)
    return sorted(m.name for m in pkgutil.iter_modules([here]) if m.name.startswith("bench_"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks one after another; the exit code is the worst one."""
    filters = list(sys.argv[1:] if argv is None else argv)
    names = [n for n in discover() if not filters or any(f in n for f in filters)]
    if not names:
        print(f"no benchmark matches {' '.join(filters)!r}; have: {', '.join(discover())}")
        return 2
    worst = 0
    for name in names:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"benchmarks.{name}")
        code = module.main()
        code = 0 if code is None else int(code)
        print(f"== {name}: exit {code} after {time.monotonic() - started:.1f} s", flush=True)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
