"""The oidc package's Redis key space: every key it writes (cached JWKS, fetch
slots, spent jtis, GitLab roots, the replay counter) starts with one prefix;
and reading a value back as text."""
from __future__ import annotations

from typing import Any

REDIS_PREFIX = "orgsync:oidc"


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
