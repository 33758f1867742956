"""Text that leaves the process: configured secrets replaced by `***`, control characters made visible.

Settings register every secret they load (and every value derived from one, such as a tenant
token); every renderer and every error line passes its text through `clean` (or `redact`).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, cast

MASK = "***"
# Shorter values would mask ordinary words; real secrets, tokens and key ids are far longer.
MIN_SECRET_LEN = 6
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_ANY = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values (and their stripped forms) so `redact` masks them from now on."""
    global _pattern
    with _lock:
        added = False
        for value in values:
            for form in _forms(value):
                if len(form) >= MIN_SECRET_LEN and form not in _secrets:
                    _secrets.add(form)
                    added = True
        if added:
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def _forms(value: str) -> set[str]:
    # As given, stripped, and as a JSON string or a Python repr quote it (an error message that
    # quotes a header, a JSON body echoed back), so a quote or backslash cannot hide a secret.
    forms = {value, value.strip()}
    for form in list(forms):
        forms.add(json.dumps(form)[1:-1])
        forms.add(json.dumps(form, ensure_ascii=False)[1:-1])
        forms.add(repr(form)[1:-1])
    return forms


def registered_count() -> int:
    """How many secret forms are registered (for tests and `config show`)."""
    return len(_secrets)


def forget_secrets() -> None:
    """Drop every registered secret (tests only: a process keeps its secrets for its lifetime)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str) -> str:
    """Replace every registered secret in `text` with `***`."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def escape_controls(text: str, *, keep_newlines: bool = True) -> str:
    """Make control characters visible as `\\xNN` (newlines and tabs kept unless told otherwise)."""
    pattern = _CONTROL if keep_newlines else _CONTROL_ANY
    return pattern.sub(_visible, text)


def first_control(text: str) -> str | None:
    """Return the first control character in `text` (C0 incl. newline and tab, DEL, C1, bidi)."""
    match = _CONTROL_ANY.search(text)
    return match.group() if match else None


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def clean(text: str, *, keep_newlines: bool = True) -> str:
    """Redact secrets, then escape control characters: what every renderer does to outside text."""
    return escape_controls(redact(text), keep_newlines=keep_newlines)


class _RedactingStream:
    """A text stream that masks registered secrets in everything written through it."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(redact(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextmanager
def redacted_output() -> Iterator[None]:
    """Mask registered secrets in everything this process prints to stdout and stderr meanwhile.

    Defence in depth under the renderers and error lines, which clean their own text: a warning
    line some module prints itself is masked here, once, for every command.
    """
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (
        cast(TextIO, _RedactingStream(out)),
        cast(TextIO, _RedactingStream(err)),
    )
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
