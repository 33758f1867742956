"""The one `KEY=VALUE` parser: the CLI's repeated options and the Worker's own options.

`--fault`, `--set`, `--kv-miss-ms`, `--threshold` and `--cast` all take `KEY=VALUE` items; this
module splits them, and each caller then judges its keys and values (a fault's range, a
threshold's tighten-only rule, a colo's milliseconds) with its own message. Crontab environment
lines and the secrets file are not options: they follow cron's and the dotenv file's grammar and
are read where those files are (`field/cron_table`, `config`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sync_ci.errors import UsageError


def parse_assignments(
    items: Iterable[str], flag: str, *, form: str = "KEY=VALUE", example: str = ""
) -> dict[str, str]:
    """Split repeated `KEY=VALUE` items (spaces around either side dropped), later keys winning.

    An item without `=`, or with nothing on one side, is a usage error naming the flag, the
    form wanted and, when given, an example: `--fault '5xx_rate' is not KEY=VALUE (e.g. ...)`.
    """
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            hint = f" (e.g. {flag} {example})" if example else ""
            raise UsageError(f"{flag} {item!r} is not {form}{hint}")
        parsed[key] = value
    return parsed
