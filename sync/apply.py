"""Applying plans to the store, and the ETag page cache.

Everything here takes the caller's Session and never commits: the caller's
``with ctx.session()`` block is the one transaction in which a plan, its
activity entries and its sync-run record land together (or not at all).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from models import store
from models.store import ActivityEntry
from models.tables import Workspace
from sync.providers.base import CachedPage, ProviderMember
from sync.roster import Plan


def apply_plan(session: Session, ws: Workspace, plan: Plan, *, actor: str,
               defer_activity: list[ActivityEntry] | None = None) -> tuple[int, int, int]:
    """Write the plan with bulk statements; (added, removed, changed).

    The store logs one activity entry per change and hands ownership on when
    the owner is among the removals. ``defer_activity``: see
    ``store.apply_roster_changes`` (a sync passes the entries left in it to
    ``finish_run``).
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
        defer_activity=defer_activity,
    )


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
        self._dirty: store.RosterPages = {}

    @classmethod
    def load(cls, session: Session, workspace_id: str) -> DbPageCache:
        return cls(workspace_id, store.cached_roster_pages(session, workspace_id))

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
        store.save_roster_pages(session, self.workspace_id, self._dirty, drop=gone)
        self._known = (self._known - gone) | set(self._dirty)
        self._dirty.clear()
