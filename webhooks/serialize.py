"""The API's JSON for what the use cases return: the one place the web layer
turns their typed results (sync runs, workspaces, the operator actions'
answers, a login, a CI tenant, and the store's views: activity entries,
deliveries, users, their workspaces and access, invitations, join requests,
members) into response bodies. Routes call these and
never read a use case's result by key. The CLI has its own
(worker/cli/serialize.py) and prints the same shapes.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from models.deliveries import DeliveryView
from models.managed import InvitationView, JoinRequestView, MemberView
from models.store import ActivityView, RunResult, UserRef, WorkspaceName, WorkspaceView
from models.users import AccessView, UserView, WorkspacesOfUser
from oidc.tenant import Tenant
from runtime.operations import HeldSync, QueuedSync, Replay, StatusReport, WorkspaceStatus
from sync.installations import Reconnection
from sync.login import LoginResult


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _user(u: UserRef | None) -> dict[str, Any] | None:
    return {"id": u.id, "username": u.username} if u else None


def _name(w: WorkspaceName) -> dict[str, Any]:
    return {"id": w.id, "name": w.name}


def activity(a: ActivityView) -> dict[str, Any]:
    return {
        "seq": a.seq,
        "at": _iso(a.at),
        "workspace": a.workspace_id,
        "actor": a.actor,
        "action": a.action,
        "subject": a.subject,
        "details": a.details,
    }


def delivery(d: DeliveryView) -> dict[str, Any]:
    return {
        "id": d.id,
        "provider": d.provider,
        "event": d.event,
        "action": d.action,
        "status": d.status,
        "org": d.org_key,
        "attempts": d.attempts,
        "job": d.job_id,
        "error": d.error,
        "due_at": _iso(d.due_at),
        "leased_until": _iso(d.leased_until),
        "outcome": d.outcome,
        "received_at": _iso(d.received_at),
        "queued_at": _iso(d.queued_at),
        "started_at": _iso(d.started_at),
        "processed_at": _iso(d.processed_at),
    }


def user(u: UserView) -> dict[str, Any]:
    return {
        "id": u.id,
        "username": u.username,
        "identities": [{"provider": i.provider, "provider_user_id": i.provider_user_id, "login": i.login}
                       for i in u.identities],
        "personal_workspace": _name(u.personal_workspace) if u.personal_workspace else None,
    }


def workspaces_of_user(w: WorkspacesOfUser) -> dict[str, Any]:
    return {
        "user": _user(w.user),
        "workspaces": [{"id": x.id, "name": x.name, "kind": x.kind, "role": x.role, "status": x.status,
                        "subscription": x.subscription} for x in w.workspaces],
    }


def invitation(inv: InvitationView) -> dict[str, Any]:
    return {"id": inv.id, "workspace": inv.workspace_id, "token": inv.token, "role": inv.role,
            "status": inv.status, "expires_at": _iso(inv.expires_at), "created_at": _iso(inv.created_at)}


def signed_up(u: UserView) -> dict[str, Any]:
    """POST /v1/users: the new account and its personal workspace."""
    return {"user": {"id": u.id, "username": u.username},
            "personal_workspace": _name(u.personal_workspace) if u.personal_workspace else None}


def access(a: AccessView) -> dict[str, Any]:
    w = a.workspace
    return {"workspace": {"id": w.id, "name": w.name, "kind": w.kind, "status": w.status,
                          "subscription": w.subscription},
            "user": _user(a.user), "role": a.role, "can_deploy": a.can_deploy}


def join_request(r: JoinRequestView) -> dict[str, Any]:
    return {"id": r.id, "status": r.status, "role": r.role, "workspace": _name(r.workspace),
            "user": _user(r.user), "created_at": _iso(r.created_at), "decided_at": _iso(r.decided_at)}


def member(m: MemberView) -> dict[str, Any]:
    return {"workspace": _name(m.workspace), "user": _user(m.user), "role": m.role}


def run(r: RunResult) -> dict[str, Any]:
    return {
        "id": r.id,
        "workspace": r.workspace_id,
        "kind": r.kind,
        "trigger": r.trigger,
        "result": r.result,
        "forced": r.forced,
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "added": r.added,
        "removed": r.removed,
        "changed": r.changed,
        "api_calls": r.api_calls,
        "not_modified": r.not_modified,
        "error": r.error,
        "details": r.details,
    }


def workspace(w: WorkspaceView) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "kind": w.kind,
        "provider": w.provider,
        "provider_org_id": w.provider_org_id,
        "provider_org_login": w.provider_org_login,
        "reference": w.reference,
        "status": w.status,
        "link": w.link,
        "owner": _user(w.owner),
        "subscription": w.subscription,
    }


def _workspace_status(st: WorkspaceStatus) -> dict[str, Any]:
    last = st.last_sync
    return {
        **workspace(st.workspace),
        "link_error": st.link_error,
        "last_sync": {**run(last), "at": _iso(last.finished_at or last.started_at)} if last else None,
        "installation_id": st.installation_id,
        "installation_checked_at": _iso(st.installation_checked_at),
    }


def _held(h: HeldSync) -> dict[str, Any]:
    return {"workspace": h.workspace_id, "name": h.name, "run": h.run_id, "reason": h.reason}


def status(report: StatusReport) -> dict[str, Any]:
    d = report.deliveries
    out: dict[str, Any] = {
        "workspaces": [_workspace_status(w) for w in report.workspaces],
        "held": [_held(h) for h in report.held],
        "deliveries": {"pending": d.pending, "failed": d.failed, "deferred": d.deferred,
                       "retrying": d.retrying, "by_status": d.by_status},
        "full_syncs_owed": report.full_syncs_owed,
        "queues": report.queues,
    }
    if report.queues_error is not None:
        out["queues_error"] = report.queues_error
    return out


def queued(q: QueuedSync) -> dict[str, Any]:
    return {"workspace": q.workspace_id, "job": q.job}


def replay(r: Replay) -> dict[str, Any]:
    return {"delivery": r.delivery_id, "status": r.status, "job": r.job}


def reconnection(r: Reconnection) -> dict[str, Any]:
    return {"result": r.result, "workspace": workspace(r.workspace), "full_sync_queued": r.full_sync_queued}


def login(r: LoginResult) -> dict[str, Any]:
    return {
        "user": _user(r.user),
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

