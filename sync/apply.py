"""Applying plans to the store, recording sync runs, and the ETag page cache.

Everything here takes the caller's Session and never commits: the caller's
``with ctx.session()`` block is the one transaction in which a plan, its
activity entries and its sync-run record land together (or not at all).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from models import store
from models.errors import WorkspaceNotFound
from models.tables import HttpCacheEntry, SyncRun, Workspace, utcnow
from sync.providers.base import CachedPage, ProviderMember
from sync.roster import Plan

# Bulk statements are chunked so that a 100,000-member roster is a few dozen
# statements, well below SQLite's and PostgreSQL's bound-parameter limits.
_CHUNK = 2000


def lock_workspace(session: Session, workspace_id: str) -> Workspace:
    """Load the workspace with a row lock (PostgreSQL; SQLite locks on write).

    Full, member and login syncs of one org apply under this lock, so two of
    them cannot each plan against a roster the other is changing.
    """
    # Lock with a plain column select: the mapped Workspace eager-joins its
    # owner, and PostgreSQL refuses FOR UPDATE on an outer join's nullable side.
    session.execute(
        select(Workspace.id).where(Workspace.id == workspace_id).with_for_update()
    ).first()
    ws = session.get(Workspace, workspace_id, populate_existing=True)
    if ws is None:
        raise WorkspaceNotFound(f"no workspace {workspace_id!r}")
    return ws


def apply_plan(session: Session, ws: Workspace, plan: Plan, *, actor: str) -> tuple[int, int, int]:
    """Write the plan with bulk statements; (added, removed, changed).

    The store logs one activity entry per change and hands ownership on when
    the owner is among the removals.
    """
    if plan.empty:
        return 0, 0, 0
    return store.apply_roster_changes(
        session,
        ws,
        adds=list(plan.adds),
        removals=plan.removals,
        role_changes=[(c.member, c.old_role) for c in plan.role_changes],
        login_changes=list(plan.login_changes),
        actor=actor,
    )


# --------------------------------------------------------------------------- sync runs


def open_run(
    session: Session, ws: Workspace, *, kind: str, trigger: str, forced: bool = False
) -> SyncRun:
    run = SyncRun(
        workspace_id=ws.id,
        kind=kind,
        trigger=trigger[:255],
        forced=forced,
        result="running",
        started_at=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


@dataclass
class RunOutcome:
    result: str  # ok | held | failed | rate_limited | auth_broken | skipped
    added: int = 0
    removed: int = 0
    changed: int = 0
    api_calls: int = 0
    not_modified: int = 0
    error: str | None = None
    details: dict[str, Any] | None = None


def finish_run(session: Session, run_id: int, outcome: RunOutcome) -> SyncRun:
    """Record how a run ended, with its ``sync.finished``/``sync.held`` entry.

    Skipped runs get no activity entry: nothing was attempted, and a
    disconnected org resynced every few hours would otherwise flood the
    change feed with no-ops.
    """
    run = session.get(SyncRun, run_id, populate_existing=True)
    if run is None:  # the workspace was deleted while we read the provider
        raise WorkspaceNotFound(f"sync run {run_id} is gone (workspace deleted)")
    run.result = outcome.result
    run.finished_at = utcnow()
    run.added, run.removed, run.changed = outcome.added, outcome.removed, outcome.changed
    run.api_calls, run.not_modified = outcome.api_calls, outcome.not_modified
    run.error = outcome.error[:2000] if outcome.error else None
    run.details = outcome.details or {}
    session.flush()
    if outcome.result != "skipped":
        action = "sync.held" if outcome.result == "held" else "sync.finished"
        store.log_activity(
            session,
            run.workspace_id,
            f"sync:{run.id}",
            action,
            run.kind,
            {
                "run": run.id,
                "kind": run.kind,
                "trigger": run.trigger,
                "result": run.result,
                "forced": run.forced,
                "added": run.added,
                "removed": run.removed,
                "changed": run.changed,
                "api_calls": run.api_calls,
                "not_modified": run.not_modified,
                "error": run.error,
                **(outcome.details or {}),
            },
        )
    return run


# --------------------------------------------------------------------------- page cache


class DbPageCache:
    """The ``PageCache`` of one workspace, backed by ``http_cache``.

    Loaded with one query before the roster walk and written back with bulk
    statements in the transaction that records the run, so the walk itself
    holds no database connection. Any worker can then send ``If-None-Match``
    for a page another worker fetched. Entries are popped as they are used,
    so a page's cached content is held only until the walk reaches it.

    The payload is compact (``[[id, login, role], ...]``); a 304 page is
    answered from it, so an unchanged org is planned against its real
    content, never treated as "no members".
    """

    def __init__(self, workspace_id: str, entries: dict[str, tuple[str, list[Any]]]) -> None:
        self.workspace_id = workspace_id
        self._entries = entries
        self._known = set(entries)
        self._visited: set[str] = set()
        self._dirty: dict[str, tuple[str, list[list[Any]]]] = {}

    @classmethod
    def load(cls, session: Session, workspace_id: str) -> DbPageCache:
        rows = session.execute(
            select(HttpCacheEntry.url, HttpCacheEntry.etag, HttpCacheEntry.payload).where(
                HttpCacheEntry.workspace_id == workspace_id
            )
        )
        return cls(workspace_id, {url: (etag, payload or []) for url, etag, payload in rows})

    def get(self, url: str) -> CachedPage | None:
        self._visited.add(url)
        entry = self._entries.pop(url, None)
        if entry is None:
            return None
        etag, payload = entry
        try:
            members = [
                ProviderMember(int(uid), str(login), role, raw_role=role or "")
                for uid, login, role in payload
            ]
        except (TypeError, ValueError):
            # A row we cannot read back: ask without If-None-Match instead of
            # trusting it (a wrong cached page would plan wrong removals).
            return None
        return CachedPage(etag=etag, members=members)

    def put(self, url: str, page: CachedPage) -> None:
        self._visited.add(url)
        self._dirty[url] = (
            page.etag,
            [[m.provider_user_id, m.login, m.role] for m in page.members],
        )

    def flush(self, session: Session, *, prune: bool) -> None:
        """Write fetched pages; with ``prune`` (a complete walk) also drop the
        pages the walk no longer visits (the org shrank or was renamed)."""
        gone = (self._known - self._visited) if prune else set()
        doomed = sorted(set(self._dirty) | gone)
        for i in range(0, len(doomed), _CHUNK // 4):
            session.execute(
                delete(HttpCacheEntry).where(
                    HttpCacheEntry.workspace_id == self.workspace_id,
                    HttpCacheEntry.url.in_(doomed[i : i + _CHUNK // 4]),
                )
            )
        now = utcnow()
        rows = [
            {"workspace_id": self.workspace_id, "url": url, "etag": etag[:255],
             "payload": payload, "updated_at": now}
            for url, (etag, payload) in self._dirty.items()
            if len(url) <= 1000
        ]
        # Pages are small (100 members); a few hundred per statement.
        for i in range(0, len(rows), 200):
            session.execute(insert(HttpCacheEntry), rows[i : i + 200])
        self._known = (self._known - gone) | set(self._dirty)
        self._dirty.clear()

