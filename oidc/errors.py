"""The oidc package's errors: each carries the HTTP answer it becomes (SPEC
section 4)."""
from __future__ import annotations

from typing import Literal

from oidc.token import VerifiedToken


class OidcError(Exception):
    status: int = 400
    error: str = "malformed_token"
    default_message: str = "The request could not be processed."

    def __init__(self, message: str | None = None, *, reason: str | None = None) -> None:
        self.message = message or self.default_message
        self.reason = reason
        super().__init__(self.message)

    def to_dict(self) -> dict[str, str]:
        body = {"error": self.error, "message": self.message}
        if self.reason is not None:
            body["reason"] = self.reason
        return body


class MalformedToken(OidcError):
    status = 400
    error = "malformed_token"
    default_message = "The request does not carry a well-formed JWT."


InvalidReason = Literal[
    "expired",
    "not_yet_valid",
    "bad_signature",
    "unknown_key",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "algorithm",
    "lifetime_too_long",
]

_REASON_MESSAGES: dict[str, str] = {
    "expired": "The token has expired.",
    "not_yet_valid": "The token is not valid yet.",
    "bad_signature": "The token's signature does not verify.",
    "unknown_key": "The token is signed with a key its issuer does not publish.",
    "wrong_issuer": "The token's issuer is not accepted.",
    "wrong_audience": "The token's audience is not accepted.",
    "missing_claim": "The token lacks a required claim or has one of the wrong type.",
    "algorithm": "The token is not signed with RS256.",
    "lifetime_too_long": "The token's lifetime (exp - iat) is longer than this service accepts.",
}


class InvalidToken(OidcError):
    status = 401
    error = "invalid_token"

    def __init__(self, reason: InvalidReason, message: str | None = None) -> None:
        super().__init__(message or _REASON_MESSAGES[reason], reason=reason)


class TokenReplayed(OidcError):
    status = 401
    error = "token_replayed"
    default_message = "This token has already been used."

    def __init__(self, verified: VerifiedToken | None = None, *, first: bool = True) -> None:
        super().__init__()
        # The token verified, so its owner is known: the replay attempt is
        # worth an entry on that workspace (see record_refusal).
        self.verified = verified
        # Whether this is the token's first replay. Only the first one goes
        # to the change feed: a captured token replayed in a loop would
        # otherwise write one row per request into every consumer's feed.
        self.first = first


class NoWorkspace(OidcError):
    status = 404
    error = "no_workspace"
    default_message = "No workspace is bound to the token's owner."


class WorkspaceMismatch(OidcError):
    status = 403
    error = "workspace_mismatch"
    default_message = "The token does not belong to the requested workspace."


class WorkspaceInactive(OidcError):
    status = 403
    error = "workspace_inactive"
    default_message = "The workspace is suspended or disconnected."


class SubscriptionRequired(OidcError):
    status = 402
    error = "subscription_required"
    default_message = "The workspace has no active subscription."


class OidcUnavailable(OidcError):
    """Redis or the provider API is down. We fail closed: without Redis the
    replay guard cannot hold, so no token is accepted."""

    status = 503
    error = "unavailable"
    default_message = "CI tenant resolution is temporarily unavailable."
