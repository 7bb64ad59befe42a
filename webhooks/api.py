"""Service reads and the operators' admin API (SPEC section 4).

Service token: ``GET /v1/workspaces/<ref>``, ``.../members``,
``.../activity``, ``GET /v1/changes``. Admin token: ``/v1/admin/*``.
Operator actions are the same functions the CLI calls (runtime.queues), so
both answer with the same objects. Every error is JSON; bad parameters are
400, never a 5xx.
"""
from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request

from models import deliveries, store
from runtime import operations
from sync.errors import ProviderError, ProviderSaysGone, RateLimited, TransientProviderError
from webhooks import serialize
from webhooks.auth import require_token
from webhooks.errors import ApiError
from webhooks.services import services

bp = Blueprint("api", __name__)

MAX_LIMIT = 1000
# Sequence numbers are BIGINT; larger values would overflow the driver.
MAX_SEQ = 2**63 - 1
# fullmatch, not match with "$": "$" also matches before a final newline, so
# 64 characters and a newline passed and overflowed the 64-character column.
DEFAULT_LIMIT = 100


def _reply(status: int, body: Any) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    return resp


def _int_param(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"The {name} parameter must be a whole number.") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ApiError(400, "invalid_parameter", f"The {name} parameter must be {bounds}.")
    return value


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True, force=True)
    if body is None and not request.get_data():
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object.")
    return body


def _redis() -> redis.Redis:
    return services().redis


def _queue_error(exc: redis.RedisError) -> ApiError:
    return ApiError(503, "queue_unavailable", f"The job queue is unreachable ({type(exc).__name__}); try again.")


# --------------------------------------------------------------------------- service reads


@bp.get("/v1/workspaces/<ref>")
@require_token("service")
def workspace(ref: str) -> Any:
    with services().session() as s:
        return jsonify(serialize.workspace(store.workspace_view(store.find_workspace(s, ref))))


@bp.get("/v1/workspaces/<ref>/members")
@require_token("service")
def workspace_members(ref: str) -> Any:
    with services().session() as s:
        ws = store.find_workspace(s, ref)
        return jsonify({"workspace": serialize.workspace(store.workspace_view(ws)), "members": store.members(s, ws)})


@bp.get("/v1/workspaces/<ref>/activity")
@require_token("service")
def workspace_activity(ref: str) -> Any:
    after = _int_param("after", 0, 0, MAX_SEQ)
    limit = _int_param("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    with services().session() as s:
        ws = store.find_workspace(s, ref)
        entries = [serialize.activity(store.activity_view(a))
                   for a in store.list_activity(s, workspace_id=ws.id, after=after, limit=limit)]
    return jsonify({
        "workspace": ws.id,
        "activity": entries,
        "next_after": entries[-1]["seq"] if entries else after,
    })


@bp.get("/v1/changes")
@require_token("service")
def changes() -> Any:
    """The change feed: every activity entry after ``after``, in order."""
    after = _int_param("after", 0, 0, MAX_SEQ)
    limit = _int_param("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    with services().session() as s:
        entries = [serialize.activity(store.activity_view(a)) for a in store.list_activity(s, after=after, limit=limit)]
    return jsonify({"changes": entries, "next_after": entries[-1]["seq"] if entries else after})


# --------------------------------------------------------------------------- admin


@bp.post("/v1/admin/resync")
@require_token("admin")
def admin_resync() -> Any:
    body = _json_body()
    target = body.get("target")
    if not isinstance(target, str) or not target.strip():
        raise ApiError(400, "invalid_request", 'The body needs "target": a workspace reference or "all".')
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise ApiError(400, "invalid_request", 'The "force" field must be true or false.')
    rt = services()
    try:
        with rt.session() as s:
            queued = operations.resync(s, rt.redis, target.strip(), force=force)
    except redis.RedisError as exc:
        raise _queue_error(exc) from None
    return _reply(202, {"queued": [serialize.queued(q) for q in queued]})


@bp.get("/v1/admin/status")
@require_token("admin")
def admin_status() -> Any:
    rt = services()
    with rt.session() as s:
        return jsonify(serialize.status(operations.status_report(s, rt.redis)))


@bp.get("/v1/admin/deliveries")
@require_token("admin")
def admin_deliveries() -> Any:
    status = request.args.get("status") or None
    if status is not None and status not in deliveries.STATUSES:
        raise ApiError(400, "invalid_parameter",
                       f"The status parameter must be one of: {', '.join(deliveries.STATUSES)}.")
    provider = request.args.get("provider") or None
    if provider is not None and provider not in ("github", "gitlab"):
        raise ApiError(400, "invalid_parameter", "The provider parameter must be github or gitlab.")
    limit = _int_param("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    with services().session() as s:
        items = [serialize.delivery(deliveries.delivery_view(d))
                 for d in deliveries.list_deliveries(s, status=status, provider=provider, limit=limit)]
    return jsonify({"deliveries": items})


@bp.post("/v1/admin/deliveries/<path:delivery_id>/replay")
@require_token("admin")
def admin_replay(delivery_id: str) -> Any:
    rt = services()
    try:
        with rt.session() as s:
            result = operations.replay_delivery(s, rt.redis, delivery_id)
    except redis.RedisError as exc:
        raise _queue_error(exc) from None
    return _reply(202, serialize.replay(result))


@bp.post("/v1/admin/workspaces/<ref>/transfer")
@require_token("admin")
def admin_transfer(ref: str) -> Any:
    body = _json_body()
    to = body.get("to")
    if not isinstance(to, str) or not to.strip():
        raise ApiError(400, "invalid_request", 'The body needs "to": a user id or username.')
    with services().session() as s:
        return jsonify(serialize.workspace(operations.transfer(s, ref, to.strip())))


@bp.post("/v1/admin/workspaces/<ref>/disconnect")
@require_token("admin")
def admin_disconnect(ref: str) -> Any:
    with services().session() as s:
        ws, _changed = operations.disconnect(s, ref)
        return jsonify(serialize.workspace(ws))


@bp.post("/v1/admin/workspaces/<ref>/reconnect")
@require_token("admin")
def admin_reconnect(ref: str) -> Any:
    """Re-read the org; reconnect and queue a full sync only if the provider
    says it is back (409 and no change if it is still gone)."""
    try:
        result = operations.reconnect(services(), ref)
    except ProviderSaysGone as exc:
        raise ApiError(409, ProviderSaysGone.code, f"{exc}; nothing was changed.") from None
    except (RateLimited, TransientProviderError):
        raise ApiError(503, "provider_unavailable", "The provider could not be reached; nothing was changed.") from None
    except ProviderError as exc:
        raise ApiError(502, "provider_error", f"The provider's answer cannot be used ({exc}); nothing was changed.") from None
    except redis.RedisError as exc:
        raise _queue_error(exc) from None
    return jsonify(serialize.reconnection(result))


@bp.post("/v1/admin/workspaces/<ref>/subscription")
@require_token("admin")
def admin_subscription(ref: str) -> Any:
    body = _json_body()
    if "plan" not in body:
        raise ApiError(400, "invalid_request", 'The body needs "plan": a plan name or null.')
    plan = body["plan"]
    if plan is not None and (not isinstance(plan, str) or not store.PLAN_NAME.fullmatch(plan)):
        raise ApiError(400, "invalid_request",
                       'The "plan" field must be null or a plan name (1-64 letters, digits, ".", "_", "-").')
    with services().session() as s:
        return jsonify(serialize.workspace(operations.set_subscription(s, ref, plan)))
