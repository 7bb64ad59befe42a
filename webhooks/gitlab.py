"""POST /webhooks/gitlab: verify, record, queue, answer (SPEC section 4).

Authentication: the ``X-Gitlab-Token`` secret (constant time, every
configured value), and when ``GITLAB_WEBHOOK_SIGNING_SECRET`` is set also the
Standard Webhooks signature over ``id.timestamp.body``. Decision: with neither
secret configured every delivery is refused (401 ``invalid_token``); with
only the signing secret configured the signature alone authenticates (GitLab
lets a hook have a signing token without a secret token).

GitLab disables a hook temporarily after repeated failures, so everything it
may legitimately send gets a 2xx: hooks and events we do not handle are
recorded as ignored, never refused. 4xx is kept for requests that did not
come from a correctly configured GitLab (bad secret, broken body).

Idempotency key: the signed ``webhook-id`` when a signing secret is
configured; otherwise ``Idempotency-Key`` (stable across GitLab's retries), else
``X-Gitlab-Event-UUID`` plus the body's SHA-256 (the same UUID is shared by
every hook an event fires, so the body tells them apart).
"""
from __future__ import annotations

import hashlib

import structlog
from flask import Blueprint, Response, request

from sync.providers.signatures import (
    GITLAB_TOKEN_HEADER,
    WEBHOOK_ID,
    WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
    SignatureError,
    verify_gitlab_token,
    verify_standard,
)
from sync.triage import gitlab_action
from webhooks.errors import ApiError
from webhooks.github import accept, delivery_id_from, header, parse_object
from webhooks.services import services

bp = Blueprint("webhooks_gitlab", __name__)
log = structlog.get_logger(__name__)


def _authenticate(body: bytes) -> None:
    settings = services().settings
    tokens = settings.gitlab_webhook_secrets
    signing = settings.gitlab_webhook_signing_secret
    if not tokens and not signing:
        raise ApiError(401, "invalid_token",
                       "GitLab webhooks are not accepted: no webhook secret is configured.")
    if tokens:
        try:
            verify_gitlab_token(request.headers.get(GITLAB_TOKEN_HEADER), tokens)
        except SignatureError as exc:
            log.info("webhook.rejected", provider="gitlab", reason=str(exc))
            raise ApiError(401, "invalid_token", str(exc)) from None
    if signing:
        try:
            verify_standard(
                body,
                request.headers.get(WEBHOOK_ID),
                request.headers.get(WEBHOOK_TIMESTAMP),
                request.headers.get(WEBHOOK_SIGNATURE),
                signing,
            )
        except SignatureError as exc:
            log.info("webhook.rejected", provider="gitlab", reason=str(exc))
            raise ApiError(401, "invalid_signature", str(exc)) from None


@bp.post("/webhooks/gitlab")
def receive() -> Response:
    # Raw bytes first: the signature covers them exactly. Over 25 MiB: 413.
    body = request.get_data(cache=True)
    _authenticate(body)
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send application/json.")
    hook = header("X-Gitlab-Event")
    body_sha256 = hashlib.sha256(body).hexdigest()
    key = (request.headers.get("Idempotency-Key") or "").strip()
    if services().settings.gitlab_webhook_signing_secret:
        # Signed: the key is the signed webhook-id (stable across GitLab's
        # retries). Idempotency-Key is not signed, so a captured delivery
        # replayed with a fresh one inside the 5-minute window would
        # otherwise be recorded and processed again.
        delivery_id = delivery_id_from((request.headers.get(WEBHOOK_ID) or "").strip(), WEBHOOK_ID)
    elif key:
        delivery_id = delivery_id_from(key, "Idempotency-Key")
    else:
        event_uuid = (request.headers.get("X-Gitlab-Event-UUID") or "").strip()
        if not event_uuid:
            raise ApiError(400, "missing_header",
                           "The Idempotency-Key or X-Gitlab-Event-UUID header is required.")
        delivery_id = delivery_id_from(f"{event_uuid}.{body_sha256[:32]}", "X-Gitlab-Event-UUID")
    try:
        payload_text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_payload", "The body is not UTF-8 JSON.") from None
    payload = parse_object(payload_text)
    return accept(
        provider="gitlab",
        delivery_id=delivery_id,
        event=hook,
        action=gitlab_action(payload),
        payload=payload,
        payload_text=payload_text,
        body_sha256=body_sha256,
    )
