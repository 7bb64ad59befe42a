"""The HTTP API as it is (SPEC section 4), as an OpenAPI 3 document: served at
/openapi.json and read by the fuzz tests. The
platform API's part lives in webhooks.platform_openapi and is merged here.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from webhooks import platform_openapi
from webhooks.observability import METRICS_REFRESH_SECONDS

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(build_openapi())

# The HTTP API as it is (SPEC section 4). Response schemas allow extra
# properties: clients must ignore fields they do not know.


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _obj(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_S = {"type": "string"}
_I = {"type": "integer"}
_B = {"type": "boolean"}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error", "message"], {"error": _S, "message": _S}),
    "UserRef": _obj(["id", "username"], {"id": _S, "username": _S}),
    "Workspace": _obj(
        ["id", "name", "kind", "provider", "provider_org_id", "provider_org_login", "status", "owner",
         "subscription"],
        {
            "id": _S,
            "name": _S,
            "kind": {"type": "string", "enum": ["personal", "managed", "provider"]},
            "provider": _nullable({"type": "string", "enum": ["github", "gitlab"]}),
            "provider_org_id": _nullable(_I),
            "provider_org_login": _nullable(_S),
            "reference": _nullable(_S),
            "status": {"type": "string", "enum": ["active", "suspended", "disconnected"]},
            "link": _nullable(_S),
            "owner": _nullable(_ref("UserRef")),
            "subscription": _nullable(_S),
        },
    ),
    "Member": _obj(
        ["user", "provider_user_id", "login", "role", "source"],
        {
            "user": _nullable(_ref("UserRef")),
            "provider_user_id": _nullable(_I),
            "login": _S,
            "role": {"type": "string", "enum": ["owner", "admin", "member", "billing"]},
            "source": _S,
            "access": _B,
        },
    ),
    "Members": _obj(["workspace", "members"],
                    {"workspace": _ref("Workspace"), "members": {"type": "array", "items": _ref("Member")}}),
    "ActivityEntry": _obj(
        ["seq", "at", "workspace", "actor", "action", "subject", "details"],
        {"seq": _I, "at": _nullable(_S), "workspace": _nullable(_S), "actor": _S, "action": _S,
         "subject": _nullable(_S), "details": {"type": "object"}},
    ),
    "ActivityPage": _obj(["workspace", "activity", "next_after"],
                         {"workspace": _S, "activity": {"type": "array", "items": _ref("ActivityEntry")},
                          "next_after": _I}),
    "Changes": _obj(["changes", "next_after"],
                    {"changes": {"type": "array", "items": _ref("ActivityEntry")}, "next_after": _I}),
    "SyncRun": _obj(
        ["id", "workspace", "kind", "trigger", "result", "started_at", "finished_at", "added", "removed",
         "changed", "api_calls"],
        {"id": _I, "workspace": _S, "kind": _S, "trigger": _S, "result": _S, "forced": _B,
         "started_at": _nullable(_S), "finished_at": _nullable(_S), "at": _nullable(_S),
         "added": _I, "removed": _I, "changed": _I, "api_calls": _I, "not_modified": _I,
         "error": _nullable(_S), "details": {"type": "object"}},
    ),
    "StatusWorkspace": {"allOf": [_ref("Workspace"), _obj(["last_sync"], {
        "last_sync": _nullable(_ref("SyncRun")), "link_error": _nullable(_S)})]},
    "QueueDepth": _obj(["queued", "scheduled", "started", "failed"],
                       {"queued": _I, "scheduled": _I, "started": _I, "deferred": _I, "failed": _I}),
    "Status": _obj(
        ["workspaces", "held", "deliveries", "queues"],
        {
            "workspaces": {"type": "array", "items": _ref("StatusWorkspace")},
            "held": {"type": "array", "items": _obj(["workspace", "run"], {
                "workspace": _S, "name": _S, "run": _I, "reason": _nullable(_S)})},
            "deliveries": _obj(["pending", "failed"], {
                "pending": _I, "failed": _I, "deferred": _I,
                "by_status": {"type": "object", "additionalProperties": _I}}),
            "queues": _nullable({"type": "object", "additionalProperties": _ref("QueueDepth")}),
            "queues_error": _S,
        },
    ),
    "Delivery": _obj(
        ["id", "provider", "event", "status"],
        {"id": _S, "provider": _S, "event": _S, "action": _nullable(_S), "status": _S, "org": _nullable(_S),
         "attempts": _I, "job": _nullable(_S), "error": _nullable(_S), "outcome": {"type": "object"},
         "received_at": _nullable(_S), "queued_at": _nullable(_S), "started_at": _nullable(_S),
         "processed_at": _nullable(_S)},
    ),
    "Deliveries": _obj(["deliveries"], {"deliveries": {"type": "array", "items": _ref("Delivery")}}),
    "Queued": _obj(["queued"], {"queued": {"type": "array", "items": _obj(["workspace", "job"], {
        "workspace": _S, "job": _S})}}),
    "Replayed": _obj(["delivery", "status", "job"], {"delivery": _S, "status": _S, "job": _S}),
    "WebhookAnswer": _obj(["delivery", "status"], {
        "delivery": _S,
        "status": {"type": "string", "enum": ["queued", "duplicate", "ignored", "pong"]}}),
    "LoginRequest": _obj(["provider", "access_token"], {
        "provider": {"type": "string", "enum": ["github", "gitlab"]}, "access_token": _S}),
    "Login": _obj(["user", "workspaces"], {
        "user": _ref("UserRef"),
        "workspaces": {"type": "array", "items": _obj(["id", "name", "kind", "role"], {
            "id": _S, "name": _S, "kind": _S, "role": _S})}}),
    "OidcRequest": {"type": "object", "properties": {"token": _S, "workspace": _S}},
    "OidcResolution": _obj(["workspace", "provider", "owner", "repository", "subject"], {
        "workspace": _ref("Workspace"), "provider": _S,
        "owner": _obj(["login", "id"], {"login": _nullable(_S), "id": {}}),
        "repository": _nullable(_S), "subject": _nullable(_S)}),
    "OidcError": {"allOf": [_ref("Error"), {"type": "object", "properties": {"reason": _S}}]},
    "Health": _obj(["status"], {"status": _S}),
    "Ready": _obj(["status", "checks"], {"status": _S, "checks": {"type": "object"}, "redis": _S}),
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad request", 401: "Missing or wrong bearer token", 402: "Subscription required",
            403: "Forbidden, or this API is turned off", 404: "Not found", 408: "The body was not received in time",
            409: "Conflicts with the state",
            413: "Body too large", 415: "Unsupported media type", 502: "Provider answer unusable",
            503: "A dependency is unavailable"}
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _ref_param() -> dict[str, Any]:
    return {"name": "ref", "in": "path", "required": True,
            "description": "Workspace id, name, or github:/gitlab: reference", "schema": _S}


def _page_params() -> list[dict[str, Any]]:
    return [
        {"name": "after", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    ]


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def build_openapi() -> dict[str, Any]:
    service: list[dict[str, list[str]]] = [{"serviceToken": []}]
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Process alive", "operationId": "healthz",
                             "responses": {"200": _json(_ref("Health"), "Alive")}}},
        "/readyz": {"get": {"summary": "Database and Redis reachable", "operationId": "readyz",
                            "responses": {"200": _json(_ref("Ready"), "Ready"),
                                          "503": _json(_ref("Ready"), "A dependency is unreachable")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (database figures refreshed at most every "
                                        f"{METRICS_REFRESH_SECONDS} s)", "operationId": "metrics",
                             "security": [{}, {"metricsToken": []}],
                             "responses": {"200": {"description": "Prometheus text format",
                                                   "content": {"text/plain": {"schema": _S}}},
                                           **_errors(401)}}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")}}},
        "/webhooks/github": {"post": {
            "summary": "GitHub webhook delivery (X-Hub-Signature-256 over the raw body)",
            "operationId": "githubWebhook",
            "parameters": [
                {"name": "X-GitHub-Event", "in": "header", "required": True, "schema": _S},
                {"name": "X-GitHub-Delivery", "in": "header", "required": True, "schema": _S},
                {"name": "X-Hub-Signature-256", "in": "header", "required": True, "schema": _S},
            ],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/x-www-form-urlencoded": {"schema": _obj(["payload"], {"payload": _S})},
            }},
            "responses": {"200": _json(_ref("WebhookAnswer"), "Duplicate delivery, or ping"),
                          "202": _json(_ref("WebhookAnswer"), "Recorded and queued, or recorded and ignored"),
                          **_errors(400, 401, 408, 413, 415, 503)},
        }},
        "/webhooks/gitlab": {"post": {
            "summary": "GitLab webhook (X-Gitlab-Token; Standard Webhooks signature when configured)",
            "operationId": "gitlabWebhook",
            "parameters": [
                {"name": "X-Gitlab-Token", "in": "header", "required": True, "schema": _S},
                {"name": "X-Gitlab-Event", "in": "header", "required": True, "schema": _S},
                {"name": "Idempotency-Key", "in": "header", "required": False, "schema": _S},
                {"name": "X-Gitlab-Event-UUID", "in": "header", "required": False, "schema": _S},
                {"name": "webhook-id", "in": "header", "required": False, "schema": _S},
                {"name": "webhook-timestamp", "in": "header", "required": False, "schema": _S},
                {"name": "webhook-signature", "in": "header", "required": False, "schema": _S},
            ],
            "requestBody": _body({"type": "object"}),
            "responses": {"200": _json(_ref("WebhookAnswer"), "Duplicate delivery"),
                          "202": _json(_ref("WebhookAnswer"), "Recorded and queued, or recorded and ignored"),
                          **_errors(400, 401, 408, 413, 415, 503)},
        }},
        "/v1/logins": {"post": {
            "summary": "Sync a user's memberships at login", "operationId": "login", "security": service,
            "requestBody": _body(_ref("LoginRequest")),
            "responses": {"200": _json(_ref("Login"), "The user and the workspaces they can reach"),
                          **_errors(400, 401, 403, 502, 503)},
        }},
        "/v1/oidc/resolve": {"post": {
            "summary": "Resolve a CI OIDC token to its tenant workspace", "operationId": "oidcResolve",
            "security": [{}, {"oidcToken": []}],
            "requestBody": _body(_ref("OidcRequest"), required=False),
            "responses": {"200": _json(_ref("OidcResolution"), "The tenant"),
                          **{str(c): _json(_ref("OidcError"), d) for c, d in (
                              (400, "malformed_token"), (401, "invalid_token or token_replayed"),
                              (402, "subscription_required"), (403, "workspace_mismatch or workspace_inactive"),
                              (404, "no_workspace"), (413, "Body too large"), (503, "Unavailable"))}},
        }},
        "/v1/workspaces/{ref}": {"get": {
            "summary": "One workspace", "operationId": "getWorkspace", "security": service,
            "parameters": [_ref_param()],
            "responses": {"200": _json(_ref("Workspace"), "The workspace"), **_errors(401, 403, 404)},
        }},
        "/v1/workspaces/{ref}/members": {"get": {
            "summary": "A workspace's members (roster members without an account have user null)",
            "operationId": "getMembers", "security": service, "parameters": [_ref_param()],
            "responses": {"200": _json(_ref("Members"), "Members"), **_errors(401, 403, 404)},
        }},
        "/v1/workspaces/{ref}/activity": {"get": {
            "summary": "A workspace's activity log", "operationId": "getActivity", "security": service,
            "parameters": [_ref_param(), *_page_params()],
            "responses": {"200": _json(_ref("ActivityPage"), "Entries after `after`, oldest first"),
                          **_errors(400, 401, 403, 404)},
        }},
        "/v1/changes": {"get": {
            "summary": "The change feed: every activity entry after a sequence number",
            "operationId": "getChanges", "security": service, "parameters": _page_params(),
            "responses": {"200": _json(_ref("Changes"), "Entries after `after`, oldest first"),
                          **_errors(400, 401, 403)},
        }},
        "/v1/admin/resync": {"post": {
            "summary": "Queue full syncs of one workspace or all", "operationId": "adminResync",
            "security": admin,
            "requestBody": _body(_obj(["target"], {"target": _S, "force": _B})),
            "responses": {"202": _json(_ref("Queued"), "Queued (a waiting sync is joined)"),
                          **_errors(400, 401, 403, 404, 409, 503)},
        }},
        "/v1/admin/status": {"get": {
            "summary": "Workspaces with their last sync, held syncs, deliveries, queue depths",
            "operationId": "adminStatus", "security": admin,
            "responses": {"200": _json(_ref("Status"), "Status"), **_errors(401, 403)},
        }},
        "/v1/admin/deliveries": {"get": {
            "summary": "Recorded webhook deliveries, newest first", "operationId": "adminDeliveries",
            "security": admin,
            "parameters": [
                {"name": "status", "in": "query", "required": False, "schema": {"type": "string", "enum": [
                    "received", "queued", "processing", "processed", "ignored", "failed", "deferred"]}},
                {"name": "provider", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["github", "gitlab"]}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            ],
            "responses": {"200": _json(_ref("Deliveries"), "Deliveries"), **_errors(400, 401, 403)},
        }},
        "/v1/admin/deliveries/{id}/replay": {"post": {
            "summary": "Queue a failed or stuck delivery again", "operationId": "adminReplay",
            "security": admin,
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": _S}],
            "responses": {"202": _json(_ref("Replayed"), "Queued"), **_errors(401, 403, 404, 409, 503)},
        }},
        "/v1/admin/workspaces/{ref}/transfer": {"post": {
            "summary": "Transfer ownership to another member", "operationId": "adminTransfer",
            "security": admin, "parameters": [_ref_param()],
            "requestBody": _body(_obj(["to"], {"to": _S})),
            "responses": {"200": _json(_ref("Workspace"), "The workspace"),
                          **_errors(400, 401, 403, 404, 409)},
        }},
        "/v1/admin/workspaces/{ref}/disconnect": {"post": {
            "summary": "Disconnect a provider workspace", "operationId": "adminDisconnect",
            "security": admin, "parameters": [_ref_param()],
            "responses": {"200": _json(_ref("Workspace"), "The workspace"), **_errors(401, 403, 404, 409)},
        }},
        "/v1/admin/workspaces/{ref}/reconnect": {"post": {
            "summary": "Reconnect a provider workspace after re-reading its org (409 while it is still gone)",
            "operationId": "adminReconnect",
            "security": admin, "parameters": [_ref_param()],
            "responses": {"200": _json(_obj(["result", "workspace", "full_sync_queued"], {
                              "result": {"type": "string", "enum": ["reconnected", "unchanged"]},
                              "workspace": _ref("Workspace"), "full_sync_queued": {"type": "boolean"}}),
                              "Reconnected, or already connected"),
                          **_errors(401, 403, 404, 409, 502, 503)},
        }},
        "/v1/admin/workspaces/{ref}/subscription": {"post": {
            "summary": "Set or clear the subscription plan", "operationId": "adminSubscription",
            "security": admin, "parameters": [_ref_param()],
            "requestBody": _body(_obj(["plan"], {"plan": _nullable(_S)})),
            "responses": {"200": _json(_ref("Workspace"), "The workspace"),
                          **_errors(400, 401, 403, 404, 409)},
        }},
    }
    for path, item in platform_openapi.paths().items():
        paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.0.3",
        "info": {"title": "orgsync", "version": "1.0.0",
                 "description": "Mirrors GitHub organizations and GitLab top-level groups into "
                                "provider workspaces."},
        "paths": paths,
        "components": {
            "schemas": {**SCHEMAS, **platform_openapi.SCHEMAS},
            "securitySchemes": {
                "serviceToken": {"type": "http", "scheme": "bearer",
                                 "description": "ORGSYNC_SERVICE_TOKEN"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "ORGSYNC_ADMIN_TOKEN"},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "ORGSYNC_METRICS_TOKEN (only when it is set)"},
                "oidcToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                              "description": "A CI OIDC token, instead of the body's token field"},
            },
        },
    }
