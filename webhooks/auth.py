"""Bearer-token checks for the service and admin APIs."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, Literal, TypeVar

from flask import request

from sync.providers.signatures import token_matches
from webhooks.errors import ApiError
from webhooks.services import services

F = TypeVar("F", bound=Callable[..., Any])


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require_token(kind: Literal["admin", "service"]) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            settings = services().settings
            configured = settings.admin_tokens if kind == "admin" else settings.service_tokens
            if not configured:
                variable = "ORGSYNC_ADMIN_TOKEN" if kind == "admin" else "ORGSYNC_SERVICE_TOKEN"
                raise ApiError(403, f"{kind}_api_disabled", f"The {kind} API is off: {variable} is not set.")
            presented = _bearer()
            if presented is None or not token_matches(presented, configured):
                raise ApiError(401, "unauthorized", f"A valid {kind} bearer token is required.")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
