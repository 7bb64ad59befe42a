"""Delivery → action: what a recorded webhook delivery makes the service do.

Runs in the delivery job, never in the web request (which only verifies,
records and queues). Webhooks are hints: a membership event re-reads that one
member from the provider, a structural event queues a full sync, and the
provider's current answer decides, so deliveries that arrive late, twice or
out of order cannot leave a wrong roster behind.

``triage`` is the cheap part, run by the web view too: it decides from the
payload and the store alone (no provider calls) whether a delivery needs a
job at all, so the queue is not flooded by events nobody acts on.

Routing (SPEC section 6)::

    GitHub
      installation.created / unsuspend / new_permissions_accepted
                                    → (unsuspend, reconnect) + full sync
      installation.deleted          → disconnect, once GitHub reports no
                                      installation on the org
      installation.suspend          → suspend, once GitHub reports it suspended
      installation_target.renamed   → rename + full sync
      organization.renamed          → rename + full sync
      organization.deleted          → disconnect, once GitHub answers 404
                                      for the org
      organization.member_added / member_removed
                                    → re-read that member (member_sync)
      organization.member_invited   → recorded; no access until accepted
      github_app_authorization.revoked
                                    → recorded; no stored state depends on it
      an installation id other than the stored one
                                    → a hint: the org's live installation is
                                      read and stored (never the payload's)
      an installation of an org the store does not hold
                                    → adopt GitHub's live installation
                                      (workspace created, full sync queued)
      everything else               → ignored
    GitLab (Member Hook / Subgroup Hook / System Hook)
      user_add_to_group / user_update_for_group / user_remove_from_group
                                    → re-read that member (member_sync)
      group_rename                  → rename + full sync
      group_destroy                 → disconnect, once GET /groups/:id is 404
      user_rename                   → relabel the user's identity and roster logins
      user_destroy                  → remove the user id from every GitLab
                                      roster, once GET /users/:id is 404
      any event of a disconnected group that GitLab can read again
                                    → reconnect + full sync
      a group the store does not hold (subgroups: not mirrored) → ignored
      everything else               → ignored

A destructive hint the provider contradicts changes nothing: the delivery is
processed with ``result: contradicted`` and the reason, and the activity log
gets ``hint.contradicted``. Full syncs are always queued through the
Enqueuer (serialised and coalesced per org), never run inline here.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict

from sqlalchemy.orm import Session

from models import deliveries, store
from models import installations as inst_store
from models.errors import StoreError
from models.ids import parse_id
from models.tables import Workspace, utcnow
from sync import installations, orgs, outcomes
from sync.context import SyncContext
from sync.errors import ProviderError, ProviderSaysGone, RateLimited, TransientProviderError
from sync.providers.base import ProviderOrg


class Enqueuer(Protocol):
    """How event handling asks for more work without knowing about RQ.

    The worker passes one backed by runtime.queues (a full sync already queued
    for the workspace absorbs the new trigger); tests may pass a list."""

    def full_sync(self, workspace_id: str, trigger: str) -> None: ...


# --------------------------------------------------------------------------- payloads
# Only the fields read here; real deliveries carry many more, which are ignored.


class Account(TypedDict, total=False):
    id: int
    login: str
    type: str  # "Organization" | "User" | "Enterprise"


class Installation(TypedDict, total=False):
    id: int
    account: Account
    target_type: str


class OrgMembership(TypedDict, total=False):
    user: Account
    role: str
    state: str


class GitHubPayload(TypedDict, total=False):
    action: str
    installation: Installation
    organization: Account
    account: Account  # installation_target events name the renamed account here
    membership: OrgMembership
    sender: Account


class GitLabPayload(TypedDict, total=False):
    event_name: str
    object_kind: str
    group_id: int
    parent_group_id: int | None
    full_path: str
    path: str
    user_id: int
    user_username: str
    username: str


GITHUB_STRUCTURAL = {
    ("installation", "created"),
    ("installation", "unsuspend"),
    ("installation", "new_permissions_accepted"),
    ("installation_target", "renamed"),
    ("organization", "renamed"),
}
GITHUB_DISCONNECT = {("installation", "deleted"), ("organization", "deleted")}
GITHUB_MEMBER = {("organization", "member_added"), ("organization", "member_removed")}
GITHUB_ACTED_ON = GITHUB_STRUCTURAL | GITHUB_DISCONNECT | GITHUB_MEMBER | {("installation", "suspend")}
# Never adopt from these: the installation is gone, or cannot be read.
NO_ADOPTION = {("installation", "deleted"), ("installation", "suspend"), ("organization", "deleted")}

GITLAB_HOOKS = ("Member Hook", "Subgroup Hook", "System Hook")
GITLAB_MEMBER = ("user_add_to_group", "user_update_for_group", "user_remove_from_group")
GITLAB_GROUP = ("group_rename", "group_destroy")
GITLAB_USER = ("user_rename", "user_destroy")


def _int(value: Any) -> int | None:
    # bool is an int subclass; a true/false where an id belongs is not an id.
    return parse_id(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- triage


Decision = Literal["act", "ignore"]


@dataclass(frozen=True, slots=True)
class Triage:
    decision: Decision
    reason: str = ""
    action: str | None = None  # what the job will do, for logs and outcomes
    workspace_id: str | None = None
    org_key: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def act(self) -> bool:
        return self.decision == "act"


def _ignore(reason: str, org_key: str | None = None, **details: Any) -> Triage:
    return Triage("ignore", reason, org_key=org_key, details=details)


def github_action(payload: dict[str, Any]) -> str | None:
    return _str(payload.get("action"))


def gitlab_action(payload: dict[str, Any]) -> str | None:
    # System hooks name the event in event_name; a few newer ones use object_kind.
    return _str(payload.get("event_name")) or _str(payload.get("object_kind"))


@dataclass(frozen=True, slots=True)
class _GitHubTarget:
    installation_id: int | None
    org_id: int | None
    org_login: str | None
    is_org: bool


def _github_target(event: str, payload: dict[str, Any]) -> _GitHubTarget:
    inst = _dict(payload.get("installation"))
    account = _dict(inst.get("account")) or _dict(payload.get("account"))
    org = _dict(payload.get("organization"))
    org_id = _int(org.get("id")) or _int(account.get("id"))
    org_login = _str(org.get("login")) or _str(account.get("login"))
    # GitHub's own examples disagree on account.type and target_type for org
    # installations; either saying Organization, or an organization object
    # in the payload, is enough.
    is_org = bool(org) or "Organization" in (
        account.get("type"), inst.get("target_type"), payload.get("target_type")
    )
    return _GitHubTarget(_int(inst.get("id")), org_id, org_login, is_org)


def github_org_key(payload: dict[str, Any]) -> str | None:
    t = _github_target("", payload)
    return f"github:{t.org_id}" if t.org_id is not None else None


def gitlab_org_key(payload: dict[str, Any]) -> str | None:
    gid = _int(payload.get("group_id"))
    return f"gitlab:{gid}" if gid is not None else None


def _github_workspace(session: Session, t: _GitHubTarget) -> Workspace | None:
    if t.installation_id is not None:
        ws = store.get_workspace_by_installation(session, t.installation_id)
        if ws is not None:
            return ws
    if t.org_id is not None:
        return store.get_provider_workspace(session, "github", t.org_id)
    return None


def triage_github(session: Session, event: str, payload: dict[str, Any]) -> Triage:
    action = github_action(payload)
    key = (event, action or "")
    t = _github_target(event, payload)
    org_key = f"github:{t.org_id}" if t.org_id is not None else None
    if event == "github_app_authorization":
        # The user revoked their OAuth grant. orgsync never stores user tokens
        # (login sync uses the token once), and org access follows org
        # membership, not the grant, so there is nothing to revoke.
        return _ignore("oauth grant revoked; orgsync stores no user token to revoke", org_key)
    known = (
        store.get_workspace_by_installation(session, t.installation_id)
        if t.installation_id is not None else None
    )
    if t.installation_id is not None and known is None:
        org_ws = store.get_provider_workspace(session, "github", t.org_id) if t.org_id is not None else None
        if org_ws is not None and key not in GITHUB_ACTED_ON and key != ("organization", "member_invited"):
            # A known org under an installation id we do not hold: a hint to
            # read its live installation, never to re-point on its word.
            return Triage("act", action="installation_hint", workspace_id=org_ws.id, org_key=org_key)
        if org_ws is None and key not in NO_ADOPTION and t.org_id is not None and t.org_login:
            # Whether the account is an organization is decided in the job,
            # one way for every action: GitHub's installation record, else
            # the payload's target_type (octokit's examples contradict
            # account.type and target_type).
            return Triage("act", action="adopt_installation", org_key=org_key)
    if key == ("organization", "member_invited"):
        return _ignore("an invitation gives no access until it is accepted", org_key)
    if key not in GITHUB_ACTED_ON:
        return _ignore(f"orgsync does not act on {event}{'.' + action if action else ''}", org_key)
    ws = known or _github_workspace(session, t)
    if ws is None:
        return _ignore("no workspace for this organization or installation", org_key)
    return Triage("act", action=f"{event}.{action}", workspace_id=ws.id, org_key=org_key)


def triage_gitlab(session: Session, hook: str, payload: dict[str, Any]) -> Triage:
    name = gitlab_action(payload) or ""
    org_key = gitlab_org_key(payload)
    if hook not in GITLAB_HOOKS:
        return _ignore(f"orgsync does not act on {hook}", org_key)
    if name in GITLAB_USER:
        if _int(payload.get("user_id")) is None:
            return _ignore("the payload names no user id", org_key)
        return Triage("act", action=name, org_key=org_key)
    if name not in GITLAB_MEMBER + GITLAB_GROUP:
        return _ignore(f"orgsync does not act on {name or 'this event'}", org_key)
    if payload.get("parent_group_id") is not None:
        return _ignore("subgroup membership is not mirrored", org_key)
    group_id = _int(payload.get("group_id"))
    if group_id is None:
        return _ignore("the payload names no group id", org_key)
    ws = store.get_provider_workspace(session, "gitlab", group_id)
    if ws is None:
        # Groups are looked up by id, and the store holds top-level groups
        # only: events of subgroups and of groups nobody connected land here.
        return _ignore("no workspace for this group (subgroups are not mirrored)", org_key)
    return Triage("act", action=name, workspace_id=ws.id, org_key=org_key)


def triage(session: Session, provider: str, event: str, payload: dict[str, Any]) -> Triage:
    if provider == "github":
        return triage_github(session, event, payload)
    if provider == "gitlab":
        return triage_gitlab(session, event, payload)
    return _ignore(f"unknown provider {provider}")


# --------------------------------------------------------------------------- processing


def _run_ids(result: dict[str, Any]) -> list[int]:
    sync = result.get("sync")
    if isinstance(sync, dict) and isinstance(sync.get("id"), int):
        return [sync["id"]]
    return []


@dataclass(frozen=True, slots=True)
class Handled:
    """What handling one delivery came to (the pipeline records it)."""

    status: str  # processed | ignored | failed
    outcome: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def handle_delivery(
    ctx: SyncContext, delivery_id: str, provider: str, event: str, payload_text: str, enqueue: Enqueuer
) -> Handled:
    """Act on one recorded delivery, re-reading the provider's truth.

    Raises ``RateLimited`` and ``TransientProviderError`` for the pipeline to
    defer or retry (nothing was applied from this delivery). Permanent
    provider and store errors come back as a failed ``Handled``: retrying
    gives the same answer.
    """
    with ctx.session() as s:
        first_seq = store.latest_seq(s)
    actor = f"webhook:{delivery_id}"
    try:
        payload = json.loads(payload_text)
    except ValueError as exc:
        payload = f"not JSON ({exc})"
    if not isinstance(payload, dict):
        # The view only records JSON objects; this is a corrupted row.
        return Handled(deliveries.FAILED, error="invalid payload: not a JSON object")
    try:
        with ctx.session() as s:
            decision = triage(s, provider, event, payload)
        if not decision.act:
            return Handled(deliveries.IGNORED, {"result": "ignored", "reason": decision.reason,
                                                **decision.details})
        if provider == "github":
            result = _process_github(ctx, event, payload, decision, actor, enqueue)
        else:
            result = _process_gitlab(ctx, payload, decision, actor, enqueue)
    except (RateLimited, TransientProviderError):
        raise
    except (ProviderError, StoreError) as exc:
        return Handled(deliveries.FAILED, error=f"{type(exc).__name__}: {exc}")
    if result.get("result") == "ignored":
        extra = {k: v for k, v in result.items() if k not in ("result", "reason")}
        return Handled(deliveries.IGNORED, {"result": "ignored", "reason": str(result.get("reason", "")),
                                            **extra})
    run = result.get("sync")
    if isinstance(run, dict) and run.get("result") in ("failed", "auth_broken"):
        # The sync could not read the provider (credentials, a permanent
        # error): the run says what broke; the delivery stays replayable.
        return Handled(deliveries.FAILED, error=f"sync run {run.get('id')} {run.get('result')}: "
                                                f"{run.get('error') or ''}".strip())
    with ctx.session() as s:
        actors = [actor] + [f"sync:{run_id}" for run_id in _run_ids(result)]
        # The entries this delivery caused: its own (actor ``webhook:<id>``)
        # and those of the sync runs it ran inline (actor ``sync:<run id>``).
        result["activity"] = store.activity_seqs(s, actors, after=first_seq)
    return Handled(deliveries.PROCESSED, result)


def process_delivery(ctx: SyncContext, delivery_id: str, enqueue: Enqueuer) -> str:
    """Process one recorded delivery on its own, outside a lane drain (tests,
    an operator's inline run); returns its final status.

    Idempotent: a delivery already processed or ignored is left alone.
    ``RateLimited`` and ``TransientProviderError`` propagate after the row is
    made due again (deferred / retrying).
    """
    with ctx.session() as s:
        if not deliveries.begin(s, delivery_id):
            return deliveries.get_delivery(s, delivery_id).status
        d = deliveries.get_delivery(s, delivery_id)
        provider, event, payload_text = d.provider, d.event, d.payload
    try:
        handled = handle_delivery(ctx, delivery_id, provider, event, payload_text, enqueue)
    except RateLimited as exc:
        with ctx.session() as s:
            deliveries.defer(s, [delivery_id], None, exc.reset_at, "rate limited")
        raise
    except TransientProviderError as exc:
        with ctx.session() as s:
            deliveries.retry_later(s, [delivery_id], None, utcnow(),
                                   f"transient provider error (retrying): {exc}")
        raise
    except Exception as exc:
        with ctx.session() as s:
            deliveries.mark_failed(s, delivery_id, f"{type(exc).__name__}: {exc}")
        raise
    with ctx.session() as s:
        record(s, delivery_id, handled, holder=None)
    return handled.status


def record(session: Session, delivery_id: str, handled: Handled, *, holder: str | None) -> None:
    """Write a Handled onto its row (only while ``holder`` still holds it)."""
    if handled.status == deliveries.PROCESSED:
        deliveries.finish_processed(session, [delivery_id], holder, handled.outcome)
    elif handled.status == deliveries.IGNORED:
        outcome = dict(handled.outcome)
        reason = str(outcome.pop("reason", ""))
        outcome.pop("result", None)
        deliveries.finish_ignored(session, [delivery_id], holder, reason, **outcome)
    else:
        deliveries.finish_failed(session, [delivery_id], holder, handled.error or "failed")


def _trigger(actor: str) -> str:
    return actor  # "webhook:<delivery id>": the sync run names what started it


def _full_sync(enqueue: Enqueuer, workspace_id: str, actor: str) -> None:
    # Coalesced by the enqueuer: one queued full sync per workspace; a second
    # trigger joins it.
    enqueue.full_sync(workspace_id, _trigger(actor))


def _process_github(
    ctx: SyncContext, event: str, payload: dict[str, Any], decision: Triage, actor: str, enqueue: Enqueuer
) -> dict[str, Any]:
    action = github_action(payload) or ""
    key = (event, action)
    t = _github_target(event, payload)
    if decision.action == "adopt_installation":
        return _adopt(ctx, key, t, payload, actor, enqueue)
    assert decision.workspace_id is not None
    ws_id = decision.workspace_id
    if key == ("installation", "deleted"):
        return _verified_disconnect(ctx, ws_id, "installation.deleted", "app_uninstalled", actor,
                                    lambda: installations.verify_uninstalled(ctx, ws_id, actor=actor))
    if key == ("organization", "deleted"):
        return _verified_disconnect(ctx, ws_id, "organization.deleted", "org_deleted", actor,
                                    lambda: installations.verify_org_deleted(ctx, ws_id))
    # Any other event: its installation id is a hint, checked against the
    # live installation when it differs from ours.
    hint = installations.resolve_hint(ctx, ws_id, t.installation_id, actor=actor)
    if decision.action == "installation_hint":
        seen = hint.get("installation_hint", {})
        if seen.get("live") is not None and seen.get("live") != seen.get("stored"):
            _full_sync(enqueue, ws_id, actor)
            return {"result": "full_sync_queued", "workspace": ws_id, **hint}
        return {"result": "ignored", "reason": "the installation it names is not the org's live one",
                "workspace": ws_id, **hint}
    if key in GITHUB_MEMBER:
        user = _dict(_dict(payload.get("membership")).get("user")) or _dict(payload.get("member"))
        uid, login = _int(user.get("id")), _str(user.get("login"))
        if uid is None:
            return {"result": "ignored", "reason": "the payload names no member"}
        return {**_member_sync(ctx, ws_id, uid, login, actor), **hint}
    if key == ("installation", "created"):
        with ctx.session() as s:
            ws = store.get_workspace(s, ws_id)
            status = ws.status
            by_operator = status == "disconnected" and inst_store.last_disconnect_reason(s, ws_id) == "operator"
        if status == "disconnected":
            if by_operator:
                return {"result": "ignored", "workspace": ws_id,
                        "reason": "disconnected by an operator; an operator reconnects it"}
            # Reinstalled after an uninstall: reconnect once GitHub confirms.
            return _reconnect(ctx, ws_id, "installation.created", actor, enqueue)
    if key == ("installation", "suspend"):
        verdict = installations.verify_suspended(ctx, ws_id)
        with ctx.session() as s:
            ws = store.lock_workspace(s, ws_id)
            if not verdict.confirmed:
                return {**installations.record_contradiction(
                    s, ws_id, actor=actor, hint="installation.suspend", verdict=verdict, subject=ws.name), **hint}
            changed = store.suspend(s, ws, actor=actor)
            return {"result": "suspended" if changed else "unchanged", "workspace": ws_id, **hint}
    with ctx.session() as s:
        ws = store.lock_workspace(s, ws_id)
        changed = False
        if key == ("installation", "unsuspend"):
            changed = store.unsuspend(s, ws, actor=actor)
        status = ws.status
    if key in (("organization", "renamed"), ("installation_target", "renamed")):
        changed = _rename(ctx, ws_id, t.org_login, actor)
    if status != "active":
        return {"result": "unchanged", "workspace": ws_id, "reason": f"workspace is {status}", **hint}
    _full_sync(enqueue, ws_id, actor)
    return {"result": "full_sync_queued", "workspace": ws_id, "changed": changed, **hint}


def _adopt(
    ctx: SyncContext, key: tuple[str, str], t: _GitHubTarget, payload: dict[str, Any], actor: str,
    enqueue: Enqueuer,
) -> dict[str, Any]:
    """An installation the store does not know, for an org without a
    workspace: GitHub's installation record decides whether there is one to
    adopt, which one, and whether its account is an organization."""
    assert t.org_id is not None and t.org_login
    found = installations.live_installation(ctx, ProviderOrg("github", t.org_id, t.org_login))
    if found is None:
        inst = _dict(payload.get("installation"))
        kind = _str(inst.get("target_type")) or _str(payload.get("target_type")) \
            or _str(_dict(inst.get("account")).get("type"))
        if kind != "Organization":
            return {"result": "ignored", "reason": "installation on a user account, not an organization",
                    "installation": t.installation_id}
        return {"result": "ignored", "installation": t.installation_id,
                "reason": f"GitHub reports no installation of the app on {t.org_login}"}
    if not found.is_org:
        return {"result": "ignored", "reason": "installation on a user account, not an organization",
                "installation": found.installation_id}
    # Only the installer of this very installation connects the org and
    # becomes its owner; the sender of another event is whoever acted.
    installer = key == ("installation", "created") and found.installation_id == t.installation_id
    sender_id = _int(_dict(payload.get("sender")).get("id")) if installer else None

    adopted = orgs.adopt_installation(
        ctx, found.installation_id, found.account_id, found.account_login or t.org_login, sender_id,
        trigger=_trigger(actor),
    )
    ws_id = adopted.workspace_id
    out: dict[str, Any] = {"result": "adopted" if adopted.adopted else "reconnected", "workspace": ws_id,
           "installation": found.installation_id}
    if found.installation_id != t.installation_id:
        out["installation_hint"] = {"payload": t.installation_id, "live": found.installation_id}
    if found.suspended:
        with ctx.session() as s:
            store.suspend(s, store.lock_workspace(s, ws_id), actor=actor)
        return {**out, "full_sync_queued": False}
    # Queued, not run here: the per-org serialisation and coalescing of every
    # other full sync apply (a stream of events naming alternating ids once
    # caused many inline full syncs of one org).
    _full_sync(enqueue, ws_id, actor)
    return {**out, "full_sync_queued": True}


def _verified_disconnect(
    ctx: SyncContext, ws_id: str, hint: str, reason: str, actor: str,
    verify: Callable[[], installations.Verdict],
) -> dict[str, Any]:
    """Disconnect only once the provider confirms the hint. Unreachable: the
    error propagates and the delivery is retried, never applied blind."""
    with ctx.session() as s:
        if store.get_workspace(s, ws_id).status == "disconnected":
            return {"result": "unchanged", "workspace": ws_id, "reason": "already disconnected"}
    verdict = verify()
    with ctx.session() as s:
        ws = store.lock_workspace(s, ws_id)
        if not verdict.confirmed:
            return installations.record_contradiction(s, ws_id, actor=actor, hint=hint, verdict=verdict,
                                                      subject=ws.name)
        changed = store.disconnect(s, ws, actor=actor, reason=reason)
        return {"result": "disconnected" if changed else "unchanged", "workspace": ws_id,
                "verified": verdict.reason}


def _reconnect(ctx: SyncContext, ws_id: str, hint: str, actor: str, enqueue: Enqueuer) -> dict[str, Any]:
    try:
        return outcomes.reconnection(installations.reconnect_workspace(ctx, ws_id, actor=actor, enqueue=enqueue))
    except ProviderSaysGone as exc:
        verdict = installations.Verdict(False, str(exc))
        with ctx.session() as s:
            return installations.record_contradiction(s, ws_id, actor=actor, hint=hint, verdict=verdict,
                                                      subject=store.get_workspace(s, ws_id).name)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def _rename(ctx: SyncContext, ws_id: str, hinted: str | None, actor: str) -> bool:
    """Follow a rename. The payload's new name is only a hint: the org is
    re-read by its immutable id (a freed login can be taken by someone else,
    and renames can arrive out of order); the hint is used only when our
    credentials cannot read the org."""

    with ctx.session() as s:
        before = store.get_workspace(s, ws_id).provider_org_login
    after = orgs.rename_workspace(ctx, ws_id, trigger=_trigger(actor), new_login=hinted)
    return after.provider_org_login != before


def _member_sync(ctx: SyncContext, ws_id: str, uid: int, login: str | None, actor: str) -> dict[str, Any]:
    with ctx.session() as s:
        status = store.get_workspace(s, ws_id).status
    if status != "active":
        # Disconnected: roster access has ended anyway. Suspended: the
        # installation cannot read the org; the unsuspend full sync catches up.
        return {"result": "ignored", "reason": f"workspace is {status}", "workspace": ws_id}

    result = orgs.member_sync(ctx, ws_id, uid, login or "", trigger=_trigger(actor))
    return {"result": "member_synced", "workspace": ws_id, "provider_user_id": uid,
            "sync": _jsonable(outcomes.run(result))}


def _process_gitlab(
    ctx: SyncContext, payload: dict[str, Any], decision: Triage, actor: str, enqueue: Enqueuer
) -> dict[str, Any]:
    name = decision.action or ""
    if name in GITLAB_USER:
        uid = _int(payload.get("user_id"))
        assert uid is not None
        if name == "user_rename":
            new_login = _str(payload.get("username"))
            if not new_login:
                return {"result": "ignored", "reason": "the payload names no new username"}
            return _gitlab_user_renamed(ctx, uid, new_login, actor)
        return _gitlab_user_destroyed(ctx, uid, actor)
    assert decision.workspace_id is not None
    ws_id = decision.workspace_id
    if name == "group_destroy":
        return _verified_disconnect(ctx, ws_id, "group_destroy", "group_deleted", actor,
                                    lambda: installations.verify_org_deleted(ctx, ws_id))
    with ctx.session() as s:
        ws = store.get_workspace(s, ws_id)
        status = ws.status
        by_operator = status == "disconnected" and inst_store.last_disconnect_reason(s, ws_id) == "operator"
    if status == "disconnected" and not by_operator:
        # An event for a group we hold as deleted: if GitLab can read it
        # again, it is back (reconnected, fully synced); if not, nothing.
        try:
            installations.reconnect_workspace(ctx, ws_id, actor=actor, enqueue=enqueue)
        except (RateLimited, TransientProviderError):
            raise
        except (ProviderSaysGone, ProviderError):
            pass  # still gone, or not readable with our token: stays disconnected
        else:
            status = "active"
    if name in GITLAB_MEMBER:
        uid = _int(payload.get("user_id"))
        if uid is None:
            return {"result": "ignored", "reason": "the payload names no user id"}
        return _member_sync(ctx, ws_id, uid, _str(payload.get("user_username")), actor)
    # group_rename: the group keeps its id; the full path is a label.
    changed = _rename(ctx, ws_id, _str(payload.get("full_path")) or _str(payload.get("path")), actor)
    if status != "active":
        return {"result": "renamed" if changed else "unchanged", "workspace": ws_id}
    _full_sync(enqueue, ws_id, actor)
    return {"result": "full_sync_queued", "workspace": ws_id, "changed": changed}


def _gitlab_user_renamed(ctx: SyncContext, uid: int, new_login: str, actor: str) -> dict[str, Any]:
    """Logins are labels, but a late rename hook carries a login that may
    already be stale (renamed twice, hooks delivered out of order): re-read
    the member by immutable id in each group that lists them, and take the
    login GitLab gives now. Access, keyed by id, is re-read with it."""

    with ctx.session() as s:
        workspace_ids = store.roster_workspace_ids(s, "gitlab", uid)
    runs = [orgs.member_sync(ctx, ws_id, uid, None, trigger=_trigger(actor)) for ws_id in workspace_ids]
    with ctx.session() as s:
        # The account's label follows what GitLab just said, not the hook.
        current = store.roster_login(s, uid, workspace_ids)
        if current:
            store.set_identity_login(s, "gitlab", uid, current)
    return {"result": "user_renamed", "provider_user_id": uid, "login_in_hook": new_login,
            "workspaces": workspace_ids, "syncs": _jsonable([outcomes.run(r) for r in runs])}


def _gitlab_user_destroyed(ctx: SyncContext, uid: int, actor: str) -> dict[str, Any]:
    """The account was deleted on the instance: it is a member of nothing.
    Confirmed first with ``GET /users/:id`` (a replayed or forged hook must
    not empty rosters); a deleted user has no membership left to re-read."""
    verdict = installations.verify_user_deleted(ctx, "gitlab", uid)
    if not verdict.confirmed:
        with ctx.session() as s:
            return {**installations.record_contradiction(s, None, actor=actor, hint="user_destroy",
                                                         verdict=verdict, subject=str(uid)),
                    "provider_user_id": uid}
    with ctx.session() as s:
        removed_from = []
        for ws_id in store.roster_workspace_ids(s, "gitlab", uid):
            ws = store.lock_workspace(s, ws_id)
            store.apply_roster_changes(s, ws, removals=[uid], actor=actor)
            removed_from.append(ws_id)
    return {"result": "user_removed", "provider_user_id": uid, "workspaces": removed_from}
