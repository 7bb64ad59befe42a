"""Numeric ids from untrusted text."""
from __future__ import annotations

from typing import Any

import pytest

from models.ids import BIGINT_MAX, parse_id


@pytest.mark.parametrize(
    "value,expected",
    [
        (42, 42), ("42", 42), ("0042", 42), (BIGINT_MAX, BIGINT_MAX), (str(BIGINT_MAX), BIGINT_MAX),
        (0, None), (-1, None), ("-1", None), (True, None), (False, None), (1.0, None), (None, None),
        ("", None), (" 5", None), ("1e3", None), ("0x10", None), ("²", None), ("①", None), ("١٢", None),
        (BIGINT_MAX + 1, None), ("9" * 40, None), ([], None), ({}, None),
    ],
)
def test_parse_id(value: Any, expected: int | None) -> None:
    assert parse_id(value) == expected
