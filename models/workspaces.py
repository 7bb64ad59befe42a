"""Workspaces: names and references, creation, renames, status, subscription.

The invariants of SPEC section 3 live here (personal workspaces are never
deleted, provider workspaces follow their org's id and cannot be deleted
while connected), so no caller can bypass them.

Callers pass a Session; functions flush but never commit, so a caller's whole
unit of work (the change and its activity entries) is one transaction.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.activity import ActivityEntry, log_activities, log_activity
from models.errors import (
    AmbiguousReference,
    CannotDelete,
    InvalidName,
    InvalidState,
    NameTaken,
    WorkspaceNotFound,
)
from models.identities import get_identity
from models.ids import parse_id
from models.ownership import set_owner
from models.tables import Membership, User, Workspace, utcnow

# Used with fullmatch: "$" would also match before a trailing newline.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def name_free(session: Session, name: str, *, exclude_id: str | None = None) -> bool:
    stmt = select(Workspace.id).where(Workspace.name_lower == name.lower())
    if exclude_id is not None:
        stmt = stmt.where(Workspace.id != exclude_id)
    return session.scalar(stmt) is None


def check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name) or ":" in name or name.startswith(("ws_", "usr_")):
        raise InvalidName(
            f"workspace name {name!r} must be 1-255 letters, digits, '.', '_' or '-', "
            "and must not look like an id"
        )


def _provider_name(session: Session, login: str, provider: str, org_id: int, *, exclude_id: str | None = None) -> str:
    """The collision rule: login lowercased, else <login>-<provider>, else
    <login>-<provider>-<org id> (unique because org ids are)."""
    base = re.sub(r"[^a-z0-9._-]", "-", login.lower()).strip("-.") or provider
    # GitLab full paths contain '/'; the name uses the path with '-' instead.
    for candidate in (base, f"{base}-{provider}"):
        if name_free(session, candidate, exclude_id=exclude_id):
            return candidate
    return f"{base}-{provider}-{org_id}"


def get_workspace(session: Session, workspace_id: str) -> Workspace:
    ws = session.get(Workspace, workspace_id)
    if ws is None:
        raise WorkspaceNotFound(f"no workspace {workspace_id!r}")
    return ws


def find_workspace(session: Session, ref: str) -> Workspace:
    """A workspace by reference. Precedence (stated in the README):

    1. a workspace id (``ws_…``);
    2. ``github:``/``gitlab:`` references, which never fall through to names:
       ``<provider>:id:<n>`` is the org's numeric id only;
       ``<provider>:login:<login or path>`` is the current label only;
       ``<provider>:<text>`` is the current label, or, when ``text`` is all
       digits, also the numeric id; if those are two different workspaces
       the reference is refused as ambiguous (AmbiguousReference), never
       resolved to either;
    3. a workspace name (case-insensitive).

    Labels are mutable and reusable: a login released by a rename can be
    registered by someone else. A label another workspace has taken since
    is stale (see _take_label) and never resolves.
    """
    ref = (ref or "").strip()
    if not ref or "\x00" in ref:
        # PostgreSQL refuses text with NUL: such a name cannot exist.
        raise WorkspaceNotFound("no workspace with that name")
    ws = session.get(Workspace, ref)
    if ws is not None:
        return ws
    prefix, sep, rest = ref.partition(":")
    if sep and prefix.lower() in ("github", "gitlab") and rest:
        return _find_provider_reference(session, prefix.lower(), rest, ref)
    ws = session.scalar(select(Workspace).where(Workspace.name_lower == ref.lower()))
    if ws is None:
        raise WorkspaceNotFound(f"no workspace {ref!r}")
    return ws


def _find_provider_reference(session: Session, provider: str, rest: str, ref: str) -> Workspace:
    kind, sep, value = rest.partition(":")
    by_id: Workspace | None = None
    by_label: Workspace | None = None
    if sep and kind.lower() == "id":
        org_id = parse_id(value)
        by_id = get_provider_workspace(session, provider, org_id) if org_id is not None else None
    elif sep and kind.lower() == "login":
        by_label = _by_label(session, provider, value, ref)
    else:
        by_label = _by_label(session, provider, rest, ref)
        org_id = parse_id(rest)
        by_id = get_provider_workspace(session, provider, org_id) if org_id is not None else None
    if by_id is not None and by_label is not None and by_id.id != by_label.id:
        # "github:12345" is org 12345 and also the org whose login is
        # "12345": guessing would hand one tenant's workspace to the other.
        raise AmbiguousReference(
            f"{ref!r} is one workspace's login and another's id; "
            f"say {provider}:id:<id> or {provider}:login:<login>"
        )
    ws = by_label or by_id
    if ws is None:
        raise WorkspaceNotFound(f"no workspace {ref!r}")
    return ws


def _by_label(session: Session, provider: str, label: str, ref: str) -> Workspace | None:
    if not label:
        return None
    found = list(session.scalars(
        select(Workspace).where(
            Workspace.provider == provider, Workspace.provider_org_login_lower == label.lower()
        ).limit(2)
    ))
    if len(found) > 1:
        # Two workspaces hold one label (stored before labels were kept
        # unique): one of them is stale and we cannot tell which.
        raise AmbiguousReference(f"{ref!r} is the stored login of several workspaces; use {provider}:id:<id>")
    return found[0] if found else None


def _take_label(session: Session, ws: Workspace, login: str) -> None:
    """Give ``ws`` the label ``login``; any other workspace of the provider
    still holding it has a stale label (its org was renamed and the login
    re-registered by another org, and we missed the rename). Its label stops
    resolving until its own org's rename or sync sets the current one."""
    session.execute(
        update(Workspace)
        .where(Workspace.provider == ws.provider, Workspace.provider_org_login_lower == login.lower(),
               Workspace.id != ws.id)
        .values(provider_org_login_lower=None)
        .execution_options(synchronize_session="fetch")
    )
    ws.provider_org_login = login
    ws.provider_org_login_lower = login.lower()


def lock_workspace(session: Session, workspace_id: str) -> Workspace:
    """Load the workspace with a row lock (PostgreSQL; SQLite locks on write).

    Full, member and login syncs of one org apply under this lock, so two of
    them cannot each plan against a roster the other is changing.
    """
    # One statement: the mapped Workspace eager-joins its owner, and
    # PostgreSQL refuses FOR UPDATE on an outer join's nullable side, so the
    # lock names the workspaces table alone (FOR UPDATE OF).
    ws = session.scalars(
        select(Workspace).where(Workspace.id == workspace_id).with_for_update(of=Workspace.__table__),
        execution_options={"populate_existing": True},
    ).unique().one_or_none()
    if ws is None:
        raise WorkspaceNotFound(f"no workspace {workspace_id!r}")
    return ws


@dataclass(frozen=True, slots=True)
class WorkspaceState:
    """What a drain of an org's lane needs to know of its workspace."""

    id: str
    provider: str | None
    status: str
    installation_id: int | None


def workspace_state(session: Session, provider: str, org_id: int) -> WorkspaceState | None:
    """The provider workspace of an org, as columns (no ORM object, no owner join)."""
    row = session.execute(
        select(Workspace.id, Workspace.provider, Workspace.status, Workspace.installation_id)
        .where(Workspace.kind == "provider", Workspace.provider == provider, Workspace.provider_org_id == org_id)
    ).first()
    return WorkspaceState(row[0], row[1], row[2], row[3]) if row is not None else None


def mark_full_synced(ws: Workspace) -> None:
    ws.last_full_sync_at = utcnow()


def get_provider_workspace(session: Session, provider: str, org_id: int) -> Workspace | None:
    return session.scalar(
        select(Workspace).where(Workspace.provider == provider, Workspace.provider_org_id == org_id)
    )


def get_workspace_by_installation(session: Session, installation_id: int) -> Workspace | None:
    return session.scalar(
        select(Workspace).where(
            Workspace.provider == "github", Workspace.installation_id == installation_id
        )
    )


def get_personal_workspace_for_identity(
    session: Session, provider: str, provider_user_id: int
) -> Workspace | None:
    ident = get_identity(session, provider, provider_user_id)
    if ident is None:
        return None
    return session.scalar(select(Workspace).where(Workspace.personal_user_id == ident.user_id))


def list_workspaces(session: Session, *, kind: str | None = None) -> list[Workspace]:
    stmt = select(Workspace).order_by(Workspace.name_lower)
    if kind:
        stmt = stmt.where(Workspace.kind == kind)
    return list(session.scalars(stmt))


def create_managed_workspace(session: Session, name: str, owner: User, *, actor: str = "operator") -> Workspace:
    check_name(name)
    if not name_free(session, name):
        raise NameTaken(f"a workspace named {name!r} already exists")
    return create_owned_workspace(session, name, "managed", owner, actor, {"kind": "managed"})


def create_owned_workspace(
    session: Session, name: str, kind: str, owner: User, actor: str, details: dict[str, Any],
    *, personal: bool = False,
) -> Workspace:
    """A personal or managed workspace: its owner is its first member and its billing contact."""
    ws = Workspace(
        id=new_id("ws"),
        name=name,
        name_lower=name.lower(),
        kind=kind,
        status="active",
        owner_id=owner.id,
        billing_user_id=owner.id,
        personal_user_id=owner.id if personal else None,
    )
    session.add(ws)
    session.flush()
    session.add(Membership(workspace_id=ws.id, user_id=owner.id, role="owner"))
    log_activities(
        session,
        [
            ActivityEntry(ws.id, actor, "workspace.created", ws.name, details),
            ActivityEntry(ws.id, actor, "ownership.changed", owner.id, {"from": None, "to": owner.id}),
        ],
    )
    return ws


def create_provider_workspace(
    session: Session,
    provider: str,
    org_id: int,
    login: str,
    *,
    actor: str,
    owner: User | None = None,
    installation_id: int | None = None,
    pending_owner_provider_user_id: int | None = None,
) -> Workspace:
    """One workspace per (provider, org id); the connecting user is owner with billing."""
    if provider not in ("github", "gitlab"):
        raise InvalidState(f"unknown provider {provider!r}")
    existing = get_provider_workspace(session, provider, org_id)
    if existing is not None:
        raise NameTaken(f"{provider} org {org_id} already has workspace {existing.name!r}")
    name = _provider_name(session, login, provider, org_id)
    # Any other workspace still labelled with this login is stale.
    session.execute(
        update(Workspace)
        .where(Workspace.provider == provider, Workspace.provider_org_login_lower == login.lower())
        .values(provider_org_login_lower=None)
        .execution_options(synchronize_session="fetch")
    )
    ws = Workspace(
        id=new_id("ws"),
        name=name,
        name_lower=name.lower(),
        kind="provider",
        provider=provider,
        provider_org_id=org_id,
        provider_org_login=login,
        provider_org_login_lower=login.lower(),
        installation_id=installation_id,
        status="active",
        link_status="ok" if (provider == "gitlab" or installation_id) else "no_installation",
        pending_owner_provider_user_id=None if owner else pending_owner_provider_user_id,
    )
    session.add(ws)
    session.flush()
    log_activity(
        session,
        ws.id,
        actor,
        "workspace.created",
        ws.name,
        {"kind": "provider", "provider": provider, "org_id": org_id, "login": login},
    )
    if owner is not None:
        set_owner(session, ws, owner.id, actor, reason="connected")
    elif pending_owner_provider_user_id is not None:
        ident = get_identity(session, provider, pending_owner_provider_user_id)
        if ident is not None:
            ws.pending_owner_provider_user_id = None
            set_owner(session, ws, ident.user_id, actor, reason="connected")
    return ws


def rename_provider_workspace(session: Session, ws: Workspace, new_login: str, *, actor: str) -> bool:
    """Follow an org/group rename. The id never changes; the name follows the
    login when it was derived from the old one. Returns whether anything changed."""
    if ws.kind != "provider":
        raise InvalidState("only provider workspaces follow provider renames")
    if ws.provider_org_login == new_login:
        if ws.provider_org_login_lower != new_login.lower():
            # The org holds this login again (its label had gone stale).
            _take_label(session, ws, new_login)
        return False
    old_login = ws.provider_org_login or ""
    old_name = ws.name
    _take_label(session, ws, new_login)
    # The name follows the login (collision rule applied again, ignoring itself).
    new_name = _provider_name(session, new_login, ws.provider or "", ws.provider_org_id or 0, exclude_id=ws.id)
    ws.name = new_name
    ws.name_lower = new_name.lower()
    session.flush()
    log_activity(
        session,
        ws.id,
        actor,
        "workspace.renamed",
        ws.name,
        {"from_login": old_login, "to_login": new_login, "from_name": old_name, "to_name": ws.name},
    )
    return True


def delete_workspace(session: Session, ws: Workspace, *, actor: str = "operator") -> None:
    if ws.kind == "personal":
        raise CannotDelete("a personal workspace cannot be deleted")
    if ws.kind == "provider" and ws.status != "disconnected":
        raise CannotDelete(
            f"workspace {ws.name!r} is connected to {ws.provider}; disconnect it before deleting"
        )
    log_activity(session, ws.id, actor, "workspace.deleted", ws.name, {"kind": ws.kind})
    session.delete(ws)
    session.flush()


def _set_status(session: Session, ws: Workspace, status: str, action: str, actor: str,
                details: dict[str, Any] | None = None) -> bool:
    if ws.kind != "provider":
        raise InvalidState(f"workspace {ws.name!r} is not connected to a provider")
    if ws.status == status:
        return False
    old = ws.status
    ws.status = status
    session.flush()
    log_activity(session, ws.id, actor, action, ws.name, {"from": old, "to": status, **(details or {})})
    return True


def disconnect(session: Session, ws: Workspace, *, actor: str, reason: str = "operator") -> bool:
    """Roster-derived access ends; the owner keeps access; now it may be deleted."""
    return _set_status(session, ws, "disconnected", "workspace.disconnected", actor, {"reason": reason})


def reconnect(session: Session, ws: Workspace, *, actor: str, installation_id: int | None = None) -> bool:
    if installation_id is not None:
        ws.installation_id = installation_id
        ws.link_status = "ok"
        ws.link_error = None
    return _set_status(session, ws, "active", "workspace.reconnected", actor)


def suspend(session: Session, ws: Workspace, *, actor: str) -> bool:
    if ws.status == "disconnected":
        return False
    return _set_status(session, ws, "suspended", "workspace.suspended", actor)


def unsuspend(session: Session, ws: Workspace, *, actor: str) -> bool:
    if ws.status != "suspended":
        return False
    return _set_status(session, ws, "active", "workspace.unsuspended", actor)


def mark_link(session: Session, ws: Workspace, link_status: str, error: str | None, *, actor: str) -> bool:
    """Record that our credentials for the org work or stopped working.

    A broken link never empties the roster: members keep the access they had.
    """
    if ws.link_status == link_status and ws.link_error == error:
        return False
    old = ws.link_status
    ws.link_status = link_status
    ws.link_error = error
    session.flush()
    if old != link_status:
        log_activity(session, ws.id, actor, "workspace.link_changed", ws.name,
                     {"from": old, "to": link_status, "error": error})
    return True


# A subscription plan's name (the one rule; the API checks bodies with it).
PLAN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def set_subscription(session: Session, ws: Workspace, plan: str | None, *, actor: str = "operator") -> None:
    if plan is not None and not PLAN_NAME.fullmatch(plan):
        raise InvalidState("a plan name is 1-64 letters, digits, '.', '_' or '-'")
    if ws.subscription_plan == plan:
        return
    old = ws.subscription_plan
    ws.subscription_plan = plan
    session.flush()
    log_activity(session, ws.id, actor, "subscription.changed", ws.name, {"from": old, "to": plan})


@dataclass(frozen=True, slots=True)
class UserRef:
    id: str
    username: str


@dataclass(frozen=True, slots=True)
class WorkspaceName:
    """A workspace named in another view (a request's, a member's, a user's
    personal workspace): its id and name."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class WorkspaceView:
    """A workspace as use cases return it, detached from the session. The
    edges turn it into JSON (webhooks/serialize.py, worker/cli/serialize.py)."""

    id: str
    name: str
    kind: str  # personal | provider | managed
    provider: str | None
    provider_org_id: int | None
    provider_org_login: str | None
    reference: str | None
    status: str
    link: str | None  # the provider link's status (ok | broken); None for other kinds
    owner: UserRef | None
    subscription: str | None


def workspace_view(ws: Workspace) -> WorkspaceView:
    owner = ws.owner
    return WorkspaceView(
        id=ws.id,
        name=ws.name,
        kind=ws.kind,
        provider=ws.provider,
        provider_org_id=ws.provider_org_id,
        provider_org_login=ws.provider_org_login,
        reference=ws.reference,
        status=ws.status,
        link=ws.link_status if ws.kind == "provider" else None,
        owner=UserRef(owner.id, owner.username) if owner else None,
        subscription=ws.subscription_plan,
    )
