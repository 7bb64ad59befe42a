"""Store side of GitHub App installation discovery and reconciliation.

The ETag cache of ``GET /app/installations`` (one row per page URL) and the
per-org "last asked" time. The sync engine (sync/installations.py) decides;
these functions only read and write rows.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models.activity import log_activity
from models.tables import Activity, AppInstallationPage, Workspace, as_utc, utcnow

# (etag, compact payload) per page URL.
CachedPages = dict[str, tuple[str, list[Any]]]


def load_installation_pages(session: Session) -> CachedPages:
    rows = session.execute(
        select(AppInstallationPage.url, AppInstallationPage.etag, AppInstallationPage.payload)
    )
    return {url: (etag, payload or []) for url, etag, payload in rows}


def save_installation_pages(session: Session, pages: CachedPages, *, keep_only: Iterable[str] | None = None) -> None:
    """Write fetched pages; ``keep_only`` (a complete walk) drops every page
    URL the walk no longer reached (the app lost installations)."""
    for url, (etag, payload) in pages.items():
        row = session.get(AppInstallationPage, url)
        if row is None:
            session.add(AppInstallationPage(url=url, etag=etag, payload=payload, updated_at=utcnow()))
        else:
            row.etag, row.payload, row.updated_at = etag, payload, utcnow()
    if keep_only is not None:
        kept = list(keep_only)
        session.execute(delete(AppInstallationPage).where(AppInstallationPage.url.not_in(kept or [""])))
    session.flush()


def github_workspaces(session: Session) -> list[Workspace]:
    """Every GitHub provider workspace, connected or not, oldest first."""
    return list(
        session.scalars(
            select(Workspace)
            .where(Workspace.kind == "provider", Workspace.provider == "github")
            .order_by(Workspace.created_at, Workspace.id)
        )
    )


def last_disconnect_reason(session: Session, workspace_id: str) -> str | None:
    """Why the workspace was last disconnected ("operator", "app_uninstalled",
    "org_deleted", "group_deleted"): only an operator undoes an operator's."""
    details = session.scalar(
        select(Activity.details)
        .where(Activity.workspace_id == workspace_id, Activity.action == "workspace.disconnected")
        .order_by(Activity.seq.desc()).limit(1)
    )
    reason = (details or {}).get("reason")
    return reason if isinstance(reason, str) else None


def mark_checked(session: Session, ws: Workspace, at: datetime | None = None) -> None:
    ws.installation_checked_at = at or utcnow()
    session.flush()


def checked_since(ws: Workspace, since: datetime) -> bool:
    checked = as_utc(ws.installation_checked_at)
    return checked is not None and checked >= since


def set_installation(session: Session, ws: Workspace, installation_id: int | None, *, actor: str) -> bool:
    """Point the workspace at the installation GitHub reports now (never at a
    payload's). Returns whether anything changed."""
    if ws.installation_id == installation_id and (
        ws.link_status == "ok" if installation_id is not None else ws.link_status == "no_installation"
    ):
        return False
    old = ws.installation_id
    ws.installation_id = installation_id
    if installation_id is not None:
        ws.link_status, ws.link_error = "ok", None
    else:
        ws.link_status, ws.link_error = "no_installation", None
    session.flush()
    if old != installation_id:
        log_activity(session, ws.id, actor, "workspace.installation_changed", ws.name,
                     {"from": old, "to": installation_id})
    return True
