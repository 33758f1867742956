"""Contract v1 shapes: alert bodies refuse control characters in every field, naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from sync_ci import contract
from sync_ci.errors import ContractError

# C0 (newline and tab included), DEL, C1 (CSI 0x9b drives some terminals), bidi overrides.
CONTROLS = ("\x1b[2J", "\n", "\t", "\r", "\x00", "\x7f", "\x9b", "\u202e", "\u2066", "\u2028")


def alert_body(**changes: str) -> dict[str, Any]:
    """A valid alert body with some fields replaced."""
    body = {
        "check": "doctor-failed",
        "message": "SA101 failed on this machine",
        "host": "tenant-host",
        "version": "0.1.0",
        "ts": "2026-01-01T00:00:00Z",
        "idempotency_key": "acme.doctor.1",
    }
    body.update(changes)
    return body


def test_a_plain_alert_passes() -> None:
    body = alert_body(message="ünïcode, quotes \"' and <b> are fine")
    assert contract.validate_alert(body) == body


@pytest.mark.parametrize("field", ["check", "message", "host", "version", "ts"])
@pytest.mark.parametrize("control", CONTROLS)
def test_a_control_character_is_refused_naming_the_field(field: str, control: str) -> None:
    body = alert_body(**{field: f"ok{control}no alerts recorded"})
    with pytest.raises(ContractError) as caught:
        contract.validate_alert(body)
    message = str(caught.value)
    assert f"alert field {field!r} holds a control character (U+{ord(control[0]):04X})" in message
    # The refusal itself carries no raw control character back to whoever prints it.
    assert all(c not in message for c in CONTROLS)


def test_missing_and_wrong_type_fields_are_still_refused() -> None:
    with pytest.raises(ContractError, match="lacks message"):
        contract.validate_alert(alert_body(message=""))
    with pytest.raises(ContractError, match="not a JSON object"):
        contract.validate_alert(["check"])
