"""``POST /v1/oidc/resolve``: a CI job's OIDC token → its workspace (SPEC 4, 5).

Thin: parse the body, verify (oidc/verifier.py), resolve, answer. The token is
a bearer credential until it expires, so it is never logged, echoed or stored.
"""
from __future__ import annotations

import json
import logging
from typing import Any, cast

import redis as redis_lib
import requests
from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from oidc.errors import MalformedToken, OidcError, OidcUnavailable, TokenReplayed
from oidc.settings import OidcSettings
from oidc.tenant import NamespaceResolver, Tenant, record_refusal, resolve_tenant
from oidc.verifier import MAX_TOKEN_CHARS, OidcVerifier
from webhooks import serialize
from webhooks.services import services

log = logging.getLogger(__name__)

bp = Blueprint("oidc", __name__)

# A token of at most MAX_TOKEN_CHARS plus a workspace name fits easily; a
# bigger body is refused before it is read (413), so a megabyte "token" costs
# us nothing.
MAX_BODY = 2 * MAX_TOKEN_CHARS
MAX_WORKSPACE_REF = 200

# app.extensions keys: tests (and `orgsync dev`) may put their own here.
VERIFIER_EXTENSION = "orgsync_oidc_verifier"
RESOLVER_EXTENSION = "orgsync_oidc_resolver"


def get_verifier(app: Flask) -> OidcVerifier:
    """One verifier per app: it holds the process's key cache."""
    verifier = app.extensions.get(VERIFIER_EXTENSION)
    if verifier is None:
        rt = services()
        verifier = OidcVerifier(OidcSettings.from_settings(rt.settings), rt.redis, requests.Session())
        app.extensions[VERIFIER_EXTENSION] = verifier
    return verifier  # type: ignore[no-any-return]


def get_resolver(app: Flask) -> NamespaceResolver | None:
    """The GitLab namespace → top-level group lookup, built on first use."""
    resolver = app.extensions.get(RESOLVER_EXTENSION)
    if resolver is None:
        # The composition's adapter factory: the same credentials as the syncs.
        resolver = cast(NamespaceResolver, services().provider_for("gitlab"))
        app.extensions[RESOLVER_EXTENSION] = resolver
    return resolver  # type: ignore[no-any-return]


# How long a CI job should wait before retrying after a failure of ours.
RETRY_AFTER_SECONDS = 5


def _error(exc: OidcError) -> Any:
    resp = jsonify(exc.to_dict())
    resp.status_code = exc.status
    if exc.status == 503:
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return resp


def _read_request() -> tuple[str, str | None]:
    """(token, workspace ref) from the JSON body and/or the Authorization header."""
    header_token: str | None = None
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise MalformedToken("The Authorization header must be 'Bearer <jwt>'.")
        header_token = value.strip()

    request.max_content_length = MAX_BODY
    raw = request.get_data(cache=False)
    body: Any = None
    if raw.strip():
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise MalformedToken("The body must be a JSON object.") from None
        if not isinstance(body, dict):
            raise MalformedToken("The body must be a JSON object.")
    elif header_token is None:
        raise MalformedToken("Send the token as {\"token\": \"<jwt>\"} or 'Authorization: Bearer <jwt>'.")

    body = body or {}
    body_token = body.get("token")
    if "token" in body and not isinstance(body_token, str):
        raise MalformedToken("\"token\" must be a string.")
    if body_token is not None and header_token is not None and body_token != header_token:
        # Two different credentials in one request: refuse rather than guess
        # which one the caller meant.
        raise MalformedToken("The body and the Authorization header carry different tokens.")
    token = body_token if body_token is not None else header_token
    if token is None:
        raise MalformedToken("No token in the request.")

    workspace = body.get("workspace")
    if workspace is not None and (
        not isinstance(workspace, str) or not workspace.strip() or len(workspace) > MAX_WORKSPACE_REF
    ):
        raise MalformedToken("\"workspace\" must be a workspace name or id.")
    return token, workspace


def _record_replay(app: Flask, exc: TokenReplayed) -> None:
    """A replayed token is someone else holding a CI credential: tell the
    tenant through its activity. Best effort: the answer is 401 either way."""
    assert exc.verified is not None
    if not exc.first:
        # Counted and logged by the verifier; one entry per token is enough
        # to tell the tenant, and more would let anyone holding one old
        # token flood the change feed.
        return
    rt = services()
    try:
        with rt.session() as session:
            record_refusal(session, exc.verified, exc, get_resolver(app), rt.redis)
    except (OidcError, redis_lib.RedisError, SQLAlchemyError):
        log.warning("oidc: could not record a replay on its workspace")


@bp.post("/v1/oidc/resolve")
def resolve() -> Any:
    try:
        token, workspace_ref = _read_request()
    except RequestEntityTooLarge:
        resp = jsonify({"error": "payload_too_large", "message": "The request body is too large."})
        resp.status_code = 413
        return resp
    except OidcError as exc:
        return _error(exc)

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        verified = get_verifier(app).verify(token)
    except OidcError as exc:
        log.info("oidc: token refused: %s %s", exc.error, exc.reason or "")
        if isinstance(exc, TokenReplayed) and exc.verified is not None:
            _record_replay(app, exc)
        return _error(exc)
    del token  # nothing below needs it; keep it out of any later traceback

    refusal: OidcError | None = None
    result: Tenant | None = None
    rt = services()
    try:
        # Refusals are activity entries too, so the session commits whether
        # the answer is 200 or a refusal; only an unexpected error rolls back.
        with rt.session() as session:
            try:
                result = resolve_tenant(
                    session, verified, workspace_ref, get_resolver(app), rt.redis
                )
            except OidcError as exc:
                refusal = exc
    except Exception as exc:  # noqa: BLE001 - any failure of ours: the CI may retry
        # Database down, Redis down, a bug: the caller did nothing wrong, so
        # the answer is 503 and the jti is released; otherwise the CI's retry
        # of the same token would be refused as a replay.
        log.error("oidc: resolution failed: %s", type(exc).__name__)
        refusal = OidcUnavailable()
    if isinstance(refusal, OidcUnavailable):
        get_verifier(app).release(verified)
    if refusal is not None:
        return _error(refusal)
    assert result is not None
    return jsonify(serialize.tenant(result))
