"""The core workspace store: every rule of SPEC section 3 lives here.

Callers pass a Session; functions flush but never commit, so a caller's whole
unit of work (the change and its activity entries) is one transaction.
No caller can break an invariant by going around these functions because the
API layers only ever call these.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.orm import Session

from models.errors import (
    AmbiguousReference,
    CannotDelete,
    CannotInvite,
    InvalidName,
    InvalidState,
    InvalidTransfer,
    NameTaken,
    UserNotFound,
    WorkspaceNotFound,
)
from models.ids import parse_id
from models.tables import (
    Activity,
    Counter,
    HttpCacheEntry,
    Identity,
    Invitation,
    Membership,
    RosterEntry,
    SyncRun,
    User,
    Workspace,
    as_utc,
    utcnow,
)

ACTIVITY_COUNTER = "activity"
# Used with fullmatch: "$" would also match before a trailing newline.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


# --------------------------------------------------------------------------- activity


@dataclass(frozen=True, slots=True)
class ActivityEntry:
    workspace_id: str | None
    actor: str
    action: str
    subject: str | None = None
    details: dict[str, Any] | None = None


def _allocate_seq(session: Session, count: int) -> int:
    """Reserve ``count`` sequence numbers; returns the first.

    The UPDATE takes a row lock held until commit, so numbers are handed out
    in commit order (see models.tables.Counter).
    """
    result = session.execute(
        update(Counter)
        .where(Counter.name == ACTIVITY_COUNTER)
        .values(value=Counter.value + count)
        .returning(Counter.value)
    ).scalar_one_or_none()
    if result is None:
        session.execute(insert(Counter).values(name=ACTIVITY_COUNTER, value=0))
        return _allocate_seq(session, count)
    return int(result) - count + 1


def log_activity(
    session: Session,
    workspace_id: str | None,
    actor: str,
    action: str,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    return log_activities(session, [ActivityEntry(workspace_id, actor, action, subject, details)])[0]


def log_activities(session: Session, entries: Sequence[ActivityEntry]) -> list[int]:
    """Write many entries with one counter update and one bulk insert."""
    if not entries:
        return []
    first = _allocate_seq(session, len(entries))
    now = utcnow()
    rows = [
        {
            "seq": first + i,
            "at": now,
            "workspace_id": e.workspace_id,
            "actor": e.actor,
            "action": e.action,
            "subject": e.subject,
            "details": e.details,
        }
        for i, e in enumerate(entries)
    ]
    for start in range(0, len(rows), 5000):
        session.execute(insert(Activity), rows[start : start + 5000])
    return list(range(first, first + len(rows)))


def list_activity(
    session: Session, *, workspace_id: str | None = None, after: int = 0, limit: int = 100
) -> list[Activity]:
    stmt = select(Activity).where(Activity.seq > after)
    if workspace_id is not None:
        stmt = stmt.where(Activity.workspace_id == workspace_id)
    return list(session.scalars(stmt.order_by(Activity.seq).limit(limit)))


def latest_seq(session: Session) -> int:
    """The newest activity sequence number (0 while the log is empty)."""
    return int(session.scalar(select(func.max(Activity.seq))) or 0)


def activity_seqs(session: Session, actors: Sequence[str], *, after: int = 0, limit: int | None = None) -> list[int]:
    """Sequence numbers of the entries logged by ``actors`` after ``after``,
    oldest first, at most ``limit`` of them."""
    stmt = select(Activity.seq).where(Activity.seq > after, Activity.actor.in_(list(actors))).order_by(Activity.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def reattribute_activity(session: Session, from_actor: str, to_actor: str) -> None:
    """Relabel every entry logged as ``from_actor`` with ``to_actor`` (an
    actor named after an id that did not exist yet when the entries were
    written: a first login's account)."""
    session.execute(update(Activity).where(Activity.actor == from_actor).values(actor=to_actor))


def activity_to_dict(a: Activity) -> dict[str, Any]:
    return {
        "seq": a.seq,
        "at": as_utc(a.at).isoformat() if a.at else None,  # type: ignore[union-attr]
        "workspace": a.workspace_id,
        "actor": a.actor,
        "action": a.action,
        "subject": a.subject,
        "details": a.details or {},
    }


# --------------------------------------------------------------------------- names


def _name_free(session: Session, name: str, *, exclude_id: str | None = None) -> bool:
    stmt = select(Workspace.id).where(Workspace.name_lower == name.lower())
    if exclude_id is not None:
        stmt = stmt.where(Workspace.id != exclude_id)
    return session.scalar(stmt) is None


def _check_name(name: str) -> None:
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
        if _name_free(session, candidate, exclude_id=exclude_id):
            return candidate
    return f"{base}-{provider}-{org_id}"


# --------------------------------------------------------------------------- users


def get_user(session: Session, ref: str) -> User:
    """A user by id or username (case-insensitive)."""
    if not ref or "\x00" in ref:
        raise UserNotFound("no user with that name")
    user = session.get(User, ref)
    if user is None:
        user = session.scalar(select(User).where(User.username_lower == ref.lower()))
    if user is None:
        raise UserNotFound(f"no user {ref!r}")
    return user


def get_identity(session: Session, provider: str, provider_user_id: int) -> Identity | None:
    return session.scalar(
        select(Identity).where(
            Identity.provider == provider, Identity.provider_user_id == provider_user_id
        )
    )


def set_identity_login(session: Session, provider: str, provider_user_id: int, login: str) -> None:
    """The login label of the account linked to this provider id follows the
    provider (no-op when no account is linked). Roster entries are not
    touched: the caller has just re-read them."""
    ident = get_identity(session, provider, provider_user_id)
    if ident is not None and ident.login != login:
        ident.login = login


def _free_username(session: Session, wanted: str, provider: str | None) -> str:
    candidates = [wanted]
    if provider:
        candidates.append(f"{wanted}-{provider}")
    for c in candidates:
        if session.scalar(select(User.id).where(User.username_lower == c.lower())) is None:
            return c
    return f"{wanted}-{secrets.token_hex(3)}"


def create_user(
    session: Session,
    username: str,
    *,
    actor: str = "operator",
    identity: tuple[str, int, str] | None = None,
) -> User:
    """A user always comes with a personal workspace (never deleted, no other members)."""
    provider = identity[0] if identity else None
    username = _free_username(session, username, provider)
    user = User(id=new_id("usr"), username=username, username_lower=username.lower())
    session.add(user)
    session.flush()
    if identity is not None:
        prov, puid, login = identity
        session.add(Identity(user_id=user.id, provider=prov, provider_user_id=puid, login=login))
    ws_name = username if _name_free(session, username) else f"{username}-personal"
    if not _name_free(session, ws_name):
        ws_name = f"{username}-personal-{user.id[4:10]}"
    _create_owned_workspace(session, ws_name, "personal", user, actor,
                            {"kind": "personal", "user": user.id}, personal=True)
    session.flush()
    _claim_pending_ownership(session, user, actor)
    return user


def get_or_create_user_for_identity(
    session: Session, provider: str, provider_user_id: int, login: str, *, actor: str
) -> tuple[User, bool]:
    """Find the account linked to a provider id (never by login), or create it.

    A changed login is a label update; the link stays on the numeric id.
    """
    ident = get_identity(session, provider, provider_user_id)
    if ident is not None:
        if ident.login != login:
            ident.login = login
            session.execute(
                update(RosterEntry)
                .where(
                    RosterEntry.provider_user_id == provider_user_id,
                    RosterEntry.workspace_id.in_(
                        select(Workspace.id).where(Workspace.provider == provider)
                    ),
                )
                .values(login=login)
            )
        return ident.user, False
    user = create_user(session, login, actor=actor, identity=(provider, provider_user_id, login))
    return user, True


def _claim_pending_ownership(session: Session, user: User, actor: str) -> None:
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
            _set_owner(session, ws, user.id, actor, reason="connected")


# --------------------------------------------------------------------------- workspaces


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
    # Lock with a plain column select: the mapped Workspace eager-joins its
    # owner, and PostgreSQL refuses FOR UPDATE on an outer join's nullable side.
    session.execute(
        select(Workspace.id).where(Workspace.id == workspace_id).with_for_update()
    ).first()
    ws = session.get(Workspace, workspace_id, populate_existing=True)
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
    _check_name(name)
    if not _name_free(session, name):
        raise NameTaken(f"a workspace named {name!r} already exists")
    return _create_owned_workspace(session, name, "managed", owner, actor, {"kind": "managed"})


def _create_owned_workspace(
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
        _set_owner(session, ws, owner.id, actor, reason="connected")
    elif pending_owner_provider_user_id is not None:
        ident = get_identity(session, provider, pending_owner_provider_user_id)
        if ident is not None:
            ws.pending_owner_provider_user_id = None
            _set_owner(session, ws, ident.user_id, actor, reason="connected")
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


# --------------------------------------------------------------------------- status


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


# --------------------------------------------------------------------------- ownership


def _set_owner(session: Session, ws: Workspace, user_id: str | None, actor: str, *, reason: str) -> None:
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
    _set_owner(session, ws, to.id, actor, reason="transfer")


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
    _set_owner(session, ws, successor, actor, reason="owner_left_org")


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
    _set_owner(session, ws, user.id, actor, reason="connected")
    return True


# --------------------------------------------------------------------------- invitations


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


# --------------------------------------------------------------------------- roster


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
) -> tuple[int, int, int]:
    """Apply roster changes with bulk statements and one activity entry each.

    ``role_changes`` pairs the new row with the old role. Returns
    (added, removed, changed). Ownership passes on if the owner left.
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
    log_activities(session, entries)
    session.flush()
    if removals_l or role_changes_l:
        hand_on_ownership(session, ws, actor=actor)
    return len(adds), len(removals_l), len(role_changes_l)


def member_subject(provider: str, provider_user_id: int, user_id: str | None) -> str:
    """The activity subject for a roster member (SPEC section 3): the account
    id when the member has an account here, else ``<provider>:<numeric id>``
    (never the login, which the member can change)."""
    return user_id if user_id is not None else f"{provider}:{provider_user_id}"


def member_subjects(session: Session, provider: str, provider_user_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(provider_user_ids))
    accounts: dict[int, str] = {}
    for i in range(0, len(ids), 2000):
        accounts.update(session.execute(
            select(Identity.provider_user_id, Identity.user_id)
            .where(Identity.provider == provider, Identity.provider_user_id.in_(ids[i : i + 2000]))
        ).tuples().all())
    return {uid: member_subject(provider, uid, accounts.get(uid)) for uid in ids}


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
    """Store these pages (replacing their old copies) and forget the pages in ``drop``."""
    doomed = sorted(set(pages) | set(drop))
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
    for i in range(0, len(rows), 200):
        session.execute(insert(HttpCacheEntry), rows[i : i + 200])


def _dedupe(rows: Iterable[StoredMember]) -> list[StoredMember]:
    # PostgreSQL rejects a bulk statement that touches one row twice.
    return list({r.provider_user_id: r for r in rows}.values())


# --------------------------------------------------------------------------- members


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
        log_activity(
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


_MEMBER_ACTIONS = ("member.added", "member.removed", "member.role_changed")


def settled_members_since(session: Session, workspace_id: str, start_seq: int, actor: str, run_id: int) -> set[int]:
    """Provider user ids another run re-read after ours started: their entry
    is at least as fresh as our listing, which must not undo it.

    Two signs: a roster change another run committed after ours started (the
    activity sequence is commit-ordered), and a member re-read that changed
    nothing (a member who left before the store ever listed them writes no
    activity, yet our listing, read before they left, would add them back)."""
    rows = session.scalars(
        select(Activity.details).where(
            Activity.workspace_id == workspace_id,
            Activity.seq > start_seq,
            Activity.action.in_(_MEMBER_ACTIONS),
            Activity.actor != actor,
        )
    )
    out: set[int] = set()
    for details in rows:
        uid = (details or {}).get("provider_user_id")
        if isinstance(uid, int):
            out.add(uid)
    # Member runs opened after ours (run ids are allocated at open) that
    # finished: each names the members it read.
    for details in session.scalars(
        select(SyncRun.details).where(
            SyncRun.workspace_id == workspace_id, SyncRun.kind == "member", SyncRun.id > run_id,
            SyncRun.result == "ok",
        )
    ):
        d = details or {}
        ids = d.get("provider_user_ids")
        if isinstance(ids, list):
            out.update(u for u in ids if isinstance(u, int))
        uid = d.get("provider_user_id")
        if isinstance(uid, int):
            out.add(uid)
    return out


def last_sync_run(session: Session, ws: Workspace) -> SyncRun | None:
    return session.scalar(
        select(SyncRun).where(SyncRun.workspace_id == ws.id, SyncRun.kind == "full")
        .order_by(SyncRun.id.desc()).limit(1)
    )


# --------------------------------------------------------------------------- views


def workspace_to_dict(ws: Workspace) -> dict[str, Any]:
    owner = ws.owner
    return {
        "id": ws.id,
        "name": ws.name,
        "kind": ws.kind,
        "provider": ws.provider,
        "provider_org_id": ws.provider_org_id,
        "provider_org_login": ws.provider_org_login,
        "reference": ws.reference,
        "status": ws.status,
        "link": ws.link_status if ws.kind == "provider" else None,
        "owner": {"id": owner.id, "username": owner.username} if owner else None,
        "subscription": ws.subscription_plan,
    }


def sync_run_to_dict(run: SyncRun) -> dict[str, Any]:
    def iso(v: datetime | None) -> str | None:
        v = as_utc(v)
        return v.isoformat() if v else None

    return {
        "id": run.id,
        "workspace": run.workspace_id,
        "kind": run.kind,
        "trigger": run.trigger,
        "result": run.result,
        "forced": run.forced,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "added": run.added,
        "removed": run.removed,
        "changed": run.changed,
        "api_calls": run.api_calls,
        "not_modified": run.not_modified,
        "error": run.error,
        "details": run.details or {},
    }
