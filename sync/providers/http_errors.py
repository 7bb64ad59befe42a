"""What every adapter does with a failed HTTP answer, written once.

GitHub and GitLab differ in how they announce a rate limit (GitHub: a 403
with ``X-RateLimit-Remaining: 0`` or a message; GitLab: a 429 with
``RateLimit-Reset``), so detecting one stays in each adapter. Reading the
reset headers, the status-to-error mapping and which network failures are
transient are the same for both and live here.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import NoReturn

import requests

from sync.errors import (
    AuthBroken,
    InvalidUserToken,
    NotFound,
    ProviderError,
    TransientProviderError,
)

# A rate limit that says nothing about when it ends (no reset header, no
# Retry-After): wait at least a minute, as GitHub asks for secondary limits.
DEFAULT_RATE_LIMIT_WAIT = timedelta(seconds=60)

# The network failed, not the request: worth another try later.
NETWORK_ERRORS: tuple[type[requests.RequestException], ...] = (
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.RetryError,
    requests.exceptions.ChunkedEncodingError,
)


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """When a ``Retry-After`` header says to try again, or None if it says nothing usable.

    Both forms of RFC 9110: delay-seconds (capped at a day, so a bogus huge
    value cannot overflow) and an HTTP date (read as UTC when it has no zone).
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return now + timedelta(seconds=min(int(value), 86400))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def retry_at(retry_after: str | None, now: datetime) -> datetime:
    """When to try again after a limit that gave at most a ``Retry-After``:
    what it says, else ``DEFAULT_RATE_LIMIT_WAIT`` from now; never in the past,
    whatever the clock skew between us and the provider."""
    return max(parse_retry_after(retry_after, now) or now + DEFAULT_RATE_LIMIT_WAIT, now)


def parse_reset_epoch(value: str | None) -> datetime | None:
    """A rate-limit reset header in epoch seconds (GitHub's
    ``X-RateLimit-Reset``, GitLab's ``RateLimit-Reset``), or None if unusable."""
    if not value:
        return None
    try:
        return datetime.fromtimestamp(int(float(value)), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def raise_for_status(status: int | None, where: str, *, user_token: bool, message: str | None = None) -> NoReturn:
    """Turn a non-success status (rate limits already handled) into the
    project's error types.

    ``user_token``: the request carried a user's OAuth token, whose failure is
    that user's problem (login sync answers 401); our own credentials failing
    means the org's link is broken. ``message``: the provider's own
    explanation, appended to permanent errors when the adapter has one.
    """
    if status is not None and (status >= 500 or status == 408):
        raise TransientProviderError(where)
    if status in (401, 403):
        if user_token:
            raise InvalidUserToken(where)
        raise AuthBroken(where if message is None else f"{where}: {message or 'access denied'}")
    if status == 404:
        raise NotFound(where)
    raise ProviderError(where if message is None else f"{where}: {message or 'unexpected answer'}")
