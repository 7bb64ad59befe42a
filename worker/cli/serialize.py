"""The CLI's JSON for what the use cases return: the one place the CLI turns
their typed results (sync runs, workspaces, the operator actions' answers,
and the store's views: activity entries, deliveries, users, their workspaces,
invitations) into what ``--json`` prints. ``output.emit`` passes every document through
``to_json``; the shapes are the API's bodies (webhooks/serialize.py)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from models.deliveries import DeliveryView
from models.managed import InvitationView
from models.store import ActivityView, RunResult, UserRef, WorkspaceName, WorkspaceView
from models.users import UserView, WorkspacesOfUser
from runtime.operations import HeldSync, QueuedSync, Replay, StatusReport, WorkspaceStatus
from sync.installations import Reconnection


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _user(u: UserRef | None) -> dict[str, Any] | None:
    return {"id": u.id, "username": u.username} if u else None


def _name(w: WorkspaceName) -> dict[str, Any]:
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
            "status": inv.status, "expires_at": iso(inv.expires_at), "created_at": iso(inv.created_at)}


def run(r: RunResult) -> dict[str, Any]:
    return {
        "id": r.id,
        "workspace": r.workspace_id,
        "kind": r.kind,
        "trigger": r.trigger,
        "result": r.result,
        "forced": r.forced,
        "started_at": iso(r.started_at),
        "finished_at": iso(r.finished_at),
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


def reconnection(r: Reconnection) -> dict[str, Any]:
    return {"result": r.result, "workspace": workspace(r.workspace), "full_sync_queued": r.full_sync_queued}


def to_json(value: object) -> Any:
    """A typed result's JSON; dicts, lists and tuples are walked, so a
    command's document may hold typed results anywhere; other values pass
    through."""
    if isinstance(value, RunResult):
        return run(value)
    if isinstance(value, WorkspaceView):
        return workspace(value)
    if isinstance(value, StatusReport):
        return status(value)
    if isinstance(value, QueuedSync):
        return queued(value)
    if isinstance(value, Replay):
        return replay(value)
    if isinstance(value, Reconnection):
        return reconnection(value)
    if isinstance(value, ActivityView):
        return activity(value)
    if isinstance(value, DeliveryView):
        return delivery(value)
    if isinstance(value, UserView):
        return user(value)
    if isinstance(value, WorkspacesOfUser):
        return workspaces_of_user(value)
    if isinstance(value, InvitationView):
        return invitation(value)
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value
