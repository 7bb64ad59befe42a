"""Provider rosters: the members of a provider org as the store holds them,
keyed by the provider's numeric user id, and the ETag cache of their pages.

Changes go through ``apply_roster_changes`` with bulk statements and one
activity entry each.

Callers pass a Session; functions flush but never commit, so a caller's whole
unit of work (the change and its activity entries) is one transaction.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from models.activity import ActivityEntry, log_activities
from models.base import dialect_insert
from models.errors import InvalidState
from models.identities import member_subjects
from models.ownership import hand_on_ownership
from models.tables import HttpCacheEntry, RosterEntry, Workspace, utcnow


@dataclass(frozen=True, slots=True)
class StoredMember:
    """One roster entry as the store holds it (the one stored-member type)."""

    provider_user_id: int
    login: str
    role: str  # admin | member | billing


def roster(session: Session, workspace_id: str, only: Iterable[int] | None = None) -> dict[int, StoredMember]:
    """The stored roster in one query, or only the members in ``only``.

    Plain tuples, no ORM objects: a 100k-member roster stays small.
    """
    q = select(RosterEntry.provider_user_id, RosterEntry.login, RosterEntry.role).where(
        RosterEntry.workspace_id == workspace_id
    )
    if only is not None:
        q = q.where(RosterEntry.provider_user_id.in_(list(only)))
    return {int(uid): StoredMember(int(uid), login, role) for uid, login, role in session.execute(q)}


def apply_roster_changes(
    session: Session,
    ws: Workspace,
    *,
    adds: Iterable[StoredMember] = (),
    removals: Iterable[int] = (),
    role_changes: Iterable[tuple[StoredMember, str]] = (),
    login_changes: Iterable[StoredMember] = (),
    actor: str,
    extra_activity: Sequence[ActivityEntry] = (),
    defer_activity: list[ActivityEntry] | None = None,
) -> tuple[int, int, int]:
    """Apply roster changes with bulk statements and one activity entry each.

    ``role_changes`` pairs the new row with the old role. Returns
    (added, removed, changed). Ownership passes on if the owner left.

    ``defer_activity``: when no ownership can pass on (no removal, no role
    change), the entries are appended to this list instead of written, for
    the caller to write in the same transaction with its own (a sync run's
    ``finish_run``): one counter update and one insert for both. Otherwise
    they are written here, before any ownership entry, as always.
    """
    if ws.kind != "provider":
        raise InvalidState("only provider workspaces have a provider roster")
    now = utcnow()
    adds = _dedupe(adds)
    role_changes_l = list({row.provider_user_id: (row, old) for row, old in role_changes}.values())
    removals_l = sorted(set(removals))
    logins_l = _dedupe(login_changes)
    entries: list[ActivityEntry] = list(extra_activity)
    chunk = 2000
    touched = [r.provider_user_id for r in adds] + removals_l + [r.provider_user_id for r, _ in role_changes_l]
    subjects = member_subjects(session, str(ws.provider), touched)
    # A removed member's login is read before its row goes.
    removed_logins = roster_logins(session, ws.id, removals_l)
    if adds:
        rows = [
            {"workspace_id": ws.id, "provider_user_id": r.provider_user_id, "login": r.login,
             "role": r.role, "since": now, "updated_at": now}
            for r in adds
        ]
        for i in range(0, len(rows), chunk):
            session.execute(insert(RosterEntry), rows[i : i + chunk])
        entries.extend(
            ActivityEntry(ws.id, actor, "member.added", subjects[r.provider_user_id],
                          {"provider_user_id": r.provider_user_id, "login": r.login, "role": r.role})
            for r in adds
        )
    if removals_l:
        for i in range(0, len(removals_l), chunk):
            session.execute(
                delete(RosterEntry).where(
                    RosterEntry.workspace_id == ws.id,
                    RosterEntry.provider_user_id.in_(removals_l[i : i + chunk]),
                )
            )
        entries.extend(
            ActivityEntry(ws.id, actor, "member.removed", subjects[uid],
                          {"provider_user_id": uid, "login": removed_logins.get(uid)})
            for uid in removals_l
        )
    if role_changes_l:
        by_role: dict[str, list[int]] = {}
        for row, _old in role_changes_l:
            by_role.setdefault(row.role, []).append(row.provider_user_id)
        for role, ids in by_role.items():
            for i in range(0, len(ids), chunk):
                session.execute(
                    update(RosterEntry)
                    .where(RosterEntry.workspace_id == ws.id,
                           RosterEntry.provider_user_id.in_(ids[i : i + chunk]))
                    .values(role=role, updated_at=now)
                )
        entries.extend(
            ActivityEntry(ws.id, actor, "member.role_changed", subjects[row.provider_user_id],
                          {"provider_user_id": row.provider_user_id, "login": row.login, "from": old, "to": row.role})
            for row, old in role_changes_l
        )
    for row in logins_l:
        # Logins are labels; access is keyed by the numeric id and stays.
        session.execute(
            update(RosterEntry)
            .where(RosterEntry.workspace_id == ws.id, RosterEntry.provider_user_id == row.provider_user_id)
            .values(login=row.login, updated_at=now)
        )
    if defer_activity is not None and not (removals_l or role_changes_l):
        defer_activity.extend(entries)
    else:
        log_activities(session, entries)
    session.flush()
    if removals_l or role_changes_l:
        hand_on_ownership(session, ws, actor=actor)
    return len(adds), len(removals_l), len(role_changes_l)


def roster_logins(session: Session, workspace_id: str, provider_user_ids: Sequence[int]) -> dict[int, str]:
    """The stored login of each of these members who is in the roster."""
    provider_user_ids = list(provider_user_ids)
    logins: dict[int, str] = {}
    for i in range(0, len(provider_user_ids), 2000):
        logins.update(session.execute(
            select(RosterEntry.provider_user_id, RosterEntry.login)
            .where(RosterEntry.workspace_id == workspace_id,
                   RosterEntry.provider_user_id.in_(provider_user_ids[i : i + 2000]))
        ).tuples().all())
    return logins


def relabel_member(session: Session, provider: str, provider_user_id: int, login: str) -> None:
    """A member's new login, in the roster of every workspace of the provider
    (logins are labels; entries stay keyed by the numeric id)."""
    session.execute(
        update(RosterEntry)
        .where(
            RosterEntry.provider_user_id == provider_user_id,
            RosterEntry.workspace_id.in_(select(Workspace.id).where(Workspace.provider == provider)),
        )
        .values(login=login)
    )


def roster_count(session: Session, workspace_id: str) -> int:
    return int(session.scalar(
        select(func.count()).select_from(RosterEntry).where(RosterEntry.workspace_id == workspace_id)
    ) or 0)


def roster_workspace_ids(session: Session, provider: str, provider_user_id: int) -> list[str]:
    """The provider's workspaces whose roster lists the member, by workspace id."""
    return list(session.scalars(
        select(RosterEntry.workspace_id)
        .join(Workspace, Workspace.id == RosterEntry.workspace_id)
        .where(Workspace.provider == provider, RosterEntry.provider_user_id == provider_user_id)
        .order_by(RosterEntry.workspace_id)
    ))


def roster_login(session: Session, provider_user_id: int, workspace_ids: Sequence[str]) -> str | None:
    """The member's login as one of these workspaces' rosters stores it."""
    return session.scalar(select(RosterEntry.login).where(
        RosterEntry.provider_user_id == provider_user_id, RosterEntry.workspace_id.in_(list(workspace_ids))
    ).limit(1))


@dataclass(frozen=True, slots=True)
class MemberWorkspace:
    """A provider workspace whose roster lists a member, with the member's stored login."""

    workspace_id: str
    org_id: int | None
    org_login: str | None
    installation_id: int | None
    link_status: str
    status: str
    login: str


def member_workspaces(
    session: Session, provider: str, provider_user_id: int, *, except_org_ids: Iterable[int] = ()
) -> list[MemberWorkspace]:
    """The provider workspaces whose roster lists the member, but for the orgs
    in ``except_org_ids``, by org id."""
    excluded = list(except_org_ids) or [-1]
    rows = session.execute(
        select(Workspace.id, Workspace.provider_org_id, Workspace.provider_org_login,
               Workspace.installation_id, Workspace.link_status, Workspace.status, RosterEntry.login)
        .join(RosterEntry, RosterEntry.workspace_id == Workspace.id)
        .where(
            Workspace.provider == provider,
            Workspace.kind == "provider",
            RosterEntry.provider_user_id == provider_user_id,
            Workspace.provider_org_id.not_in(excluded),
        )
        .order_by(Workspace.provider_org_id)
    )
    return [MemberWorkspace(*row) for row in rows]


# The ETag cache of a workspace's roster pages: {url: (etag, [[id, login, role], ...])}.
RosterPages = dict[str, tuple[str, list[Any]]]


def cached_roster_pages(session: Session, workspace_id: str) -> RosterPages:
    rows = session.execute(
        select(HttpCacheEntry.url, HttpCacheEntry.etag, HttpCacheEntry.payload).where(
            HttpCacheEntry.workspace_id == workspace_id
        )
    )
    return {url: (etag, payload or []) for url, etag, payload in rows}


def save_roster_pages(session: Session, workspace_id: str, pages: RosterPages, *, drop: Iterable[str] = ()) -> None:
    """Store these pages (replacing their old copies: one upsert) and forget
    the pages in ``drop``."""
    doomed = sorted(set(drop) - set(pages))
    for i in range(0, len(doomed), 500):
        session.execute(
            delete(HttpCacheEntry).where(
                HttpCacheEntry.workspace_id == workspace_id,
                HttpCacheEntry.url.in_(doomed[i : i + 500]),
            )
        )
    now = utcnow()
    rows = [
        {"workspace_id": workspace_id, "url": url, "etag": etag[:255], "payload": payload, "updated_at": now}
        for url, (etag, payload) in pages.items()
        if len(url) <= 1000
    ]
    # Pages are small (100 members); a few hundred per statement.
    upsert = dialect_insert(session, HttpCacheEntry)
    upsert = upsert.on_conflict_do_update(
        index_elements=["workspace_id", "url"],
        set_={"etag": upsert.excluded.etag, "payload": upsert.excluded.payload,
              "updated_at": upsert.excluded.updated_at},
    )
    for i in range(0, len(rows), 200):
        session.execute(upsert, rows[i : i + 200])


def _dedupe(rows: Iterable[StoredMember]) -> list[StoredMember]:
    # PostgreSQL rejects a bulk statement that touches one row twice.
    return list({r.provider_user_id: r for r in rows}.values())
