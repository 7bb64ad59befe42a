"""Errors raised by provider adapters and the sync engine.

Adapters turn PyGithub / python-gitlab / HTTP failures into these, so nothing
above ``sync/providers`` knows which client library is underneath.
"""
from __future__ import annotations

from datetime import datetime


class SyncError(Exception):
    """Base class for sync errors."""


class ProviderError(SyncError):
    """A provider answered in a way we cannot use (permanent for this call)."""


class TransientProviderError(ProviderError):
    """5xx, timeouts, connection errors: retry later with backoff.

    Never a reason to remove anyone: a sync that meets one stops without
    applying removals.
    """


class RateLimited(ProviderError):
    """The provider's rate limit was hit.

    ``reset_at`` is when to try again (primary limit: the reset time;
    secondary limit: now + Retry-After, else now + >= 60 s). The job is
    rescheduled for then; it is not a failure and removes nothing.
    """

    def __init__(self, reset_at: datetime, *, secondary: bool = False, message: str = "") -> None:
        super().__init__(message or f"rate limited until {reset_at.isoformat()}")
        self.reset_at = reset_at
        self.secondary = secondary


class AuthBroken(ProviderError):
    """Our credentials for this org no longer work (401, revoked installation,
    suspended app, token without access). The workspace's link is marked
    broken; its roster is kept as it is."""


class NotFound(ProviderError):
    """The org, group or member does not exist (or is not visible to us)."""


class InvalidUserToken(ProviderError):
    """A user's OAuth token (login sync) was rejected by the provider."""


class ProviderSaysGone(SyncError):
    """A reconnect the provider contradicts: the installation, org or group
    is still gone (the admin API answers 409, nothing changes)."""

    code = "provider_says_gone"
