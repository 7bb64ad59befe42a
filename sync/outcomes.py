"""The JSON a delivery's outcome stores for the typed results of the sync
use cases: sync/events.py and sync/batch.py write outcomes, and this module
is the one place the shape of a run, a workspace or a reconnection inside
them is written. Operators read outcomes back unchanged (``GET
/v1/admin/deliveries``, ``orgsync deliveries``), so the shape stays the one
stored rows already have."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from models.store import RunResult, UserRef, WorkspaceView
from sync.installations import Reconnection

# The part of a run a batch's deliveries keep (one run answers many hints).
_SUMMARY = ("id", "kind", "result", "added", "removed", "changed", "api_calls")


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def user_ref(u: UserRef | None) -> dict[str, Any] | None:
    return {"id": u.id, "username": u.username} if u else None


def run(r: RunResult) -> dict[str, Any]:
    """A sync run a delivery ran inline (``"sync"``, ``"syncs"``)."""
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


def run_summary(r: RunResult) -> dict[str, Any]:
    """The run that answered a batch of hints, in each of its deliveries."""
    full = run(r)
    return {k: full[k] for k in _SUMMARY}


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
        "owner": user_ref(w.owner),
        "subscription": w.subscription,
    }


def reconnection(r: Reconnection) -> dict[str, Any]:
    return {"result": r.result, "workspace": workspace(r.workspace), "full_sync_queued": r.full_sync_queued}
