"""Strict parsing of numeric ids from untrusted text."""
from __future__ import annotations

import re
from typing import Any

# str.isdigit() accepts "²" and "①", which int() then refuses; ids are ASCII.
_DIGITS = re.compile(r"[0-9]{1,19}")
BIGINT_MAX = 2**63 - 1  # ids are stored in BIGINT columns


def parse_id(value: Any) -> int | None:
    """A positive id that fits a BIGINT, from an int or a string of ASCII
    digits; anything else (bool, float, "²", 2**63, "-1") is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    else:
        return None
    return number if 0 < number <= BIGINT_MAX else None
