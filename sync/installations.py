"""The provider's word on installations, orgs and groups (SPEC section 6).

A webhook payload is a hint; these functions ask the provider:

- discovery: a GitHub workspace with no installation known asks
  ``GET /orgs/{org}/installation`` before a sync skips it (GitHub does not
  redeliver a missed ``installation.created``);
- hints: a payload naming another installation id than the stored one makes
  us read the live one, never re-point on the payload's say-so;
- verification: destructive hints (uninstall, org or group deleted, user
  deleted) are applied only once the provider confirms them;
- reconnect: a disconnected workspace comes back only after a successful read;
- reconciliation: the periodic ``GET /app/installations`` adopts
  installations nobody told us about and notices ones that are gone.

Provider errors propagate: ``TransientProviderError`` / ``RateLimited`` for
the caller to retry (a destructive hint is never applied blind), and other
``ProviderError`` for it to record.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from sqlalchemy.orm import Session

from models import installations as inst_store
from models import store
from models.errors import InvalidState
from models.store import WorkspaceView
from models.tables import Workspace, utcnow
from sync.context import SyncContext, close_provider
from sync.errors import NotFound, ProviderSaysGone
from sync.providers.base import CachedInstallations, ProviderInstallation, ProviderOrg

log = logging.getLogger(__name__)

# A login asks GitHub about an org without a known installation at most this
# often: logins are frequent, a missed installation webhook is rare.
LOGIN_DISCOVERY_EVERY = timedelta(hours=1)
# How often worker/cron.py runs the reconciliation (SPEC section 7: every
# minute): a missed installation webhook heals within this period. An
# unchanged app costs one conditional request answered 304, which GitHub
# does not count against the rate limit.
RECONCILE_EVERY = timedelta(minutes=1)

HINT_CONTRADICTED = "hint.contradicted"


class Enqueuer(Protocol):
    """Queues a full sync, serialised and coalesced per org (runtime.queues)."""

    def full_sync(self, workspace_id: str, trigger: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Org:
    workspace_id: str
    provider: str
    org_id: int
    login: str
    installation_id: int | None
    status: str

    def org(self) -> ProviderOrg:
        return ProviderOrg(provider="github" if self.provider == "github" else "gitlab",
                           org_id=self.org_id, login=self.login, installation_id=self.installation_id)


def _snapshot(ws: Workspace) -> _Org:
    if ws.kind != "provider" or ws.provider is None or ws.provider_org_id is None:
        raise InvalidState(f"workspace {ws.name!r} is not connected to a provider org")
    return _Org(ws.id, ws.provider, int(ws.provider_org_id), ws.provider_org_login or "",
                ws.installation_id, ws.status)


def _load(ctx: SyncContext, workspace_id: str) -> _Org:
    with ctx.session() as s:
        return _snapshot(store.get_workspace(s, workspace_id))


def live_installation(ctx: SyncContext, org: ProviderOrg) -> ProviderInstallation | None:
    """The app's installation on the org now, read with the app JWT."""
    provider = ctx.provider_for("github", None)
    try:
        return provider.get_org_installation(org)
    finally:
        close_provider(provider)


# --------------------------------------------------------------------------- discovery


def discover_installation(
    ctx: SyncContext, workspace_id: str, *, trigger: str, min_age: timedelta | None = None,
    only_unknown: bool = True,
) -> int | None:
    """Ask GitHub for the org's installation and store what it says.

    ``only_unknown``: only when no installation is stored (a sync about to
    skip the org). ``min_age``: not when the org was asked more recently
    (login). Returns the installation id stored afterwards.
    """
    with ctx.session() as s:
        ws = store.get_workspace(s, workspace_id)
        target = _snapshot(ws)
        if target.provider != "github" or (only_unknown and target.installation_id is not None):
            return target.installation_id
        if min_age is not None and inst_store.checked_since(ws, utcnow() - min_age):
            return target.installation_id
    found = live_installation(ctx, target.org())
    with ctx.session() as s:
        ws = store.lock_workspace(s, workspace_id)
        inst_store.mark_checked(s, ws)
        if found is not None:
            inst_store.set_installation(s, ws, found.installation_id, actor=trigger)
            if found.suspended:
                store.suspend(s, ws, actor=trigger)
        elif not only_unknown:
            inst_store.set_installation(s, ws, None, actor=trigger)
        log.info("installation discovery for %s: %s", workspace_id,
                 found.installation_id if found else "not installed")
        return ws.installation_id


def resolve_hint(ctx: SyncContext, workspace_id: str, hinted: int | None, *, actor: str) -> dict[str, Any]:
    """A payload naming an installation id other than the stored one: read the
    org's live installation and store that one. A late or replayed delivery
    carrying an old installation id therefore never re-points the workspace
    (its token exchange would fail and the org would look broken)."""
    target = _load(ctx, workspace_id)
    if target.provider != "github" or hinted is None or hinted == target.installation_id:
        return {}
    found = live_installation(ctx, target.org())
    live = found.installation_id if found is not None else None
    with ctx.session() as s:
        ws = store.lock_workspace(s, workspace_id)
        inst_store.mark_checked(s, ws)
        if live is not None and live != ws.installation_id:
            inst_store.set_installation(s, ws, live, actor=actor)
    return {"installation_hint": {"payload": hinted, "stored": target.installation_id, "live": live}}


# --------------------------------------------------------------------------- verification

Hint = Literal["installation.deleted", "organization.deleted", "group_destroy", "user_destroy"]


@dataclass(frozen=True, slots=True)
class Verdict:
    confirmed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def verify_uninstalled(ctx: SyncContext, workspace_id: str, *, actor: str) -> Verdict:
    """installation.deleted: confirmed only when GitHub reports no installation
    of the app on the org (a signed body replays under a new delivery id)."""
    target = _load(ctx, workspace_id)
    found = live_installation(ctx, target.org())
    if found is None:
        return Verdict(True, f"GitHub reports no installation of the app on {target.login}")
    with ctx.session() as s:
        ws = store.lock_workspace(s, workspace_id)
        inst_store.mark_checked(s, ws)
        if found.installation_id != ws.installation_id:
            # The hint was stale, but it showed our stored id may be: heal it.
            inst_store.set_installation(s, ws, found.installation_id, actor=actor)
    return Verdict(False, f"the app is still installed on {target.login} "
                          f"(installation {found.installation_id})",
                   {"live_installation": found.installation_id})


def verify_suspended(ctx: SyncContext, workspace_id: str) -> Verdict:
    """installation.suspend: a replayed one must not block the org's CI."""
    target = _load(ctx, workspace_id)
    found = live_installation(ctx, target.org())
    if found is not None and found.suspended:
        return Verdict(True, f"GitHub reports installation {found.installation_id} suspended")
    if found is None:
        return Verdict(False, f"GitHub reports no installation of the app on {target.login}")
    return Verdict(False, f"installation {found.installation_id} on {target.login} is not suspended",
                   {"live_installation": found.installation_id})


def verify_org_deleted(ctx: SyncContext, workspace_id: str) -> Verdict:
    """organization.deleted / group_destroy: confirmed only by a 404 for the
    org or group, read by its immutable id."""
    target = _load(ctx, workspace_id)
    provider = ctx.provider_for(target.provider, None)
    try:
        org = provider.get_org(target.org_id)
    except NotFound:
        return Verdict(True, f"{target.provider} answers 404 for {target.login} ({target.org_id})")
    finally:
        close_provider(provider)
    return Verdict(False, f"{target.provider} still has {org.login} ({target.org_id})", {"login": org.login})


def verify_user_deleted(ctx: SyncContext, provider_name: str, provider_user_id: int) -> Verdict:
    provider = ctx.provider_for(provider_name, None)
    try:
        user = provider.get_user(provider_user_id)
    finally:
        close_provider(provider)
    if user is None:
        return Verdict(True, f"{provider_name} answers 404 for user {provider_user_id}")
    return Verdict(False, f"{provider_name} still has user {user.login} ({provider_user_id})",
                   {"login": user.login})


def record_contradiction(
    session: Session, workspace_id: str | None, *, actor: str, hint: str, verdict: Verdict,
    subject: str | None = None,
) -> dict[str, Any]:
    """A hint the provider contradicts changes nothing but is recorded: in the
    activity log (``hint.contradicted``) and in the delivery's outcome."""
    store.log_activity(session, workspace_id, actor, HINT_CONTRADICTED, subject,
                       {"hint": hint, "reason": verdict.reason, **verdict.details})
    return {"result": "contradicted", "hint": hint, "reason": verdict.reason,
            "workspace": workspace_id, **verdict.details}


# --------------------------------------------------------------------------- reconnect


@dataclass(frozen=True, slots=True)
class Reconnection:
    """What ``reconnect_workspace`` came to."""

    result: Literal["reconnected", "unchanged"]
    workspace: WorkspaceView
    full_sync_queued: bool


def reconnect_workspace(ctx: SyncContext, workspace_id: str, *, actor: str, enqueue: Enqueuer) -> Reconnection:
    """Reconnect after a successful read of the provider, then queue a full
    sync. Raises ``ProviderSaysGone`` (and changes nothing) when the app is
    not installed, the installation is suspended, or the group is gone."""
    target = _load(ctx, workspace_id)
    live: int | None = None
    if target.provider == "github":
        found = live_installation(ctx, target.org())
        if found is None:
            raise ProviderSaysGone(f"the GitHub App is not installed on {target.login}")
        if found.suspended:
            raise ProviderSaysGone(f"the GitHub App installation on {target.login} is suspended")
        live = found.installation_id
    else:
        provider = ctx.provider_for(target.provider, None)
        try:
            provider.get_org(target.org_id)
        except NotFound:
            raise ProviderSaysGone(f"GitLab group {target.login} ({target.org_id}) is gone") from None
        finally:
            close_provider(provider)
    with ctx.session() as s:
        ws = store.lock_workspace(s, workspace_id)
        changed = False
        if live is not None:
            inst_store.mark_checked(s, ws)
            changed = inst_store.set_installation(s, ws, live, actor=actor)
        elif ws.link_status != "ok":
            changed = store.mark_link(s, ws, "ok", None, actor=actor)
        changed = store.reconnect(s, ws, actor=actor) or changed
        view = store.workspace_view(ws)
    if changed:
        enqueue.full_sync(workspace_id, actor)
    return Reconnection("reconnected" if changed else "unchanged", view, changed)


# --------------------------------------------------------------------------- reconciliation


class _DbInstallationCache:
    """The InstallationCache, loaded before the walk and saved after it, so
    the walk holds no database connection."""

    def __init__(self, pages: inst_store.CachedPages) -> None:
        self._pages = pages
        self.visited: set[str] = set()
        self.dirty: inst_store.CachedPages = {}

    def get(self, url: str) -> CachedInstallations | None:
        self.visited.add(url)
        entry = self._pages.get(url)
        if entry is None:
            return None
        etag, payload = entry
        try:
            items = [ProviderInstallation(int(i), int(a), str(login), str(kind), bool(susp))
                     for i, a, login, kind, susp in payload]
        except (TypeError, ValueError):
            return None  # unreadable row: ask unconditionally rather than trust it
        return CachedInstallations(etag, items)

    def put(self, url: str, page: CachedInstallations) -> None:
        self.visited.add(url)
        self.dirty[url] = (page.etag, [[i.installation_id, i.account_id, i.account_login, i.account_type,
                                        i.suspended] for i in page.installations])


def reconcile_installations(ctx: SyncContext, enqueue: Enqueuer, *, trigger: str = "reconcile") -> dict[str, Any]:
    """Compare the app's installations with the store and heal the difference.

    - an org installation with no workspace: the workspace is created (no
      owner until an operator transfers it: nobody is known to have
      connected it) and fully synced;
    - a workspace whose stored installation differs, is unknown, or which is
      disconnected or suspended against GitHub's word: re-pointed /
      reconnected / unsuspended and fully synced;
    - a connected workspace whose installation the listing lacks: verified
      with one read of the org's installation, then disconnected.
    The listing must be complete (every page read) before anything changes.
    """
    with ctx.session() as s:
        cache = _DbInstallationCache(inst_store.load_installation_pages(s))
    provider = ctx.provider_for("github", None)
    try:
        listing = provider.list_installations(cache)
        calls, not_modified = provider.api_calls, provider.not_modified
    finally:
        close_provider(provider)
    with ctx.session() as s:
        inst_store.save_installation_pages(s, cache.dirty, keep_only=cache.visited)
    live = {i.account_id: i for i in listing if i.is_org}
    report: dict[str, list[str]] = {"adopted": [], "repointed": [], "reconnected": [], "disconnected": [],
                                    "suspended": [], "unsuspended": []}
    to_sync: list[str] = []
    suspects: list[_Org] = []
    with ctx.session() as s:
        by_org = {int(ws.provider_org_id or 0): ws for ws in inst_store.github_workspaces(s)}
        for org_id, found in sorted(live.items()):
            ws = by_org.get(org_id)
            if ws is None:
                ws = store.create_provider_workspace(
                    s, "github", org_id, found.account_login, actor=trigger,
                    installation_id=found.installation_id,
                )
                report["adopted"].append(ws.id)
                if found.suspended:
                    store.suspend(s, ws, actor=trigger)
                else:
                    to_sync.append(ws.id)
                inst_store.mark_checked(s, ws)
                continue
            ws = store.lock_workspace(s, ws.id)
            inst_store.mark_checked(s, ws)
            # Same id with a broken link is left alone: the link broke for a
            # reason (permissions) that re-pointing would not fix.
            if ws.installation_id != found.installation_id:
                inst_store.set_installation(s, ws, found.installation_id, actor=trigger)
                report["repointed"].append(ws.id)
                to_sync.append(ws.id)
            if ws.status == "disconnected" and inst_store.last_disconnect_reason(s, ws.id) != "operator":
                # The app was reinstalled while we were not listening. An
                # operator's disconnect stands until an operator reconnects.
                store.reconnect(s, ws, actor=trigger)
                report["reconnected"].append(ws.id)
                to_sync.append(ws.id)
            if found.suspended and ws.status == "active":
                store.suspend(s, ws, actor=trigger)
                report["suspended"].append(ws.id)
            elif not found.suspended and ws.status == "suspended":
                store.unsuspend(s, ws, actor=trigger)
                report["unsuspended"].append(ws.id)
                to_sync.append(ws.id)
        for org_id, ws in sorted(by_org.items()):
            if org_id not in live and ws.installation_id is not None and ws.status != "disconnected":
                suspects.append(_snapshot(ws))
    for target in suspects:
        # Missing from the listing: confirm with the org's own installation
        # before taking access away (the listing may lag a reinstall).
        now = live_installation(ctx, target.org())
        with ctx.session() as s:
            ws = store.lock_workspace(s, target.workspace_id)
            inst_store.mark_checked(s, ws)
            if now is None:
                if store.disconnect(s, ws, actor=trigger, reason="app_uninstalled"):
                    report["disconnected"].append(ws.id)
            elif inst_store.set_installation(s, ws, now.installation_id, actor=trigger):
                report["repointed"].append(ws.id)
                to_sync.append(ws.id)
    for ws_id in dict.fromkeys(to_sync):
        enqueue.full_sync(ws_id, trigger)
    result: dict[str, Any] = {k: v for k, v in report.items() if v}
    result.update({"installations": len(listing), "orgs": len(live), "listing_calls": calls,
                   "not_modified": not_modified, "verified_missing": len(suspects),
                   "full_syncs_queued": len(dict.fromkeys(to_sync))})
    log.info("installation reconciliation: %s", result)
    return result
