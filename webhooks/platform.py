"""The platform API (SPEC section 4, "Platform API"): users, their workspaces,
the access question, managed workspaces, invitations, requests and members.

Service token on every route. A call that changes a workspace names the user
on whose behalf the platform acts in ``X-Orgsync-User`` (400 missing_user
without it); models.managed checks that user's role and applies the store's
rules, so these views only parse, call and answer. Every error is JSON with
the store's code; a refused call changes nothing (the session rolls back).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.orm import Session

from models import managed, store, users
from models.errors import UserNotFound
from models.tables import User
from webhooks import serialize
from webhooks.auth import require_token
from webhooks.errors import ApiError
from webhooks.services import services

bp = Blueprint("platform", __name__)

USER_HEADER = "X-Orgsync-User"


def _reply(status: int, body: Any) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    return resp


def _no_content() -> Response:
    return Response(status=204)


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True, force=True)
    if body is None and not request.get_data():
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object.")
    return body


def _acting_user(s: Any) -> User:
    """The user named by X-Orgsync-User: whose role is checked and who the
    activity log names."""
    ref = request.headers.get(USER_HEADER, "").strip()
    if not ref:
        raise ApiError(400, "missing_user",
                       f"A change needs the {USER_HEADER} header naming the user it is made for.")
    try:
        return users.resolve_user(s, ref)
    except UserNotFound:
        raise ApiError(400, "unknown_user", f"{USER_HEADER} names no user with an account.") from None


def _user(s: Any, ref: str) -> User:
    return users.resolve_user(s, ref)


@contextmanager
def _read() -> Iterator[Session]:
    """A session for the hot reads, outside a transaction: they change
    nothing, and skipping BEGIN and COMMIT saves two of their few round trips."""
    s = services().session_factory()
    try:
        s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield s
    finally:
        s.close()


# --------------------------------------------------------------------------- users


@bp.post("/v1/users")
@require_token("service")
def create_user() -> Any:
    body = _body()
    username = body.get("username")
    if not isinstance(username, str) or not username.strip():
        raise ApiError(400, "invalid_request", 'The body needs "username".')
    with services().session() as s:
        view = users.user_view(s, users.sign_up(s, username.strip()))
    return _reply(201, serialize.signed_up(view))


@bp.get("/v1/users/<user>")
@require_token("service")
def get_user(user: str) -> Any:
    with _read() as s:
        return jsonify(serialize.user(users.user_view(s, _user(s, user))))


@bp.get("/v1/users/<user>/workspaces")
@require_token("service")
def user_workspaces(user: str) -> Any:
    with _read() as s:
        return jsonify(serialize.workspaces_of_user(users.workspaces_of_user(s, _user(s, user))))


@bp.get("/v1/workspaces/<ref>/access/<user>")
@require_token("service")
def access(ref: str, user: str) -> Any:
    with _read() as s:
        ws = users.find_workspace(s, ref)
        return jsonify(serialize.access(users.access_view(s, ws, _user(s, user))))


# --------------------------------------------------------------------------- workspaces


@bp.post("/v1/workspaces")
@require_token("service")
def create_workspace() -> Any:
    with services().session() as s:
        user = _acting_user(s)
        name = _body().get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "invalid_request", 'The body needs "name".')
        ws = managed.create_workspace(s, name, user, managed.Actor(user))
        return _reply(201, serialize.workspace(store.workspace_view(ws)))


@bp.patch("/v1/workspaces/<ref>")
@require_token("service")
def rename_workspace(ref: str) -> Any:
    with services().session() as s:
        actor = managed.Actor(_acting_user(s))
        name = _body().get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "invalid_request", 'The body needs "name".')
        ws = managed.rename_workspace(s, store.find_workspace(s, ref), name, actor)
        return jsonify(serialize.workspace(store.workspace_view(ws)))


@bp.delete("/v1/workspaces/<ref>")
@require_token("service")
def delete_workspace(ref: str) -> Any:
    with services().session() as s:
        actor = managed.Actor(_acting_user(s))
        managed.delete_workspace(s, store.find_workspace(s, ref), actor)
    return _no_content()


# --------------------------------------------------------------------------- invitations


@bp.post("/v1/workspaces/<ref>/invitations")
@require_token("service")
def create_invitation(ref: str) -> Any:
    with services().session() as s:
        actor = managed.Actor(_acting_user(s))
        body = _body()
        expires_in = managed.parse_expiry(body.get("expires_in"))
        ws = store.find_workspace(s, ref)
        inv, token = managed.create_invitation(s, ws, body.get("role", "member"), actor, expires_in)
        return _reply(201, {"invitation": serialize.invitation(managed.invitation_view(inv, token))})


@bp.get("/v1/workspaces/<ref>/invitations")
@require_token("service")
def list_invitations(ref: str) -> Any:
    with services().session() as s:
        ws = store.find_workspace(s, ref)
        return jsonify({"workspace": {"id": ws.id, "name": ws.name},
                        "invitations": [serialize.invitation(managed.invitation_view(i))
                                        for i in managed.list_invitations(s, ws)]})


@bp.delete("/v1/workspaces/<ref>/invitations/<invitation_id>")
@require_token("service")
def revoke_invitation(ref: str, invitation_id: str) -> Any:
    with services().session() as s:
        actor = managed.Actor(_acting_user(s))
        managed.revoke_invitation(s, store.find_workspace(s, ref), invitation_id, actor)
    return _no_content()


@bp.post("/v1/invitations/<token>/requests")
@require_token("service")
def request_to_join(token: str) -> Any:
    with services().session() as s:
        req, _new = managed.request_to_join(s, token, _acting_user(s))
        return _reply(202, {"request": serialize.join_request(managed.join_request_view(s, req))})


@bp.get("/v1/workspaces/<ref>/requests")
@require_token("service")
def list_requests(ref: str) -> Any:
    with services().session() as s:
        ws = store.find_workspace(s, ref)
        return jsonify({"workspace": {"id": ws.id, "name": ws.name},
                        "requests": [serialize.join_request(managed.join_request_view(s, r))
                                     for r in managed.list_requests(s, ws)]})


def _decide(ref: str, request_id: str, approve: bool) -> Any:
    with services().session() as s:
        actor = managed.Actor(_acting_user(s))
        req = managed.decide_request(s, store.find_workspace(s, ref), request_id, approve, actor)
        return jsonify({"request": serialize.join_request(managed.join_request_view(s, req))})


@bp.post("/v1/workspaces/<ref>/requests/<request_id>/approve")
@require_token("service")
def approve_request(ref: str, request_id: str) -> Any:
    return _decide(ref, request_id, True)


@bp.post("/v1/workspaces/<ref>/requests/<request_id>/deny")
@require_token("service")
def deny_request(ref: str, request_id: str) -> Any:
    return _decide(ref, request_id, False)


# --------------------------------------------------------------------------- members


@bp.patch("/v1/workspaces/<ref>/members/<user>")
@require_token("service")
def change_member(ref: str, user: str) -> Any:
    with services().session() as s:
        actor = managed.Actor(_acting_user(s))
        body = _body()
        if "role" not in body:
            raise ApiError(400, "invalid_request", 'The body needs "role".')
        ws = store.find_workspace(s, ref)
        m = managed.change_role(s, ws, _user(s, user), body["role"], actor)
        return jsonify({"member": serialize.member(managed.member_view(s, ws, m))})


@bp.delete("/v1/workspaces/<ref>/members/<user>")
@require_token("service")
def remove_member(ref: str, user: str) -> Any:
    with services().session() as s:
        actor = managed.Actor(_acting_user(s))
        managed.remove_member(s, store.find_workspace(s, ref), _user(s, user), actor)
    return _no_content()
