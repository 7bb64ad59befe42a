"""The API's JSON for what the use cases return: routes call these and never
read a use case's result by key. The shapes the CLI prints too (sync runs,
workspaces, the operator actions' answers, activity entries, deliveries,
users, their workspaces, invitations) are written once in
runtime/serialize.py; the bodies only the API answers with (a sign-up,
access, join requests, members, a login, a CI tenant) are here.
"""
from __future__ import annotations

from typing import Any

from models.managed import JoinRequestView, MemberView
from models.users import AccessView, UserView
from oidc.tenant import Tenant
from runtime.serialize import (
    activity,
    delivery,
    invitation,
    iso,
    name,
    queued,
    reconnection,
    replay,
    run,
    status,
    user,
    user_ref,
    workspace,
    workspaces_of_user,
)
from sync.login import LoginResult

__all__ = [
    "access", "activity", "delivery", "invitation", "join_request", "login", "member", "queued", "reconnection",
    "replay", "run", "signed_up", "status", "tenant", "user", "workspace", "workspaces_of_user",
]


def signed_up(u: UserView) -> dict[str, Any]:
    """POST /v1/users: the new account and its personal workspace."""
    return {"user": {"id": u.id, "username": u.username},
            "personal_workspace": name(u.personal_workspace) if u.personal_workspace else None}


def access(a: AccessView) -> dict[str, Any]:
    w = a.workspace
    return {"workspace": {"id": w.id, "name": w.name, "kind": w.kind, "status": w.status,
                          "subscription": w.subscription},
            "user": user_ref(a.user), "role": a.role, "can_deploy": a.can_deploy}


def join_request(r: JoinRequestView) -> dict[str, Any]:
    return {"id": r.id, "status": r.status, "role": r.role, "workspace": name(r.workspace),
            "user": user_ref(r.user), "created_at": iso(r.created_at), "decided_at": iso(r.decided_at)}


def member(m: MemberView) -> dict[str, Any]:
    return {"workspace": name(m.workspace), "user": user_ref(m.user), "role": m.role}


def login(r: LoginResult) -> dict[str, Any]:
    return {
        "user": user_ref(r.user),
        "workspaces": [{"id": w.id, "name": w.name, "kind": w.kind, "role": w.role} for w in r.workspaces],
    }


def tenant(t: Tenant) -> dict[str, Any]:
    return {
        "workspace": workspace(t.workspace),
        "provider": t.provider,
        "owner": {"login": t.owner_login, "id": t.owner_id},
        "repository": t.repository,
        "subject": t.subject,
    }
