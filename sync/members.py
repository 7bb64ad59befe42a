"""Re-reading several members at once: the single-read side of a batch of
membership hints.

A membership webhook is only a hint; the provider's answer for that member
decides. A drain hands over every distinct member its batch names: each is
re-read with one adapter (one installation token), and the answers are
applied in one transaction under the workspace's row lock, recorded as one
``member`` sync run. Each answer is complete for its member, so "not a member"
removes exactly that entry and nobody else.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models import store
from models.store import ActivityEntry, RunOutcome, RunResult
from sync.apply import apply_plan
from sync.context import SyncContext, close_provider
from sync.orgs import _record_failure, _skip_reason, _target
from sync.providers.base import ProviderMember
from sync.roster import plan


def member_reads(
    ctx: SyncContext,
    workspace_id: str,
    hints: Sequence[tuple[int, str | None]],
    *,
    trigger: str,
) -> RunResult:
    """Re-read each ``(provider user id, login hint)`` and apply the answers.

    Returns the recorded run. Same error contract as ``sync.orgs.full_sync``:
    ``RateLimited`` and ``TransientProviderError`` are recorded on the run and
    re-raised (nothing is applied: a retry re-reads them all, which is
    idempotent); a permanent provider error is recorded and returned.
    """
    uids = [int(uid) for uid, _ in hints]
    hinted = {int(uid): login for uid, login in hints}
    with ctx.session() as s:
        ws = store.get_workspace(s, workspace_id)
        target = _target(ws)
        run_id = store.open_run(s, ws, kind="member", trigger=trigger).id
        skip = _skip_reason(ws)
        if skip is not None:
            return store.finish_run(s, run_id, RunOutcome("skipped", error=skip[1], details={
                "reason": skip[0], "provider_user_ids": uids[:100], "members": len(uids)}))
        # A hint without a login (GitLab needs none; GitHub reads by login and
        # checks the id) falls back to what the store knows.
        missing = [uid for uid in uids if not hinted.get(uid)]
        if missing:
            known = store.roster_logins(s, workspace_id, missing)
            for uid in missing:
                login = known.get(uid)
                if login is None:
                    ident = store.get_identity(s, target.provider, uid)
                    login = ident.login if ident is not None else None
                hinted[uid] = login

    provider = ctx.provider_for(target.provider, target.installation_id)
    base = (provider.api_calls, provider.not_modified)
    answers: list[ProviderMember] = []
    try:
        org = target.org()
        for uid in uids:
            current = provider.get_member(org, uid, hinted.get(uid))
            if current is not None and current.provider_user_id == uid:
                answers.append(current)
    except Exception as exc:  # noqa: BLE001 - recorded, then re-raised when the job must act
        calls, not_modified = provider.api_calls - base[0], provider.not_modified - base[1]
        close_provider(provider)
        return _record_failure(ctx, target, run_id, exc, None, calls, not_modified,
                               {"members": len(uids), "read": len(answers), "stage": "member"})
    calls, not_modified = provider.api_calls - base[0], provider.not_modified - base[1]
    close_provider(provider)

    with ctx.session() as s:
        ws = store.lock_workspace(s, workspace_id)
        skip = _skip_reason(ws)
        if skip is not None:  # disconnected or suspended while we were reading
            return store.finish_run(s, run_id, RunOutcome("skipped", api_calls=calls, error=skip[1],
                                                    details={"reason": skip[0], "members": len(uids)}))
        stored = store.roster(s, workspace_id, only=uids)
        # Complete for exactly these members: the ones read as "not a member"
        # (absent, or a membership that gives no access) are the removals.
        p = plan(stored, answers, complete=True)
        deferred: list[ActivityEntry] = []
        added, removed, changed = apply_plan(s, ws, p, actor=f"sync:{run_id}", defer_activity=deferred)
        # Every member read, uncapped: a full sync running meanwhile must not
        # undo any of them (store.settled_members_since).
        details: dict[str, Any] = {"members": len(uids), "provider_user_ids": uids}
        if len(uids) == 1:
            current = answers[0] if answers else None
            details.update({
                "provider_user_id": uids[0],
                "member": current is not None and current.role is not None,
                "role": current.role if current is not None else None,
                "login": current.login if current is not None else hinted.get(uids[0]),
            })
        return store.finish_run(s, run_id, RunOutcome("ok", added, removed, changed, calls, not_modified,
                                                details=details), deferred)
