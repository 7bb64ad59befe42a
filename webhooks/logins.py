"""``POST /v1/logins``: the platform's login flow hands us the user's OAuth token.

Thin view: validate, run the login sync, map errors. The token is passed on
to the provider and dropped; it appears in no log line, error or response.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify, request

from sync.errors import InvalidUserToken, ProviderError, RateLimited, TransientProviderError
from sync.login import PROVIDERS, login_sync
from webhooks import serialize
from webhooks.auth import require_token
from webhooks.errors import ApiError
from webhooks.services import services

bp = Blueprint("logins", __name__)

# OAuth tokens are tens of characters (GitHub ~40-100, GitLab ~64); anything
# far larger is not a token and is refused before it reaches a provider.
MAX_TOKEN_LENGTH = 4096


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _parse() -> tuple[str, str]:
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise _bad('The body must be a JSON object {"provider", "access_token"}.')
    provider = body.get("provider")
    token = body.get("access_token")
    if not isinstance(provider, str) or provider not in PROVIDERS:
        raise _bad('"provider" must be "github" or "gitlab".')
    if not isinstance(token, str) or not token.strip():
        raise _bad('"access_token" must be a non-empty string.')
    token = token.strip()
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
        raise _bad('"access_token" is not a valid OAuth token.')
    return provider, token


@bp.post("/v1/logins")
@require_token("service")
def post_login() -> Any:
    provider, token = _parse()
    runtime = services()
    try:
        result = login_sync(runtime.sync_context, provider, token, runtime.enqueuer)
    except InvalidUserToken:
        raise ApiError(401, "invalid_token", f"{provider} rejected the access token.") from None
    except RateLimited as exc:
        retry = max(1, int((exc.reset_at - datetime.now(UTC)).total_seconds()))
        raise ApiError(
            503, "provider_unavailable", f"{provider} is rate limiting us; nothing was changed.",
            retry_after=retry,
        ) from None
    except TransientProviderError:
        raise ApiError(
            503, "provider_unavailable", f"{provider} could not be reached; nothing was changed."
        ) from None
    except ProviderError:
        # Permanent, but the provider's fault, not the caller's: still no change.
        raise ApiError(
            502, "provider_error", f"{provider} gave an answer we cannot use; nothing was changed."
        ) from None
    return jsonify(serialize.login(result))

