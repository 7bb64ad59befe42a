"""POST /webhooks/github: verify, record, queue, answer (SPEC section 4).

The view is deliberately thin: no provider calls and no sync work happen in
the request (GitHub gives up after 10 s and does not retry failed
deliveries). What a delivery means is decided later by sync.events in the
delivery job.

Order of checks: the body is read first and the signature checked over those
exact bytes before anything else is looked at, so an unauthenticated caller
learns nothing beyond "401" (not which headers or content types we want).

Decision: with no ``GITHUB_WEBHOOK_SECRET`` configured every delivery is
refused with 401 ``invalid_signature``; unsigned deliveries are never
accepted.

The record-then-queue part is shared with webhooks/gitlab.py (``accept``).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qs

import redis
import structlog
from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models import deliveries, store
from runtime.queues import wake
from sync.providers.signatures import GITHUB_SIGNATURE_HEADER, SignatureError, verify_github
from sync.triage import Intake, github_action, triage
from webhooks.errors import ApiError
from webhooks.services import services

bp = Blueprint("webhooks_github", __name__)
log = structlog.get_logger(__name__)

MAX_DELIVERY_ID = 200  # the deliveries table's key length


def _reply(status: int, body: dict[str, Any]) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    return resp


def header(name: str) -> str:
    value = (request.headers.get(name) or "").strip()
    if not value:
        raise ApiError(400, "missing_header", f"The {name} header is required.")
    return value


def delivery_id_from(value: str, name: str) -> str:
    # Provider-chosen ids become primary keys and log fields: bound their
    # length and keep them printable so they cannot forge log lines.
    if len(value) > MAX_DELIVERY_ID or not value.isprintable():
        raise ApiError(400, "invalid_header", f"The {name} header is not a valid delivery id.")
    return value


def parse_object(text: str | bytes) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_payload", "The body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_payload", "The body must be a JSON object.")
    return payload


def accept(
    *,
    provider: str,
    delivery_id: str,
    event: str,
    action: str | None,
    payload: dict[str, Any],
    payload_text: str,
    body_sha256: str,
    ping: bool = False,
) -> Response:
    """Record the delivery durably (one transaction, committed before we
    answer), then ring its lane's bell.

    The answer says ``queued`` only when a wake-up really is pending in
    Redis; with Redis unreachable the delivery is still accepted as
    ``received`` and the minute sweep wakes its lane. Answering an error
    instead would make GitHub drop it for good (no retries) and make GitLab
    count a failure towards disabling the hook.
    """
    rt = services()
    with structlog.contextvars.bound_contextvars(delivery=delivery_id, provider=provider, event=event,
                                                 action=action):
        intake = Intake("ignore", "ping") if ping else triage(provider, event, payload)
        # One statement, committed on its own before we answer: the delivery
        # is durable, and the row is all the work the pipeline needs. A
        # connection the database dropped (a restart) is retried once on a
        # fresh one: the insert is idempotent (a copy that did commit makes
        # the retry a duplicate, and a waiting duplicate rings its bell).
        for attempt in (1, 2):
            try:
                new, work, intake, existing_status, existing_lane = _record(
                    rt, provider, delivery_id, event, action, payload_text, body_sha256, intake)
                break
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
                log.warning("webhook.database_reconnect")
        if not new:
            log.info("webhook.duplicate", status=existing_status)
            if existing_status in deliveries.WAITING and existing_lane:
                # A redelivery of one still waiting: a chance to ring its bell
                # (a pending wake-up makes this one round trip).
                _wake(rt, existing_lane)
            return _reply(200, {"delivery": delivery_id, "status": "duplicate"})
        if ping:
            log.info("webhook.ping")
            return _reply(200, {"delivery": delivery_id, "status": "pong"})
        if not work:
            log.info("webhook.ignored", reason=intake.reason)
            return _reply(202, {"delivery": delivery_id, "status": "ignored", "reason": intake.reason})
        assert intake.lane is not None
        queued = _wake(rt, intake.lane)
        log.info("webhook.accepted", queued=queued)
        return _reply(202, {"delivery": delivery_id, "status": "queued" if queued else "received"})


def _record(rt: Any, provider: str, delivery_id: str, event: str, action: str | None, payload_text: str,
            body_sha256: str, intake: Intake) -> tuple[bool, bool, Intake, str | None, str | None]:
    """The intake's one statement (plus, for an installation event, one
    lookup): record the delivery, or find the copy already recorded."""
    with rt.autocommit_connection() as conn:
        if intake.decision == "check_installation":
            # An event naming an installation that only the store can
            # judge: an unknown org installation is adopted (SPEC section
            # 6); a "user account" installation the store holds as an
            # org's is for the worker to read.
            assert intake.installation_id is not None
            with Session(bind=conn) as s:
                known = store.get_workspace_by_installation(s, intake.installation_id) is not None
            if known == intake.work_if_known:
                intake = Intake("work", lane=intake.lane, hint_user_id=intake.hint_user_id)
            else:
                intake = Intake("ignore", intake.reason, intake.lane)
        work = intake.decision == "work"
        new = deliveries.record_delivery(
            conn, delivery_id, provider, event, action, payload_text, body_sha256,
            intake.lane, status=deliveries.RECEIVED if work else deliveries.IGNORED,
            outcome=None if work else {"result": "ignored", "reason": intake.reason},
            hint_user_id=intake.hint_user_id if work else None,
        )
        existing = None if new else deliveries.status_and_lane(conn, delivery_id)
    return new, work, intake, existing[0] if existing else None, existing[1] if existing else None


def _wake(rt: Any, lane: str) -> bool:
    """True when a wake-up of the lane is pending (queued now or before)."""
    try:
        wake(rt.redis, lane)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("webhook.queue_unavailable", error=type(exc).__name__)
        return False
    return True


@bp.post("/webhooks/github")
def receive() -> Response:
    # get_data() first: touching request.form would consume the stream and
    # the HMAC would be computed over an empty body. Bodies over
    # MAX_CONTENT_LENGTH (25 MiB) are refused here with 413.
    body = request.get_data(cache=True)
    try:
        verify_github(body, request.headers.get(GITHUB_SIGNATURE_HEADER),
                      services().settings.github_webhook_secrets)
    except SignatureError as exc:
        log.info("webhook.rejected", provider="github", reason=str(exc))
        raise ApiError(401, "invalid_signature", str(exc)) from None
    mimetype = request.mimetype
    if mimetype not in ("application/json", "application/x-www-form-urlencoded"):
        raise ApiError(415, "unsupported_media_type",
                       "Send application/json or application/x-www-form-urlencoded.")
    event = header("X-GitHub-Event")
    delivery_id = delivery_id_from(header("X-GitHub-Delivery"), "X-GitHub-Delivery")
    if mimetype == "application/x-www-form-urlencoded":
        # Parsed from the verified bytes rather than request.form, which also
        # caps form fields at 500 kB where GitHub sends up to 25 MiB.
        try:
            fields = parse_qs(body.decode("utf-8"), max_num_fields=16)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "invalid_payload", "The form body could not be read.") from None
        values = fields.get("payload")
        if not values:
            raise ApiError(400, "invalid_payload", "The form body has no payload field.")
        payload_text = values[0]
    else:
        try:
            payload_text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_payload", "The body is not UTF-8 JSON.") from None
    payload = parse_object(payload_text)
    return accept(
        provider="github",
        delivery_id=delivery_id,
        event=event,
        action=github_action(payload),
        payload=payload,
        payload_text=payload_text,
        body_sha256=hashlib.sha256(body).hexdigest(),
        ping=event == "ping",
    )
