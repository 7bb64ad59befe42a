"""Users as the platform sees them: accounts (made at a first provider login
or by sign-up without a provider, each with its personal workspace),
references, the workspaces a user can use and the authorization question ("may this user
deploy with this workspace?").

The two hot reads (a user's workspaces, one access check) are a fixed number
of SQL statements whatever the number of workspaces: the roles come from one
statement that joins memberships and roster entries, instead of one lookup
per workspace.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, case, func, null, or_, select, union_all
from sqlalchemy.orm import Session

from models import workspaces
from models.errors import InvalidTransfer, UserNotFound
from models.identities import get_identity
from models.ids import parse_id
from models.ownership import claim_pending_ownership
from models.platform_errors import InvalidUsername, UsernameTaken
from models.roster import relabel_member
from models.tables import Identity, Membership, RosterEntry, User, Workspace
from models.workspaces import UserRef, WorkspaceName

PROVIDERS = ("github", "gitlab")
# Usernames never contain ':' (so "github:12" is always a provider reference)
# and never look like account ids, so every reference means one thing.
_USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# --------------------------------------------------------------------------- accounts


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
    user = User(id=workspaces.new_id("usr"), username=username, username_lower=username.lower())
    session.add(user)
    session.flush()
    if identity is not None:
        prov, puid, login = identity
        session.add(Identity(user_id=user.id, provider=prov, provider_user_id=puid, login=login))
    _create_personal_workspace(session, user, actor)
    claim_pending_ownership(session, user, actor)
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
            relabel_member(session, provider, provider_user_id, login)
        return ident.user, False
    user = create_user(session, login, actor=actor, identity=(provider, provider_user_id, login))
    return user, True


def _create_personal_workspace(session: Session, user: User, actor: str) -> None:
    """The user's personal workspace (never deleted, no other members), named
    after the user when that name is free."""
    username = user.username
    ws_name = username if workspaces.name_free(session, username) else f"{username}-personal"
    if not workspaces.name_free(session, ws_name):
        ws_name = f"{username}-personal-{user.id[4:10]}"
    workspaces.create_owned_workspace(session, ws_name, "personal", user, actor,
                                      {"kind": "personal", "user": user.id}, personal=True)
    session.flush()


# --------------------------------------------------------------------------- references


def resolve_user(session: Session, ref: str) -> User:
    """A user by account id, username (case-insensitive), or ``github:<id>`` /
    ``gitlab:<id>`` (the provider's numeric user id, never a login)."""
    ref = (ref or "").strip()
    if not ref or "\x00" in ref or len(ref) > 300:
        # PostgreSQL refuses text with NUL; such a user cannot exist.
        raise UserNotFound("no user with that reference")
    prefix, sep, rest = ref.partition(":")
    if sep:
        provider = prefix.lower()
        if provider not in PROVIDERS:
            raise UserNotFound(f"no user {ref!r}: a reference is an id, a username, github:<id> or gitlab:<id>")
        uid = parse_id(rest)
        if uid is None:
            raise UserNotFound(f"no user {ref!r}: {provider}:<id> takes the numeric {provider} user id")
        ident = get_identity(session, provider, uid)
        if ident is None:
            raise UserNotFound(f"no account is linked to {provider} user {uid}")
        return ident.user
    # Id or username in one statement (an id match wins): the hot reads pay
    # one round trip per reference.
    user = session.scalar(
        select(User).where(or_(User.id == ref, User.username_lower == ref.lower()))
        .order_by(case((User.id == ref, 0), else_=1)).limit(1)
    )
    if user is None:
        raise UserNotFound(f"no user {ref!r}")
    return user


def find_workspace(session: Session, ref: str) -> Workspace:
    """models.workspaces.find_workspace, with an id or a name answered in one statement."""
    ref = (ref or "").strip()
    if ref and "\x00" not in ref and ":" not in ref:
        ws = session.scalar(
            select(Workspace).where(or_(Workspace.id == ref, Workspace.name_lower == ref.lower()))
            .order_by(case((Workspace.id == ref, 0), else_=1)).limit(1)
        )
        if ws is not None:
            return ws
    return workspaces.find_workspace(session, ref)


def transfer_target(session: Session, ws: Workspace, ref: str) -> User:
    """The user an operator names as the new owner.

    A provider org member who never logged in is in the roster but has no
    account: say that, rather than "no user", so the operator knows what to
    ask of them.
    """
    try:
        return resolve_user(session, ref)
    except UserNotFound:
        if ws.kind != "provider":
            raise
    wanted = ref.strip()
    if "\x00" in wanted:
        raise UserNotFound("no user with that reference")
    uid = parse_id(wanted.partition(":")[2] if ":" in wanted else wanted)
    # Logins are case-insensitive at the providers.
    cond = func.lower(RosterEntry.login) == wanted.lower()
    if uid is not None:
        cond = cond | (RosterEntry.provider_user_id == uid)
    entry = session.scalar(select(RosterEntry).where(RosterEntry.workspace_id == ws.id, cond).limit(1))
    if entry is not None:
        raise InvalidTransfer(
            f"{entry.login} ({ws.provider} user {entry.provider_user_id}) is a member of the "
            f"{ws.provider} org of {ws.name!r} but has no account yet; they can become owner "
            "once they have logged in"
        )
    raise UserNotFound(f"no user {ref!r}, and nobody by that name is in the {ws.provider} org of {ws.name!r}")


# --------------------------------------------------------------------------- sign-up


def sign_up(session: Session, username: str) -> User:
    """An account made without a provider login, with its personal workspace.

    Unlike a first login (which picks a free variant of the provider login),
    the person chose this name: a taken one is refused, not altered.
    """
    if not isinstance(username, str) or not _USERNAME_RE.match(username) or username.lower().startswith(
        ("usr_", "ws_")
    ):
        raise InvalidUsername(
            "a username is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            "and must not look like an id"
        )
    if session.scalar(select(User.id).where(User.username_lower == username.lower())) is not None:
        raise UsernameTaken(f"the username {username!r} is taken")
    user = User(id=workspaces.new_id("usr"), username=username, username_lower=username.lower())
    session.add(user)
    session.flush()
    # The person signs up on their own behalf: the entries say so.
    _create_personal_workspace(session, user, f"user:{user.id}")
    return user


# --------------------------------------------------------------------------- roles


def _roles(user_id: str) -> Select[str, str, str, str, str | None, str | None, str, str]:
    """Workspace columns with the user's membership role and roster role.

    The roster is joined through the user's identity at the workspace's
    provider (by numeric id), so one statement answers for every kind.
    """
    return (
        select(Workspace.id, Workspace.name, Workspace.kind, Workspace.status, Workspace.subscription_plan,
               Workspace.owner_id, Membership.role, RosterEntry.role)
        .select_from(Workspace)
        .outerjoin(Membership, and_(Membership.workspace_id == Workspace.id, Membership.user_id == user_id))
        .outerjoin(Identity, and_(Identity.user_id == user_id, Identity.provider == Workspace.provider))
        .outerjoin(RosterEntry, and_(RosterEntry.workspace_id == Workspace.id,
                                     RosterEntry.provider_user_id == Identity.provider_user_id))
    )


def _effective(user_id: str, kind: str, status: str, owner_id: str | None,
               member_role: str | None, roster_role: str | None) -> str | None:
    """The same answer as models.memberships.role_in, from one row of _roles."""
    if owner_id == user_id:
        return "owner"
    if kind != "provider":
        return member_role
    # Roster-derived access ends while a provider workspace is suspended or
    # disconnected; only the owner keeps it.
    return roster_role if status == "active" else None


def role_of(session: Session, ws: Workspace, user: User) -> str | None:
    """The user's role in the workspace (one statement), or None."""
    row = session.execute(_roles(user.id).where(Workspace.id == ws.id)).one_or_none()
    if row is None:
        return None
    return _effective(user.id, row[2], row[3], row[5], row[6], row[7])


def user_workspaces(session: Session, user: User) -> tuple[UserWorkspace, ...]:
    """Every workspace the user can use, with kind, role, status and
    subscription, sorted by name (what `workspace ls` shows).

    One statement: the three ways in (membership, roster entry through the
    user's identity at that provider, ownership) each walk their own index,
    joined by UNION ALL; a workspace reached twice is merged here.
    """
    cols = (Workspace.id, Workspace.name, Workspace.name_lower, Workspace.kind, Workspace.status,
            Workspace.subscription_plan, Workspace.owner_id)
    none = null().cast(Membership.role.type)
    by_membership = (select(*cols, Membership.role.label("member_role"), none.label("roster_role"))
                     .join(Membership, Membership.workspace_id == Workspace.id)
                     .where(Membership.user_id == user.id))
    by_roster = (select(*cols, none, RosterEntry.role)
                 .join(RosterEntry, RosterEntry.workspace_id == Workspace.id)
                 .join(Identity, and_(Identity.provider_user_id == RosterEntry.provider_user_id,
                                      Identity.provider == Workspace.provider))
                 .where(Identity.user_id == user.id))
    by_owner = select(*cols, none, none).where(Workspace.owner_id == user.id)
    merged: dict[str, list[Any]] = {}
    for row in session.execute(union_all(by_membership, by_roster, by_owner)):
        seen = merged.get(row[0])
        if seen is None:
            merged[row[0]] = list(row)
        else:
            seen[7] = seen[7] or row[7]
            seen[8] = seen[8] or row[8]
    out: list[UserWorkspace] = []
    for ws_id, name, name_lower, kind, status, plan, owner_id, member_role, roster_role in sorted(
        merged.values(), key=lambda r: r[2]
    ):
        role = _effective(user.id, kind, status, owner_id, member_role, roster_role)
        if role is not None:
            out.append(UserWorkspace(ws_id, name, kind, role, status, plan))
    return tuple(out)


def can_deploy(ws: Workspace, role: str | None) -> bool:
    """A role, an active workspace and an active subscription, together."""
    return role is not None and ws.status == "active" and ws.subscription_plan is not None


# --------------------------------------------------------------------------- views
# What the platform API's user reads return, detached from the session; the
# edges turn them into JSON (webhooks/serialize.py, worker/cli/serialize.py).


@dataclass(frozen=True, slots=True)
class IdentityRef:
    provider: str
    provider_user_id: int
    login: str | None


@dataclass(frozen=True, slots=True)
class UserView:
    id: str
    username: str
    identities: tuple[IdentityRef, ...]  # sorted by provider
    personal_workspace: WorkspaceName | None


@dataclass(frozen=True, slots=True)
class UserWorkspace:
    """A workspace the user can use, with their role in it."""

    id: str
    name: str
    kind: str
    role: str
    status: str
    subscription: str | None


@dataclass(frozen=True, slots=True)
class WorkspacesOfUser:
    user: UserRef
    workspaces: tuple[UserWorkspace, ...]  # sorted by name


@dataclass(frozen=True, slots=True)
class WorkspaceBrief:
    id: str
    name: str
    kind: str
    status: str
    subscription: str | None


@dataclass(frozen=True, slots=True)
class AccessView:
    """The access question's answer: the user's role and whether they may deploy."""

    workspace: WorkspaceBrief
    user: UserRef
    role: str | None
    can_deploy: bool


def user_ref(user: User) -> UserRef:
    return UserRef(user.id, user.username)


def user_view(session: Session, user: User) -> UserView:
    personal = session.execute(
        select(Workspace.id, Workspace.name).where(Workspace.personal_user_id == user.id)
    ).one_or_none()
    return UserView(
        id=user.id,
        username=user.username,
        identities=tuple(
            IdentityRef(i.provider, i.provider_user_id, i.login)
            for i in sorted(user.identities, key=lambda i: i.provider)
        ),
        personal_workspace=WorkspaceName(personal[0], personal[1]) if personal else None,
    )


def workspaces_of_user(session: Session, user: User) -> WorkspacesOfUser:
    """GET /v1/users/<ref>/workspaces (also `orgsync users workspaces`)."""
    return WorkspacesOfUser(user_ref(user), user_workspaces(session, user))


def access_view(session: Session, ws: Workspace, user: User) -> AccessView:
    """GET /v1/workspaces/<ref>/access/<user ref>."""
    role = role_of(session, ws, user)
    return AccessView(
        workspace=WorkspaceBrief(ws.id, ws.name, ws.kind, ws.status, ws.subscription_plan),
        user=user_ref(user),
        role=role,
        can_deploy=can_deploy(ws, role),
    )
