"""The platform API's part of /openapi.json (webhooks.openapi merges it).

Response schemas allow extra properties, as in the rest of the document.
"""
from __future__ import annotations

from typing import Any

USER_HEADER = "X-Orgsync-User"

_S = {"type": "string"}
_I = {"type": "integer"}
_B = {"type": "boolean"}
_ROLE = {"type": "string", "enum": ["owner", "admin", "member", "billing"]}
_GRANTABLE = {"type": "string", "enum": ["admin", "member", "billing"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _obj(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_TEXT = {
    400: "Bad request, missing_user or unknown_user", 401: "Missing or wrong bearer token",
    403: "forbidden by the acting user's role, or this API is turned off", 404: "Not found",
    409: "A store rule refuses it (cannot_invite, cannot_delete, cannot_rename, provider_managed, name_taken, ...)",
    410: "invitation_expired",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _json(_ref("Error"), _ERROR_TEXT[c]) for c in codes}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": _S}


_WS = _path("ref", "Workspace id, name, or github:/gitlab: reference")
_USER = _path("user", "Account id, username, or github:<id> / gitlab:<id>")
_ACTING = {"name": USER_HEADER, "in": "header", "required": True, "schema": _S,
           "description": "The user on whose behalf the platform acts: account id, username, "
                          "github:<id> or gitlab:<id>"}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_NO_CONTENT = {"204": {"description": "Done"}}

SCHEMAS: dict[str, Any] = {
    "WorkspaceBrief": _obj(["id", "name"], {"id": _S, "name": _S, "kind": _S, "status": _S,
                                            "subscription": _nullable(_S)}),
    "NewUser": _obj(["user", "personal_workspace"], {
        "user": _ref("UserRef"), "personal_workspace": _ref("WorkspaceBrief")}),
    "User": _obj(["id", "username", "identities", "personal_workspace"], {
        "id": _S, "username": _S,
        "identities": {"type": "array", "items": _obj(["provider", "provider_user_id", "login"], {
            "provider": {"type": "string", "enum": ["github", "gitlab"]}, "provider_user_id": _I,
            "login": _S})},
        "personal_workspace": _nullable(_ref("WorkspaceBrief"))}),
    "UserWorkspaces": _obj(["user", "workspaces"], {
        "user": _ref("UserRef"),
        "workspaces": {"type": "array", "items": _obj(
            ["id", "name", "kind", "role", "status", "subscription"],
            {"id": _S, "name": _S, "kind": {"type": "string", "enum": ["personal", "managed", "provider"]},
             "role": _ROLE, "status": _S, "subscription": _nullable(_S)})}}),
    "Access": _obj(["workspace", "user", "role", "can_deploy"], {
        "workspace": _ref("WorkspaceBrief"), "user": _ref("UserRef"), "role": _nullable(_ROLE),
        "can_deploy": _B}),
    "Invitation": _obj(["id", "token", "role", "status", "expires_at"], {
        "id": _I, "workspace": _S, "token": _nullable(_S), "role": _GRANTABLE,
        "status": {"type": "string", "enum": ["active", "expired", "revoked", "invited", "requested",
                                              "approved", "denied"]},
        "expires_at": _nullable(_S), "created_at": _nullable(_S)}),
    "NewInvitation": _obj(["invitation"], {"invitation": _ref("Invitation")}),
    "Invitations": _obj(["workspace", "invitations"], {
        "workspace": _ref("WorkspaceBrief"), "invitations": {"type": "array", "items": _ref("Invitation")}}),
    "JoinRequest": _obj(["id", "status", "workspace"], {
        "id": _I, "status": {"type": "string", "enum": ["requested", "approved", "denied"]},
        "role": _GRANTABLE, "workspace": _ref("WorkspaceBrief"), "user": _nullable(_ref("UserRef")),
        "created_at": _nullable(_S), "decided_at": _nullable(_S)}),
    "JoinRequestAnswer": _obj(["request"], {"request": _ref("JoinRequest")}),
    "JoinRequests": _obj(["workspace", "requests"], {
        "workspace": _ref("WorkspaceBrief"), "requests": {"type": "array", "items": _ref("JoinRequest")}}),
    "MemberAnswer": _obj(["member"], {"member": _obj(["workspace", "user", "role"], {
        "workspace": _ref("WorkspaceBrief"), "user": _nullable(_ref("UserRef")), "role": _ROLE})}),
}


def paths() -> dict[str, Any]:
    service: list[dict[str, list[str]]] = [{"serviceToken": []}]

    def op(operation_id: str, summary: str, params: list[dict[str, Any]], responses: dict[str, Any],
           body: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": summary, "operationId": operation_id, "security": service,
                               "parameters": params, "responses": responses}
        if body is not None:
            out["requestBody"] = body
        return out

    return {
        "/v1/users": {"post": op(
            "createUser", "Create an account without a provider login (with its personal workspace)", [],
            {"201": _json(_ref("NewUser"), "Created"), **_errors(400, 401, 403, 409)},
            _body(_obj(["username"], {"username": _S})))},
        "/v1/users/{user}": {"get": op(
            "getUser", "One user, their provider identities and personal workspace", [_USER],
            {"200": _json(_ref("User"), "The user"), **_errors(401, 403, 404)})},
        "/v1/users/{user}/workspaces": {"get": op(
            "getUserWorkspaces", "Every workspace the user can use, sorted by name", [_USER],
            {"200": _json(_ref("UserWorkspaces"), "Workspaces"), **_errors(401, 403, 404)})},
        "/v1/workspaces/{ref}/access/{user}": {"get": op(
            "getAccess", "The user's role in the workspace and whether they can deploy with it", [_WS, _USER],
            {"200": _json(_ref("Access"), "The answer"), **_errors(401, 403, 404)})},
        "/v1/workspaces": {"post": op(
            "createWorkspace", "Create a managed workspace owned by the acting user", [_ACTING],
            {"201": _json(_ref("Workspace"), "Created"), **_errors(400, 401, 403, 409)},
            _body(_obj(["name"], {"name": _S})))},
        "/v1/workspaces/{ref}": {
            "patch": op("renameWorkspace", "Rename a managed workspace (its owner only)", [_WS, _ACTING],
                        {"200": _json(_ref("Workspace"), "Renamed"), **_errors(400, 401, 403, 404, 409)},
                        _body(_obj(["name"], {"name": _S}))),
            "delete": op("deleteWorkspace",
                         "Delete a managed workspace, or a disconnected provider workspace (its owner only)",
                         [_WS, _ACTING], {**_NO_CONTENT, **_errors(400, 401, 403, 404, 409)}),
        },
        "/v1/workspaces/{ref}/invitations": {
            "post": op("createInvitation", "Invite by link (owner or admin); the token is shown only here",
                       [_WS, _ACTING],
                       {"201": _json(_ref("NewInvitation"), "Created"), **_errors(400, 401, 403, 404, 409)},
                       _body({"type": "object", "properties": {
                           "role": _GRANTABLE,
                           "expires_in": {"type": "integer", "minimum": 300, "maximum": 7776000,
                                          "description": "Seconds; 7 days when absent"}}}, required=False)),
            "get": op("listInvitations", "A workspace's invitations (without their tokens)", [_WS],
                      {"200": _json(_ref("Invitations"), "Invitations"), **_errors(401, 403, 404)}),
        },
        "/v1/workspaces/{ref}/invitations/{invitation_id}": {"delete": op(
            "revokeInvitation", "Revoke an invitation (owner or admin)",
            [_WS, _path("invitation_id", "The invitation's id"), _ACTING],
            {**_NO_CONTENT, **_errors(400, 401, 403, 404, 409)})},
        "/v1/invitations/{token}/requests": {"post": op(
            "requestToJoin", "The acting user, who opened the invitation link, asks to join",
            [_path("token", "The invitation link's secret token"), _ACTING],
            {"202": _json(_ref("JoinRequestAnswer"), "Requested (asking again returns the pending request)"),
             **_errors(400, 401, 403, 404, 409, 410)})},
        "/v1/workspaces/{ref}/requests": {"get": op(
            "listJoinRequests", "A workspace's requests to join", [_WS],
            {"200": _json(_ref("JoinRequests"), "Requests"), **_errors(401, 403, 404)})},
        "/v1/workspaces/{ref}/requests/{request_id}/approve": {"post": op(
            "approveJoinRequest", "Approve: the user becomes a member with the invitation's role",
            [_WS, _path("request_id", "The request's id"), _ACTING],
            {"200": _json(_ref("JoinRequestAnswer"), "Approved"), **_errors(400, 401, 403, 404, 409)})},
        "/v1/workspaces/{ref}/requests/{request_id}/deny": {"post": op(
            "denyJoinRequest", "Deny a request to join",
            [_WS, _path("request_id", "The request's id"), _ACTING],
            {"200": _json(_ref("JoinRequestAnswer"), "Denied"), **_errors(400, 401, 403, 404, 409)})},
        "/v1/workspaces/{ref}/members/{user}": {
            "patch": op("changeMemberRole", "Change a member's role (managed workspaces; owner or admin)",
                        [_WS, _USER, _ACTING],
                        {"200": _json(_ref("MemberAnswer"), "Changed"), **_errors(400, 401, 403, 404, 409)},
                        _body(_obj(["role"], {"role": _GRANTABLE}))),
            "delete": op("removeMember", "Remove a member (owner or admin), or leave (the member themselves)",
                         [_WS, _USER, _ACTING], {**_NO_CONTENT, **_errors(400, 401, 403, 404, 409)}),
        },
    }
