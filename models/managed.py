"""Changes the platform makes to workspaces on a user's behalf (SPEC section 3,
"Managed workspaces"; section 4, "Platform API").

Every function takes an Actor: a user (the platform's ``X-Orgsync-User``),
whose role is checked, or the operator (CLI, admin API), whose role is not.
The store's rules bind both, and live here or in models.store, so no caller
can go around them. The order of checks is fixed: input first (400), then
"does the actor have any access here" (403), then the rules of the workspace's
kind (409), then the actor's role (403), then the target's state (404/409).
Every change writes its activity entries in the caller's transaction.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import users, workspaces
from models.activity import log_activity
from models.errors import CannotDelete, CannotInvite, InvalidName, InvalidState, NameTaken
from models.ids import parse_id
from models.platform_errors import (
    AlreadyMember,
    CannotChangeOwner,
    CannotRename,
    Forbidden,
    InvalidExpiry,
    InvalidRole,
    InvitationExpired,
    InvitationNotFound,
    MemberNotFound,
    PersonalWorkspace,
    ProviderManaged,
    RequestNotFound,
)
from models.tables import Invitation, JoinRequest, Membership, User, Workspace, as_utc, utcnow
from models.workspaces import UserRef, WorkspaceName

GRANTABLE_ROLES = ("admin", "member", "billing")
DEFAULT_EXPIRY = timedelta(days=7)
MIN_EXPIRY = timedelta(minutes=5)
MAX_EXPIRY = timedelta(days=90)
MANAGERS = frozenset({"owner", "admin"})
OWNER = frozenset({"owner"})
TOKEN_PREFIX = "inv_"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: a user (role-checked) or the operator (``user`` None)."""

    user: User | None = None

    @property
    def label(self) -> str:
        return "operator" if self.user is None else f"user:{self.user.id}"


OPERATOR = Actor()


# --------------------------------------------------------------------------- checks


def _access(session: Session, ws: Workspace, actor: Actor) -> str | None:
    """The actor's role; a user with none is refused before anything else is
    said about the workspace. None for the operator."""
    if actor.user is None:
        return None
    role = users.role_of(session, ws, actor.user)
    if role is None:
        raise Forbidden(f"{actor.user.username} has no access to {ws.name!r}")
    return role


def _require(actor: Actor, role: str | None, allowed: frozenset[str], what: str) -> None:
    if actor.user is None or role in allowed:
        return
    who = "the owner" if allowed == OWNER else "the owner or an admin"
    raise Forbidden(f"only {who} may {what}; {actor.user.username} is {role}")


def _membership_rules(ws: Workspace) -> None:
    """Members are invited, changed and removed in managed workspaces only."""
    if ws.kind == "personal":
        raise PersonalWorkspace(f"{ws.name!r} is a personal workspace: its user is its only member")
    if ws.kind == "provider":
        raise ProviderManaged(
            f"members of {ws.name!r} come from {ws.provider}; change them in the org there"
        )


def _check_role(role: Any) -> str:
    if role == "owner":
        raise InvalidRole("ownership moves only by a transfer; grant admin, member or billing")
    if not isinstance(role, str) or role not in GRANTABLE_ROLES:
        raise InvalidRole("the role must be one of: admin, member, billing")
    return role


# --------------------------------------------------------------------------- workspaces


def create_workspace(session: Session, name: str, owner: User, actor: Actor) -> Workspace:
    """A managed workspace; a user creates one for themselves only."""
    if actor.user is not None and actor.user.id != owner.id:
        raise Forbidden("a user creates managed workspaces for themselves only")
    if not isinstance(name, str):
        raise InvalidName("the workspace name must be text")
    return workspaces.create_managed_workspace(session, name, owner, actor=actor.label)


def rename_workspace(session: Session, ws: Workspace, name: Any, actor: Actor) -> Workspace:
    if not isinstance(name, str):
        raise InvalidName("the workspace name must be text")
    role = _access(session, ws, actor)
    if ws.kind == "personal":
        raise CannotRename(f"{ws.name!r} is a personal workspace: it is named after its user")
    if ws.kind == "provider":
        raise ProviderManaged(f"{ws.name!r} takes its name from the {ws.provider} org; rename the org there")
    _require(actor, role, OWNER, f"rename {ws.name!r}")
    workspaces.check_name(name)
    if name == ws.name:
        return ws
    if not workspaces.name_free(session, name, exclude_id=ws.id):
        raise NameTaken(f"a workspace named {name!r} already exists")
    old = ws.name
    ws.name = name
    ws.name_lower = name.lower()
    session.flush()
    log_activity(session, ws.id, actor.label, "workspace.renamed", ws.name,
                       {"from_name": old, "to_name": name})
    return ws


def delete_workspace(session: Session, ws: Workspace, actor: Actor) -> None:
    role = _access(session, ws, actor)
    if ws.kind == "personal":
        raise CannotDelete("a personal workspace cannot be deleted")
    if ws.kind == "provider" and ws.status != "disconnected":
        raise CannotDelete(f"workspace {ws.name!r} is connected to {ws.provider}; disconnect it before deleting")
    _require(actor, role, OWNER, f"delete {ws.name!r}")
    # workspaces.delete_workspace checks the kind rules once more (its own guard).
    workspaces.delete_workspace(session, ws, actor=actor.label)


# --------------------------------------------------------------------------- invitations


def hash_token(token: str) -> str:
    # The token carries 256 random bits, so a plain SHA-256 cannot be reversed
    # by guessing; a stolen table or backup holds no usable link.
    return hashlib.sha256(token.encode()).hexdigest()


def parse_expiry(seconds: Any) -> timedelta:
    if seconds is None:
        return DEFAULT_EXPIRY
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidExpiry("expires_in is a whole number of seconds")
    if not MIN_EXPIRY.total_seconds() <= seconds <= MAX_EXPIRY.total_seconds():
        raise InvalidExpiry("expires_in must be between 300 seconds and 90 days")
    return timedelta(seconds=seconds)


def create_invitation(session: Session, ws: Workspace, role: Any, actor: Actor,
                      expires_in: timedelta = DEFAULT_EXPIRY) -> tuple[Invitation, str]:
    """A link invitation; returns it and its secret token (shown once)."""
    role = _check_role(role)
    if not MIN_EXPIRY <= expires_in <= MAX_EXPIRY:
        raise InvalidExpiry("an invitation expires between 5 minutes and 90 days after it is made")
    access = _access(session, ws, actor)
    if ws.kind == "personal":
        raise CannotInvite("a personal workspace cannot have other members")
    if ws.kind == "provider":
        raise CannotInvite(f"members of {ws.name!r} come from {ws.provider}; add them to the org there instead")
    _require(actor, access, MANAGERS, f"invite to {ws.name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    inv = Invitation(workspace_id=ws.id, user_id=None, role=role, status="active",
                     token_hash=hash_token(token), expires_at=utcnow() + expires_in, created_by=actor.label)
    session.add(inv)
    session.flush()
    log_activity(session, ws.id, actor.label, "invitation.created", None,
                       {"invitation": inv.id, "role": role, "expires_at": _iso(inv.expires_at)})
    return inv, token


def list_invitations(session: Session, ws: Workspace) -> list[Invitation]:
    return list(session.scalars(
        select(Invitation).where(Invitation.workspace_id == ws.id).order_by(Invitation.id)
    ))


def _invitation_in(session: Session, ws: Workspace, invitation_id: Any) -> Invitation:
    number = parse_id(invitation_id)
    inv = session.get(Invitation, number) if number is not None and number < 2**31 else None
    # Another workspace's invitation is not found here (isolation).
    if inv is None or inv.workspace_id != ws.id:
        raise InvitationNotFound(f"{ws.name!r} has no invitation {invitation_id!r}")
    return inv


def revoke_invitation(session: Session, ws: Workspace, invitation_id: Any, actor: Actor) -> Invitation:
    role = _access(session, ws, actor)
    _require(actor, role, MANAGERS, f"revoke invitations to {ws.name!r}")
    inv = _invitation_in(session, ws, invitation_id)
    if inv.status == "revoked":
        return inv
    if inv.status not in ("active", "invited"):
        raise InvalidState(f"invitation {inv.id} is {inv.status}")
    inv.status = "revoked"
    session.flush()
    log_activity(session, ws.id, actor.label, "invitation.revoked", inv.user_id,
                       {"invitation": inv.id, "role": inv.role})
    return inv


def _expired(inv: Invitation, now: datetime) -> bool:
    expires = as_utc(inv.expires_at)
    return expires is not None and expires <= now


def request_to_join(session: Session, token: Any, user: User) -> tuple[JoinRequest, bool]:
    """The user who opened the link asks to join. Returns the request and
    whether it is new (asking twice returns the pending request)."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200 or "\x00" in token:
        raise InvitationNotFound("no invitation has that token")
    inv = session.scalar(select(Invitation).where(Invitation.token_hash == hash_token(token)))
    if inv is None:
        raise InvitationNotFound("no invitation has that token")
    if inv.status != "active" or _expired(inv, utcnow()):
        raise InvitationExpired("this invitation has expired or was revoked; ask for a new one")
    ws = workspaces.get_workspace(session, inv.workspace_id)
    if ws.kind != "managed":
        raise CannotInvite(f"{ws.name!r} takes no invitations")
    if ws.owner_id == user.id or session.get(Membership, (ws.id, user.id)) is not None:
        raise AlreadyMember(f"{user.username} is already a member of {ws.name!r}")
    pending = session.scalar(select(JoinRequest).where(
        JoinRequest.workspace_id == ws.id, JoinRequest.user_id == user.id, JoinRequest.status == "requested"))
    if pending is not None:
        return pending, False
    req = JoinRequest(workspace_id=ws.id, invitation_id=inv.id, user_id=user.id, role=inv.role,
                      status="requested")
    session.add(req)
    session.flush()
    log_activity(session, ws.id, f"user:{user.id}", "member.requested", user.id,
                       {"request": req.id, "invitation": inv.id, "role": inv.role})
    return req, True


def list_requests(session: Session, ws: Workspace) -> list[JoinRequest]:
    return list(session.scalars(
        select(JoinRequest).where(JoinRequest.workspace_id == ws.id).order_by(JoinRequest.id)
    ))


def decide_request(session: Session, ws: Workspace, request_id: Any, approve: bool, actor: Actor) -> JoinRequest:
    """Approve (the user becomes a member with the invitation's role) or deny."""
    role = _access(session, ws, actor)
    _require(actor, role, MANAGERS, f"decide requests to join {ws.name!r}")
    number = parse_id(request_id)
    req = session.get(JoinRequest, number) if number is not None and number < 2**31 else None
    # Another workspace's request id is not found here (isolation).
    if req is None or req.workspace_id != ws.id:
        raise RequestNotFound(f"{ws.name!r} has no request {request_id!r}")
    if req.status != "requested":
        raise InvalidState(f"request {req.id} was already {req.status}")
    if approve and (ws.owner_id == req.user_id or session.get(Membership, (ws.id, req.user_id)) is not None):
        raise AlreadyMember("the user is already a member")
    req.status = "approved" if approve else "denied"
    req.decided_at = utcnow()
    req.decided_by = actor.label
    if approve:
        session.add(Membership(workspace_id=ws.id, user_id=req.user_id, role=req.role))
    session.flush()
    log_activity(session, ws.id, actor.label, "member.added" if approve else "member.denied", req.user_id,
                       {"role": req.role, "request": req.id})
    return req


# --------------------------------------------------------------------------- members


def _target_membership(session: Session, ws: Workspace, target: User) -> Membership:
    if ws.owner_id == target.id:
        raise CannotChangeOwner(f"{target.username} owns {ws.name!r}; ownership moves only by a transfer")
    m = session.get(Membership, (ws.id, target.id))
    if m is None:
        raise MemberNotFound(f"{target.username} is not a member of {ws.name!r}")
    return m


def change_role(session: Session, ws: Workspace, target: User, role: Any, actor: Actor) -> Membership:
    role = _check_role(role)
    access = _access(session, ws, actor)
    _membership_rules(ws)
    _require(actor, access, MANAGERS, f"change roles in {ws.name!r}")
    m = _target_membership(session, ws, target)
    if m.role == role:
        return m
    old = m.role
    m.role = role
    session.flush()
    log_activity(session, ws.id, actor.label, "member.role_changed", target.id,
                       {"from": old, "to": role, "username": target.username})
    return m


def remove_member(session: Session, ws: Workspace, target: User, actor: Actor) -> None:
    """The owner or an admin removes a member; any member may leave."""
    access = _access(session, ws, actor)
    _membership_rules(ws)
    if actor.user is None or actor.user.id != target.id:
        _require(actor, access, MANAGERS, f"remove members of {ws.name!r}")
    m = _target_membership(session, ws, target)
    session.delete(m)
    session.flush()
    log_activity(session, ws.id, actor.label, "member.removed", target.id,
                       {"role": m.role, "username": target.username})


# --------------------------------------------------------------------------- views


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value else None


@dataclass(frozen=True, slots=True)
class InvitationView:
    """An invitation as the store returns it; ``status`` is ``expired`` once an
    active one is past its expiry, and ``token`` is set only when the
    invitation is made (only its hash is kept). Times are UTC-aware."""

    id: int
    workspace_id: str
    token: str | None
    role: str
    status: str
    expires_at: datetime | None
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class JoinRequestView:
    id: int
    status: str
    role: str
    workspace: WorkspaceName
    user: UserRef | None
    created_at: datetime | None
    decided_at: datetime | None


@dataclass(frozen=True, slots=True)
class MemberView:
    workspace: WorkspaceName
    user: UserRef | None
    role: str


def invitation_view(inv: Invitation, token: str | None = None) -> InvitationView:
    status = inv.status
    if status == "active" and _expired(inv, utcnow()):
        status = "expired"
    return InvitationView(id=inv.id, workspace_id=inv.workspace_id, token=token, role=inv.role, status=status,
                          expires_at=as_utc(inv.expires_at), created_at=as_utc(inv.created_at))


def join_request_view(session: Session, req: JoinRequest) -> JoinRequestView:
    ws = workspaces.get_workspace(session, req.workspace_id)
    user = session.get(User, req.user_id)
    return JoinRequestView(id=req.id, status=req.status, role=req.role,
                           workspace=WorkspaceName(ws.id, ws.name),
                           user=users.user_ref(user) if user else None,
                           created_at=as_utc(req.created_at), decided_at=as_utc(req.decided_at))


def member_view(session: Session, ws: Workspace, m: Membership) -> MemberView:
    user = session.get(User, m.user_id)
    return MemberView(workspace=WorkspaceName(ws.id, ws.name), user=users.user_ref(user) if user else None,
                      role=m.role)
