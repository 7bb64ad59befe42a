"""Who owns a workspace, and how ownership passes on (SPEC section 3).

The owner is also the billing contact. ``set_owner`` is the store's one way to
change an owner; outside the store, an operator's change goes through
``transfer_ownership``, which checks that the new owner is a member.

Callers pass a Session; functions flush but never commit, so a caller's whole
unit of work (the change and its activity entries) is one transaction.
"""
from __future__ import annotations

from sqlalchemy import and_, delete, select
from sqlalchemy.orm import Session

from models.activity import log_activity
from models.errors import InvalidTransfer
from models.tables import Activity, Identity, Membership, RosterEntry, User, Workspace


def claim_pending_ownership(session: Session, user: User, actor: str) -> None:
    """The user who installed the app before having an account becomes owner now."""
    for ident in user.identities:
        rows = session.scalars(
            select(Workspace).where(
                Workspace.provider == ident.provider,
                Workspace.pending_owner_provider_user_id == ident.provider_user_id,
                Workspace.owner_id.is_(None),
            )
        )
        for ws in rows:
            ws.pending_owner_provider_user_id = None
            set_owner(session, ws, user.id, actor, reason="connected")


def set_owner(session: Session, ws: Workspace, user_id: str | None, actor: str, *, reason: str) -> None:
    old = ws.owner_id
    if old == user_id:
        return
    ws.owner_id = user_id
    ws.billing_user_id = user_id  # the billing contact follows the owner
    # The eager-loaded relationship still points at the old owner otherwise.
    ws.owner = session.get(User, user_id) if user_id is not None else None
    if ws.kind != "provider":
        if old is not None:
            session.execute(delete(Membership).where(Membership.workspace_id == ws.id, Membership.user_id == old))
        if user_id is not None:
            session.execute(delete(Membership).where(Membership.workspace_id == ws.id, Membership.user_id == user_id))
            session.add(Membership(workspace_id=ws.id, user_id=user_id, role="owner"))
            if old is not None:
                session.add(Membership(workspace_id=ws.id, user_id=old, role="admin"))
    session.flush()
    action = "ownership.changed" if user_id is not None else "ownership.lost"
    log_activity(session, ws.id, actor, action, user_id, {"from": old, "to": user_id, "reason": reason})


def transfer_ownership(session: Session, ws: Workspace, to: User, *, actor: str = "operator") -> None:
    """Operator transfer to another member who has access."""
    if ws.kind == "personal":
        raise InvalidTransfer("a personal workspace always belongs to its user")
    if ws.owner_id == to.id:
        raise InvalidTransfer(f"{to.username} already owns {ws.name!r}")
    if ws.kind == "provider":
        ident = next((i for i in to.identities if i.provider == ws.provider), None)
        entry = (
            session.get(RosterEntry, (ws.id, ident.provider_user_id)) if ident is not None else None
        )
        if entry is None:
            raise InvalidTransfer(f"{to.username} is not a member of the {ws.provider} org of {ws.name!r}")
    else:
        member = session.get(Membership, (ws.id, to.id))
        if member is None:
            raise InvalidTransfer(f"{to.username} is not a member of {ws.name!r}")
    set_owner(session, ws, to.id, actor, reason="transfer")


def owner_still_member(session: Session, ws: Workspace) -> bool:
    if ws.owner_id is None:
        return False
    ident = session.scalar(
        select(Identity).where(Identity.user_id == ws.owner_id, Identity.provider == ws.provider)
    )
    if ident is None:
        return False
    return session.get(RosterEntry, (ws.id, ident.provider_user_id)) is not None


def hand_on_ownership(session: Session, ws: Workspace, *, actor: str) -> None:
    """The owner left the org: ownership passes to the longest-standing admin
    with an account, else the workspace is ownerless until an operator acts."""
    if ws.kind != "provider" or ws.owner_id is None or owner_still_member(session, ws):
        return
    successor = session.scalar(
        select(Identity.user_id)
        .join(RosterEntry, and_(RosterEntry.provider_user_id == Identity.provider_user_id))
        .where(
            RosterEntry.workspace_id == ws.id,
            RosterEntry.role == "admin",
            Identity.provider == ws.provider,
            Identity.user_id != ws.owner_id,
        )
        .order_by(RosterEntry.since, RosterEntry.provider_user_id)
        .limit(1)
    )
    set_owner(session, ws, successor, actor, reason="owner_left_org")


def claim_unowned(session: Session, ws: Workspace, user: User, *, actor: str) -> bool:
    """A provider workspace that never had an owner (adopted from an
    installation nobody in the platform connected: the reconciliation, or an
    installer with no account who is not expected) is connected by the first
    org admin who logs in: they become owner with billing access. One that
    lost its owner stays ownerless until an operator acts (SPEC 3)."""
    if ws.kind != "provider" or ws.owner_id is not None or ws.pending_owner_provider_user_id is not None:
        return False
    ever_owned = session.scalar(select(Activity.seq).where(
        Activity.workspace_id == ws.id, Activity.action.in_(("ownership.changed", "ownership.lost"))).limit(1))
    if ever_owned is not None:
        return False
    ident = next((i for i in user.identities if i.provider == ws.provider), None)
    entry = session.get(RosterEntry, (ws.id, ident.provider_user_id)) if ident is not None else None
    if entry is None or entry.role != "admin":
        return False
    set_owner(session, ws, user.id, actor, reason="connected")
    return True
