"""The JSON both edges write for what the use cases return: the web layer's
response bodies (webhooks/serialize.py) and the CLI's ``--json``
(worker/cli/serialize.py) print the same documents, so they are written
once, here. A sync run, a workspace and a reconnection are the shapes a
delivery's stored outcome already holds (sync/outcomes.py), so they are
those. No edge reads a use case's result by key."""
from __future__ import annotations

from typing import Any

from models.deliveries import DeliveryView
from models.managed import InvitationView
from models.store import ActivityView, WorkspaceName
from models.users import UserView, WorkspacesOfUser
from runtime.operations import HeldSync, QueuedSync, Replay, StatusReport, WorkspaceStatus
from sync.outcomes import iso, reconnection, run, user_ref, workspace

__all__ = [
    "activity", "delivery", "invitation", "iso", "name", "queued", "reconnection", "replay", "run", "status",
    "user", "user_ref", "workspace", "workspaces_of_user",
]


def name(w: WorkspaceName) -> dict[str, Any]:
    return {"id": w.id, "name": w.name}


def activity(a: ActivityView) -> dict[str, Any]:
    return {
        "seq": a.seq,
        "at": iso(a.at),
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
        "due_at": iso(d.due_at),
        "leased_until": iso(d.leased_until),
        "outcome": d.outcome,
        "received_at": iso(d.received_at),
        "queued_at": iso(d.queued_at),
        "started_at": iso(d.started_at),
        "processed_at": iso(d.processed_at),
    }


def user(u: UserView) -> dict[str, Any]:
    return {
        "id": u.id,
        "username": u.username,
        "identities": [{"provider": i.provider, "provider_user_id": i.provider_user_id, "login": i.login}
                       for i in u.identities],
        "personal_workspace": name(u.personal_workspace) if u.personal_workspace else None,
    }


def workspaces_of_user(w: WorkspacesOfUser) -> dict[str, Any]:
    return {
        "user": user_ref(w.user),
        "workspaces": [{"id": x.id, "name": x.name, "kind": x.kind, "role": x.role, "status": x.status,
                        "subscription": x.subscription} for x in w.workspaces],
    }


def invitation(inv: InvitationView) -> dict[str, Any]:
    return {"id": inv.id, "workspace": inv.workspace_id, "token": inv.token, "role": inv.role,
            "status": inv.status, "expires_at": iso(inv.expires_at), "created_at": iso(inv.created_at)}


def _workspace_status(st: WorkspaceStatus) -> dict[str, Any]:
    last = st.last_sync
    return {
        **workspace(st.workspace),
        "link_error": st.link_error,
        "last_sync": {**run(last), "at": iso(last.finished_at or last.started_at)} if last else None,
        "installation_id": st.installation_id,
        "installation_checked_at": iso(st.installation_checked_at),
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
