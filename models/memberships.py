"""Who is in a workspace: invitations and direct memberships of managed
workspaces, and the effective members and roles of every kind.

Callers pass a Session; functions flush but never commit, so a caller's whole
unit of work (the change and its activity entries) is one transaction.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from models.activity import log_activity
from models.errors import CannotInvite, InvalidState
from models.tables import Identity, Invitation, Membership, RosterEntry, User, Workspace
from models.workspaces import get_workspace


def invite(session: Session, ws: Workspace, user: User, *, role: str = "member", actor: str = "operator") -> Invitation:
    if ws.kind == "personal":
        raise CannotInvite("a personal workspace cannot have other members")
    if ws.kind == "provider":
        raise CannotInvite(
            f"members of {ws.name!r} come from {ws.provider}; add them to the org there instead"
        )
    if role not in ("admin", "member", "billing"):
        raise InvalidState(f"unknown role {role!r}")
    if session.get(Membership, (ws.id, user.id)) is not None:
        raise InvalidState(f"{user.username} is already a member of {ws.name!r}")
    inv = Invitation(workspace_id=ws.id, user_id=user.id, role=role, status="invited")
    session.add(inv)
    session.flush()
    log_activity(session, ws.id, actor, "member.invited", user.id, {"role": role, "invitation": inv.id})
    return inv


def request_join(session: Session, invitation: Invitation, *, actor: str) -> None:
    if invitation.status != "invited":
        raise InvalidState(f"invitation {invitation.id} is {invitation.status}")
    invitation.status = "requested"
    session.flush()


def decide_invitation(session: Session, invitation: Invitation, approve: bool, *, actor: str = "operator") -> None:
    if invitation.status not in ("invited", "requested"):
        raise InvalidState(f"invitation {invitation.id} is {invitation.status}")
    ws = get_workspace(session, invitation.workspace_id)
    if ws.kind != "managed":
        raise CannotInvite(f"{ws.name!r} takes no invitations")
    invitation.status = "approved" if approve else "denied"
    if approve:
        session.add(Membership(workspace_id=ws.id, user_id=invitation.user_id, role=invitation.role))
        session.flush()
        log_activity(session, ws.id, actor, "member.added", invitation.user_id, {"role": invitation.role})
    else:
        session.flush()
        log_activity(session, ws.id, actor, "member.denied", invitation.user_id, {})


def members(session: Session, ws: Workspace) -> list[dict[str, Any]]:
    """Effective members as the API shows them.

    Provider workspaces: every roster entry, with its account when the member
    has one (``user: null`` and no access otherwise). The owner is listed with
    role owner. A disconnected workspace gives roster members no access; the
    owner keeps it.
    """
    out: list[dict[str, Any]] = []
    owner = session.get(User, ws.owner_id) if ws.owner_id else None
    if ws.kind == "provider":
        rows = session.execute(
            select(RosterEntry, User)
            .outerjoin(
                Identity,
                and_(Identity.provider == ws.provider,
                     Identity.provider_user_id == RosterEntry.provider_user_id),
            )
            .outerjoin(User, User.id == Identity.user_id)
            .where(RosterEntry.workspace_id == ws.id)
            .order_by(RosterEntry.login)
        )
        owner_listed = False
        for entry, user in rows:
            is_owner = user is not None and user.id == ws.owner_id
            owner_listed = owner_listed or is_owner
            access = user is not None and (is_owner or ws.status == "active")
            out.append({
                "user": {"id": user.id, "username": user.username} if user else None,
                "provider_user_id": entry.provider_user_id,
                "login": entry.login,
                "role": "owner" if is_owner else entry.role,
                "source": "provider",
                "access": access,
            })
        if owner is not None and not owner_listed:
            ident = next((i for i in owner.identities if i.provider == ws.provider), None)
            out.insert(0, {
                "user": {"id": owner.id, "username": owner.username},
                "provider_user_id": ident.provider_user_id if ident else None,
                "login": ident.login if ident else owner.username,
                "role": "owner",
                "source": "owner",
                "access": True,
            })
        return out
    rows2 = session.execute(
        select(Membership, User).join(User, User.id == Membership.user_id)
        .where(Membership.workspace_id == ws.id).order_by(User.username_lower)
    )
    for m, user in rows2:
        out.append({
            "user": {"id": user.id, "username": user.username},
            "provider_user_id": None,
            "login": user.username,
            "role": m.role,
            "source": "direct",
            "access": True,
        })
    return out


def role_in(session: Session, ws: Workspace, user: User) -> str | None:
    """The user's effective role in the workspace, or None for no access."""
    if ws.owner_id == user.id:
        return "owner"
    if ws.kind != "provider":
        m = session.get(Membership, (ws.id, user.id))
        return m.role if m else None
    if ws.status != "active":
        return None
    ident = next((i for i in user.identities if i.provider == ws.provider), None)
    if ident is None:
        return None
    entry = session.get(RosterEntry, (ws.id, ident.provider_user_id))
    return entry.role if entry else None


def user_workspaces(session: Session, user: User) -> list[tuple[Workspace, str]]:
    """Every workspace the user can reach, with their role."""
    found: dict[str, Workspace] = {}
    for ws in session.scalars(select(Workspace).where(Workspace.owner_id == user.id)):
        found[ws.id] = ws
    for ws in session.scalars(
        select(Workspace).join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user.id)
    ):
        found[ws.id] = ws
    for ident in user.identities:
        for ws in session.scalars(
            select(Workspace).join(RosterEntry, RosterEntry.workspace_id == Workspace.id).where(
                Workspace.provider == ident.provider,
                RosterEntry.provider_user_id == ident.provider_user_id,
            )
        ):
            found[ws.id] = ws
    out = []
    for ws in sorted(found.values(), key=lambda w: (w.kind != "personal", w.name_lower)):
        role = role_in(session, ws, user)
        if role is not None:
            out.append((ws, role))
    return out
