"""Full and targeted org syncs (SPEC section 6), and the webhook helpers.

Shape of every sync:
1. a short transaction opens a ``SyncRun`` (its id is the actor of every
   change, ``sync:<run id>``) and snapshots what the provider call needs;
2. the provider is read with no transaction open (a 1,000-page roster walk
   must not pin a database connection or hold a lock);
3. one transaction re-loads the stored roster under the workspace's row lock,
   plans, applies with bulk statements, and records the run.

Failure rules (each covered by tests/sync/test_orgs.py):
- A listing that stops part way (5xx, timeout, rate limit, revoked token)
  applies NOTHING, neither removals nor the adds and role changes seen so
  far: the run records why and how many pages were read; the next sync
  (RQ retry, reschedule or cron) reads the whole org again. Pages fetched
  before the failure are kept in the ETag cache, so that retry is cheap.
- ``RateLimited``: run ``rate_limited`` with ``reset_at`` in its details, then
  re-raised for the job layer to reschedule. Never slept on here.
- ``TransientProviderError``: run ``failed``, re-raised (RQ retries).
- ``AuthBroken`` (and the org not being found with our credentials): the
  workspace link is marked broken, run ``auth_broken``, roster untouched,
  returned normally (retrying cannot fix credentials).
- Other ``ProviderError``: run ``failed``, returned normally.
- Mass removal: run ``held``, nothing at all applied, until ``force=True``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from models import installations as inst_store
from models import store
from models.errors import InvalidState
from models.store import ActivityEntry, RunOutcome, RunResult, WorkspaceView
from models.tables import Workspace
from sync.apply import DbPageCache, apply_plan
from sync.context import SyncContext, close_provider
from sync.errors import AuthBroken, NotFound, ProviderError, RateLimited, TransientProviderError
from sync.installations import discover_installation
from sync.providers.base import Provider, ProviderMember, ProviderOrg
from sync.roster import Plan, plan, plan_member, removal_held

log = logging.getLogger(__name__)

__all__ = ["Adoption", "adopt_installation", "full_sync", "member_sync", "rename_workspace"]


@dataclass(frozen=True, slots=True)
class Adoption:
    """What ``adopt_installation`` did with an installation."""

    workspace_id: str
    adopted: bool  # the workspace was created
    changed: bool  # created, or its installation re-attached / reconnected


@dataclass(frozen=True, slots=True)
class _Target:
    """What a provider read needs, copied out of the session that loaded it."""

    workspace_id: str
    provider: str
    org_id: int
    login: str
    installation_id: int | None

    def org(self) -> ProviderOrg:
        return ProviderOrg(
            provider="github" if self.provider == "github" else "gitlab",
            org_id=self.org_id,
            login=self.login,
            installation_id=self.installation_id,
        )


def _target(ws: Workspace) -> _Target:
    if ws.kind != "provider" or ws.provider is None or ws.provider_org_id is None:
        raise InvalidState(f"workspace {ws.name!r} is not connected to a provider org")
    return _Target(ws.id, ws.provider, int(ws.provider_org_id), ws.provider_org_login or "",
                   ws.installation_id)


def _skip_reason(ws: Workspace) -> tuple[str, str] | None:
    """(code, sentence) when this workspace must not be synced now."""
    if ws.status == "disconnected":
        # Roster-derived access has ended; a sync would only churn a roster
        # nobody can use. Reconnecting triggers a full sync.
        return "disconnected", f"workspace {ws.name!r} is disconnected"
    if ws.status == "suspended":
        # GitHub refuses tokens for a suspended installation anyway.
        return "suspended", f"workspace {ws.name!r} is suspended"
    if ws.provider == "github" and ws.installation_id is None:
        return (
            "no_installation",
            (
                f"the GitHub App is not installed on {ws.provider_org_login}: "
                "membership changes only when members log in"
            ),
        )
    return None


def _needs_discovery(ws: Workspace) -> bool:
    return ws.provider == "github" and ws.installation_id is None and ws.status == "active"


def _discover(ctx: SyncContext, target: _Target, run_id: int) -> None:
    """Ask GitHub for the org's installation before skipping the org: the
    webhook that announced it may never have arrived, and GitHub does not
    redeliver. Unreachable: the run fails and the job retries. Any other
    provider answer (no app credentials configured): the skip says why."""
    try:
        discover_installation(ctx, target.workspace_id, trigger=f"sync:{run_id}")
    except (RateLimited, TransientProviderError) as exc:
        _record_failure(ctx, target, run_id, exc, None, 1, 0, {"stage": "installation"})
    except ProviderError as exc:
        log.warning("installation discovery for %s failed: %s", target.workspace_id, exc)


def _counts(provider: Provider, base: tuple[int, int]) -> tuple[int, int]:
    return provider.api_calls - base[0], provider.not_modified - base[1]


# --------------------------------------------------------------------------- full sync


def full_sync(ctx: SyncContext, workspace_id: str, *, trigger: str, force: bool = False,
              hinted_absent: frozenset[int] = frozenset()) -> RunResult:
    """Re-read the whole org and bring the stored roster in line.

    Returns the recorded run. Raises
    ``RateLimited`` and ``TransientProviderError`` (after recording the run)
    for the job layer to reschedule or retry; ``WorkspaceNotFound`` and
    ``InvalidState`` (not a provider workspace) are permanent.
    """
    with ctx.session() as s:
        ws = store.get_workspace(s, workspace_id)
        target = _target(ws)
        run_id = store.open_run(s, ws, kind="full", trigger=trigger, forced=force).id
        # Roster changes committed after this point were made from a fresher
        # read than our listing (a webhook's member sync): see
        # store.settled_members_since.
        start_seq = store.latest_seq(s)
        discover = _needs_discovery(ws)
        if not discover:  # the common case: one transaction to start the run
            skipped, stored_before = _skip_or_cache(s, ws, run_id)
    if discover:
        _discover(ctx, target, run_id)
        with ctx.session() as s:
            ws = store.get_workspace(s, workspace_id)
            skipped, stored_before = _skip_or_cache(s, ws, run_id)
    if isinstance(skipped, RunResult):
        return skipped
    cache = skipped
    target = _target(ws)

    provider = ctx.provider_for(target.provider, target.installation_id)
    base = (provider.api_calls, provider.not_modified)
    listing: list[ProviderMember] = []
    pages = 0
    stage = "org"
    try:
        org = provider.get_org(target.org_id)
        if org.org_id != target.org_id:
            raise ProviderError(f"asked for org {target.org_id}, the provider answered {org.org_id}")
        org = replace(org, installation_id=target.installation_id)
        stage = "roster"
        # Pages are consumed as they arrive; only the compact members stay.
        for page in provider.iter_roster(org, cache):
            pages += 1
            listing.extend(page.members)
        stage = "confirm_removals"
        confirmed_absent, confirmation = _confirm_removals(ctx, provider, org, stored_before, listing, force,
                                                           hinted_absent)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded; _record_failure re-raises
        calls, not_modified = _counts(provider, base)
        close_provider(provider)
        return _record_failure(ctx, target, run_id, exc, cache, calls, not_modified,
                               {"pages_read": pages, "stage": stage})
    calls, not_modified = _counts(provider, base)
    close_provider(provider)

    with ctx.session() as s:
        ws = store.lock_workspace(s, workspace_id)
        actor = f"sync:{run_id}"
        skip = _skip_reason(ws)
        if skip is not None:  # disconnected or suspended while we were reading
            if cache is not None:
                cache.flush(s, prune=False)
            return store.finish_run(s, run_id, RunOutcome("skipped", api_calls=calls, not_modified=not_modified,
                                                    error=skip[1], details={"reason": skip[0]}))
        details: dict[str, Any] = {"pages": pages}
        old_login = ws.provider_org_login
        if org.login and org.login != old_login:
            store.rename_provider_workspace(s, ws, org.login, actor=actor)
            details["renamed"] = {"from": old_login, "to": org.login}
        if ws.link_status != "ok":
            store.mark_link(s, ws, "ok", None, actor=actor)
        stored = store.roster(s, ws.id)
        p = plan(stored, listing, complete=True)
        del listing
        settled = store.settled_members_since(s, ws.id, start_seq, actor, run_id)
        if settled:
            # Members re-read by another run while we were listing: their
            # entry is newer than our page, which must not undo it (re-add a
            # member who just left, or restore an old role).
            p = _without(p, settled)
            details["settled_meanwhile"] = len(settled)
        details.update({"members": p.seen, "stored": len(stored), "login_changes": len(p.login_changes)})
        if confirmation:
            details["removal_check"] = confirmation
        fraction = ctx.settings.max_removal_fraction
        # Change entries apply_plan leaves for finish_run to write with the
        # run's own: one counter update and one insert for both.
        deferred: list[ActivityEntry] = []
        if removal_held(len(stored), len(p.removals), fraction) and not force:
            details.update({
                "would_add": len(p.adds),
                "would_remove": len(p.removals),
                "would_change": len(p.role_changes),
                "max_removal_fraction": fraction,
            })
            error = (
                f"would remove {len(p.removals)} of {len(stored)} members (more than "
                f"{fraction:.0%}); nothing applied until an operator forces the sync"
            )
            log.warning("full sync of %s held: %s", workspace_id, error)
            outcome = RunOutcome("held", api_calls=calls, not_modified=not_modified,
                                 error=error, details=details)
        else:
            unconfirmed = [uid for uid in p.removals if uid not in confirmed_absent]
            if unconfirmed:
                # Stored meanwhile (a webhook's member sync) or not re-checked:
                # kept until a sync confirms them gone.
                details["removals_kept_unconfirmed"] = len(unconfirmed)
                p = replace(p, removals=tuple(u for u in p.removals if u in confirmed_absent))
            added, removed, changed = apply_plan(s, ws, p, actor=actor, defer_activity=deferred)
            store.mark_full_synced(ws)
            outcome = RunOutcome("ok", added, removed, changed, calls, not_modified, details=details)
        if cache is not None:
            cache.flush(s, prune=True)
        run = store.finish_run(s, run_id, outcome, deferred)
        log.info("full sync of %s: %s +%d -%d ~%d (%d calls, %d not modified)", workspace_id,
                 run.result, run.added, run.removed, run.changed, calls, not_modified)
        return run


def _skip_or_cache(s: Any, ws: Workspace, run_id: int
                   ) -> tuple[RunResult | DbPageCache | None, dict[int, store.StoredMember]]:
    """Before any provider request: the finished run if the workspace
    cannot be synced now, else the listing's page cache (None for GitLab,
    which has no conditional requests on member listings); with the stored
    roster as it was before the listing (whose absentees the removal check
    re-reads; see _confirm_removals)."""
    skip = _skip_reason(ws)
    if skip is not None:
        run = store.finish_run(s, run_id, RunOutcome("skipped", error=skip[1], details={"reason": skip[0]}))
        log.info("full sync of %s skipped: %s", ws.id, skip[0])
        return run, {}
    cache = DbPageCache.load(s, ws.id) if ws.provider == "github" else None
    return cache, store.roster(s, ws.id)


def _without(p: Plan, ids: set[int]) -> Plan:
    return replace(
        p,
        adds=tuple(m for m in p.adds if m.provider_user_id not in ids),
        removals=tuple(u for u in p.removals if u not in ids),
        role_changes=tuple(c for c in p.role_changes if c.member.provider_user_id not in ids),
        login_changes=tuple(m for m in p.login_changes if m.provider_user_id not in ids),
    )


# Up to this many planned removals are re-read one by one; more are checked
# with a second full listing instead (cheaper than hundreds of single reads).
RECHECK_ONE_BY_ONE = 100


def _confirm_removals(
    ctx: SyncContext,
    provider: Provider,
    org: ProviderOrg,
    stored: dict[int, store.StoredMember],
    listing: list[ProviderMember],
    force: bool,
    hinted_absent: frozenset[int] = frozenset(),
) -> tuple[set[int], dict[str, Any]]:
    """Confirm that members missing from the listing really left.

    Both providers paginate member lists by offset: when someone leaves while
    we walk the pages, everyone after them shifts one place up and a member
    can fall between two pages; a member whose role changes between GitHub's
    admin and member listings appears in neither. Without this check such a
    member would lose access until the next sync. Members found still present
    are appended to ``listing`` (the provider's current truth); the returned
    set holds the ids confirmed absent, the only ones a sync may remove.
    Provider errors propagate: the sync then applies nothing.

    ``hinted_absent``: members the batch that asked for this listing was told
    had left (membership-removed webhooks, answered by this listing). Two
    independent signals agree for them, the hint and the listing, so they
    need no third read: a burst of removals costs one listing, not two.

    Members whose stored role the provider never lists (GitHub's billing
    managers) are always read one by one, and count towards the mass-removal
    guard only once a read finds them gone: their absence from a listing
    says nothing.

    ``stored`` is the roster read when the run started (in the transaction
    that opened it, not one more). A member stored since then is no
    candidate here, so this sync cannot remove them: the plan made under the
    lock keeps every removal this check did not confirm.
    """
    candidates = plan(stored, listing, complete=True).removals
    if not candidates:
        return set(), {}
    unlisted = tuple(uid for uid in candidates if stored[uid].role in provider.unlisted_roles)
    listable = tuple(uid for uid in candidates if stored[uid].role not in provider.unlisted_roles)
    if removal_held(len(stored), len(listable), ctx.settings.max_removal_fraction) and not force:
        return set(), {}  # held anyway: spend no requests on it
    absent: set[int] = {uid for uid in listable if uid in hinted_absent}
    agreed = len(absent)
    listable = tuple(uid for uid in listable if uid not in hinted_absent)
    if not listable and not unlisted:
        return absent, {"method": "hinted", "candidates": agreed, "hinted": agreed, "still_members": 0}
    found = 0
    one_by_one = unlisted + listable if len(listable) <= RECHECK_ONE_BY_ONE else unlisted
    method = "member_reads"
    for uid in one_by_one:
        member = provider.get_member(org, uid, stored[uid].login)
        if member is None or member.role is None:
            absent.add(uid)
        else:
            listing.append(member)
            found += 1
    if len(listable) > RECHECK_ONE_BY_ONE:
        method = "second_listing" if not unlisted else "second_listing+member_reads"
        wanted = set(listable)
        seen: dict[int, ProviderMember] = {}
        for page in provider.iter_roster(org, None):
            for m in page.members:
                if m.provider_user_id in wanted and m.role is not None:
                    seen[m.provider_user_id] = m
        absent |= wanted - seen.keys()
        listing.extend(seen.values())
        found += len(seen)
    if found:
        log.warning("full sync of %s %s: %d member(s) missing from the listing are still members",
                    org.provider, org.login, found)
    return absent, {"method": method, "candidates": len(candidates), "hinted": agreed,
                    "still_members": found}


def _record_failure(
    ctx: SyncContext,
    target: _Target,
    run_id: int,
    exc: Exception,
    cache: DbPageCache | None,
    calls: int,
    not_modified: int,
    details: dict[str, Any],
) -> RunResult:
    """Record a run that could not read the provider; re-raise what the job
    layer must act on (rate limit, transient error, anything unexpected)."""
    broken = False
    if isinstance(exc, RateLimited):
        result = "rate_limited"
        details = {**details, "reset_at": exc.reset_at.isoformat(), "secondary": exc.secondary}
    elif isinstance(exc, AuthBroken | NotFound):
        # A 404 for the org itself, read with our own credentials: either the
        # org is gone (its deletion webhook disconnects it) or we lost sight
        # of it. Either way the roster stays as it is and status says why.
        result, broken = "auth_broken", True
    else:
        result = "failed"
    reraise = not isinstance(exc, ProviderError) or isinstance(exc, RateLimited | TransientProviderError)
    message = str(exc) if isinstance(exc, ProviderError) else f"unexpected error: {type(exc).__name__}"
    outcome = RunOutcome(result, api_calls=calls, not_modified=not_modified, error=message,
                         details={**details, "error_type": type(exc).__name__})
    try:
        with ctx.session() as s:
            ws = store.lock_workspace(s, target.workspace_id)
            if broken:
                store.mark_link(s, ws, "broken", message, actor=f"sync:{run_id}")
            if cache is not None:
                cache.flush(s, prune=False)
            recorded = store.finish_run(s, run_id, outcome)
    except Exception:
        if reraise:
            # The provider error is what the job layer must see; the failed
            # bookkeeping is logged, not allowed to mask it.
            log.exception("could not record sync run %s", run_id)
            raise exc from None
        raise
    log.warning("sync run %s of %s: %s (%s)", run_id, target.workspace_id, result, message)
    if reraise:
        raise exc
    return recorded


# --------------------------------------------------------------------------- one member


def member_sync(
    ctx: SyncContext,
    workspace_id: str,
    provider_user_id: int,
    login: str | None,
    *,
    trigger: str,
) -> RunResult:
    """Re-read one member (a membership webhook is only a hint) and add,
    update or remove just that roster entry.

    Same errors as ``full_sync``: ``RateLimited`` and
    ``TransientProviderError`` are recorded and re-raised.
    """
    uid = int(provider_user_id)
    with ctx.session() as s:
        ws = store.get_workspace(s, workspace_id)
        target = _target(ws)
        run_id = store.open_run(s, ws, kind="member", trigger=trigger).id
        skip = _skip_reason(ws)
        if skip is not None:
            return store.finish_run(s, run_id, RunOutcome("skipped", error=skip[1],
                                                    details={"reason": skip[0], "provider_user_id": uid}))
        if not login:
            entry = store.roster(s, ws.id, only=[uid]).get(uid)
            ident = store.get_identity(s, target.provider, uid)
            login = entry.login if entry is not None else (ident.login if ident is not None else None)

    provider = ctx.provider_for(target.provider, target.installation_id)
    base = (provider.api_calls, provider.not_modified)
    try:
        current = provider.get_member(target.org(), uid, login)
    except Exception as exc:  # noqa: BLE001 - recorded, then re-raised when the job must act
        calls, not_modified = _counts(provider, base)
        close_provider(provider)
        return _record_failure(ctx, target, run_id, exc, None, calls, not_modified,
                               {"provider_user_id": uid, "stage": "member"})
    calls, not_modified = _counts(provider, base)
    close_provider(provider)

    with ctx.session() as s:
        ws = store.lock_workspace(s, workspace_id)
        skip = _skip_reason(ws)
        if skip is not None:
            return store.finish_run(s, run_id, RunOutcome("skipped", api_calls=calls, error=skip[1],
                                                    details={"reason": skip[0], "provider_user_id": uid}))
        stored = store.roster(s, ws.id, only=[uid]).get(uid)
        p = plan_member(stored, uid, current)
        deferred: list[ActivityEntry] = []
        added, removed, changed = apply_plan(s, ws, p, actor=f"sync:{run_id}", defer_activity=deferred)
        details = {
            "provider_user_id": uid,
            "member": current is not None and current.role is not None,
            "role": current.role if current is not None else None,
            "login": current.login if current is not None else login,
        }
        return store.finish_run(s, run_id, RunOutcome("ok", added, removed, changed, calls, not_modified,
                                                details=details), deferred)


# --------------------------------------------------------------------------- webhook helpers


def rename_workspace(
    ctx: SyncContext, workspace_id: str, *, trigger: str, new_login: str | None = None
) -> WorkspaceView:
    """Follow an org/group rename: the webhook's new name is only a hint, the
    org is re-read by its immutable id (a path can be re-taken by anyone).

    ``new_login`` is used only when the org cannot be read with our
    credentials (GitHub without the app still reads the public profile).
    Returns the workspace as it is now. Raises ``RateLimited`` /
    ``TransientProviderError``; ``AuthBroken`` marks the link broken.
    """
    with ctx.session() as s:
        target = _target(store.get_workspace(s, workspace_id))
    provider = ctx.provider_for(target.provider, target.installation_id)
    broken: str | None = None
    try:
        current: str | None = provider.get_org(target.org_id).login
    except (AuthBroken, NotFound) as exc:
        current, broken = new_login, str(exc)
    finally:
        close_provider(provider)
    with ctx.session() as s:
        ws = store.lock_workspace(s, workspace_id)
        if broken is not None:
            store.mark_link(s, ws, "broken", broken, actor=trigger)
        if current and current != ws.provider_org_login:
            store.rename_provider_workspace(s, ws, current, actor=trigger)
        return store.workspace_view(ws)


def adopt_installation(
    ctx: SyncContext,
    installation_id: int,
    account_id: int,
    account_login: str,
    sender_id: int | None,
    *,
    trigger: str,
) -> Adoption:
    """Take on a GitHub App installation that GitHub confirmed is live.

    Unknown org: the provider workspace is created; its owner is the
    installing user when they have an account, else they become owner at
    their first login (pending owner). Known org: the installation id is
    (re)attached and the workspace reconnected. No sync runs here: the
    caller queues the full sync through the Enqueuer, which serialises and
    coalesces it with every other sync of the org.
    """
    with ctx.session() as s:
        ws = store.get_provider_workspace(s, "github", int(account_id))
        adopted = ws is None
        changed = adopted
        if ws is None:
            ws = store.create_provider_workspace(
                s, "github", int(account_id), account_login, actor=trigger,
                installation_id=int(installation_id),
                pending_owner_provider_user_id=int(sender_id) if sender_id is not None else None,
            )
        else:
            ws = store.lock_workspace(s, ws.id)
            if (
                ws.installation_id != int(installation_id)
                or ws.link_status != "ok"
                or ws.status == "disconnected"
            ):
                store.reconnect(s, ws, actor=trigger, installation_id=int(installation_id))
                changed = True
        inst_store.mark_checked(s, ws)
        return Adoption(ws.id, adopted, changed)
