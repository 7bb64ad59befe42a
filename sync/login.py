"""Login sync (``POST /v1/logins``): the user's own memberships, from their token.

All provider reads happen first; then one transaction creates the account
(and its personal workspace) on first login, creates provider workspaces for
orgs nobody connected yet (this user connects them and owns them), sets this
user's roster entries and removes them from that provider's orgs no longer
listed. A provider failure therefore changes nothing.

The access token is a parameter of this call only: it is never stored,
logged or put in an error message.
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from models import installations as inst_store
from models import store
from models.store import UserRef
from sync.apply import apply_plan
from sync.context import SyncContext, close_provider
from sync.errors import ProviderError
from sync.installations import (
    LOGIN_DISCOVERY_EVERY,
    Enqueuer,
    discover_installation,
)
from sync.providers.base import ProviderMember, ProviderOrg, TokenOrg
from sync.roles import outranks
from sync.roster import Plan, plan_member

log = logging.getLogger(__name__)

PROVIDERS = ("github", "gitlab")


@dataclass(frozen=True, slots=True)
class LoginWorkspace:
    """A workspace the user can use after the login, with their role in it."""

    id: str
    name: str
    kind: str
    role: str


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: UserRef
    workspaces: tuple[LoginWorkspace, ...]


def login_sync(
    ctx: SyncContext, provider: str, access_token: str, enqueue: Enqueuer | None = None
) -> LoginResult:
    """Sync one user's memberships from their OAuth token.

    Returns the account and every workspace it can use, with its role.
    Raises ``InvalidUserToken`` (token rejected: 401),
    ``TransientProviderError`` / ``RateLimited`` (provider down: 503, nothing
    changed), other ``ProviderError`` (unusable answer), ``ValueError`` for an
    unknown provider name.

    Afterwards, GitHub orgs listed without a known app installation ask
    GitHub for one (at most hourly per org), and disconnected orgs the token
    lists again are reconnected; both queue a full sync through ``enqueue``
    when one is given.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    adapter = ctx.provider_for(provider, None)
    try:
        me = adapter.get_token_user(access_token)
        listed = _listed_orgs(adapter.iter_token_orgs(access_token))
    finally:
        close_provider(adapter)
    uid = me.provider_user_id
    kept = _still_members_elsewhere(ctx, provider, uid, listed)

    with ctx.session() as s:
        ident = store.get_identity(s, provider, uid)
        if ident is not None:
            actor = f"login:{ident.user_id}"
            user, created = store.get_or_create_user_for_identity(s, provider, uid, me.login, actor=actor)
        else:
            # The actor is "login:<user id>", but the id exists only once the
            # store has created the user: log under a one-off placeholder and
            # relabel those entries in this same transaction.
            placeholder = f"login:new-{secrets.token_hex(8)}"
            user, created = store.get_or_create_user_for_identity(
                s, provider, uid, me.login, actor=placeholder
            )
            actor = f"login:{user.id}"
            store.reattribute_activity(s, placeholder, actor)

        added = removed = changed = 0
        reconnected: set[str] = set()
        undiscovered: list[str] = []
        # Sorted by org id: concurrent logins lock workspaces in one order.
        for org_id in sorted(listed):
            token_org = listed[org_id]
            ws = store.get_provider_workspace(s, provider, org_id)
            if ws is None:
                ws = store.create_provider_workspace(
                    s, provider, org_id, token_org.org.login, actor=actor, owner=user,
                    installation_id=token_org.org.installation_id,
                )
            else:
                ws = store.lock_workspace(s, ws.id)
                if ws.status == "disconnected" and inst_store.last_disconnect_reason(s, ws.id) != "operator":
                    # The token just listed the org with this user in it: the
                    # org is back. An operator's disconnect stands until an
                    # operator reconnects.
                    store.reconnect(s, ws, actor=actor)
                    reconnected.add(ws.id)
                if token_org.org.login and token_org.org.login != ws.provider_org_login:
                    # The provider named the org by its id: a rename to follow.
                    store.rename_provider_workspace(s, ws, token_org.org.login, actor=actor)
            stored = store.roster(s, ws.id, only=[uid]).get(uid)
            assert token_org.role is not None  # _listed_orgs keeps only orgs that give access
            p = plan_member(stored, uid, ProviderMember(uid, me.login, token_org.role))
            a, r, c = apply_plan(s, ws, p, actor=actor)
            added, removed, changed = added + a, removed + r, changed + c
            store.claim_unowned(s, ws, user, actor=actor)
            if provider == "github" and (ws.installation_id is None or ws.id in reconnected):
                undiscovered.append(ws.id)

        # Orgs of this provider where the roster still lists the user but the
        # token no longer does: they left (or lost access).
        stale = [m.workspace_id for m in store.member_workspaces(s, provider, uid, except_org_ids=listed)]
        for ws_id in stale:
            if ws_id in kept:
                continue
            ws = store.lock_workspace(s, ws_id)
            _, r, _ = apply_plan(s, ws, Plan(removals=(uid,)), actor=actor)
            removed += r

        s.flush()
        result = LoginResult(
            UserRef(user.id, user.username),
            tuple(LoginWorkspace(ws.id, ws.name, ws.kind, role) for ws, role in store.user_workspaces(s, user)),
        )
    log.info(
        "login sync of %s user %s (%s): %d orgs listed, +%d -%d ~%d%s",
        provider, user.id, uid, len(listed), added, removed, changed,
        " (new account)" if created else "",
    )
    to_sync = [ws_id for ws_id in sorted(reconnected) if provider != "github"]
    to_sync += _discover_installations(ctx, undiscovered, reconnected, actor)
    if enqueue is not None:
        for ws_id in to_sync:
            try:
                enqueue.full_sync(ws_id, actor)
            except Exception as exc:  # noqa: BLE001 - the login itself succeeded and is committed
                # The scheduled resync and the reconciliation catch up.
                log.warning("login sync: could not queue a full sync of %s (%s)", ws_id, type(exc).__name__)
    return result


def _discover_installations(ctx: SyncContext, workspace_ids: list[str], reconnected: set[str],
                            actor: str) -> list[str]:
    """Ask GitHub about the app installation of orgs the login listed
    without one known (at most hourly per org) or just reconnected (always:
    the stored id may be the uninstalled one). Returns the workspaces that
    now have an installation to sync with. A provider failure here leaves
    the login's result as it is: the next resync asks again."""
    out: list[str] = []
    for ws_id in workspace_ids:
        again = ws_id in reconnected
        try:
            found = discover_installation(
                ctx, ws_id, trigger=actor, only_unknown=not again,
                min_age=None if again else LOGIN_DISCOVERY_EVERY,
            )
        except ProviderError as exc:
            log.warning("login sync: installation discovery for %s failed (%s)", ws_id, type(exc).__name__)
            continue
        if found is not None:
            out.append(ws_id)
    return out


def _still_members_elsewhere(
    ctx: SyncContext, provider: str, uid: int, listed: dict[int, TokenOrg]
) -> set[str]:
    """Workspaces where the user's roster entry stays although their token no
    longer lists the org.

    A user's token can miss an org they still belong to (GitHub's OAuth app
    access restrictions hide an org from the app; a token issued with fewer
    scopes). Where the service's own credentials can read the org (an app
    installation on GitHub, the service token on GitLab), they decide; where
    they cannot, or the check fails, the token's word stands for GitHub orgs
    without an installation (their membership changes only at login) and the
    entry is kept otherwise, for the next full sync to settle.
    """
    with ctx.session() as s:
        rows = store.member_workspaces(s, provider, uid, except_org_ids=listed)
    kept: set[str] = set()
    for row in rows:
        readable = row.status == "active" and row.link_status == "ok" and (
            provider == "gitlab" or row.installation_id is not None)
        if not readable:
            continue
        adapter = ctx.provider_for(provider, row.installation_id)
        org = ProviderOrg(provider="github" if provider == "github" else "gitlab", org_id=int(row.org_id or 0),
                          login=row.org_login or "", installation_id=row.installation_id)
        try:
            member = adapter.get_member(org, uid, row.login)
        except ProviderError as exc:
            log.warning("login sync: could not confirm that user %s left %s org %s (%s); kept",
                        uid, provider, row.org_id, type(exc).__name__)
            kept.add(row.workspace_id)
            continue
        finally:
            close_provider(adapter)
        if member is not None and member.role is not None:
            kept.add(row.workspace_id)
    return kept


def _listed_orgs(orgs: Iterable[TokenOrg]) -> dict[int, TokenOrg]:
    """Orgs that give the user access, one per id (the higher role wins if a
    paginated listing repeats one)."""
    listed: dict[int, TokenOrg] = {}
    for t in orgs:
        if t.role is None:
            continue  # pending invitation and the like: no access
        held = listed.get(t.org.org_id)
        if held is None or outranks(t.role, held.role):
            listed[t.org.org_id] = t
    return listed
