"""The batch processor: drain one lane's due work under its lease.

A lane is an org (``github:<org id>``, ``gitlab:<group id>``) or GitLab's
user events (``gitlab:users``). ``drain`` takes the lane's lease, then claims
the lane's due deliveries oldest first and works through them in the order
received, running any full sync the lane is owed between them:

- a run of membership hints is merged by user id; when re-reading them one
  by one would cost more requests than one (conditional) listing of the org,
  one full sync serves them all. The bound holds for a whole burst however
  it is cut into batches: the lane counts the single reads spent since its
  last listing, and once a burst has spent ⌈N/100⌉ + c of them it is served
  by listings only, each taken once the burst pauses (or after a wait that
  doubles with each listing the burst has already had: ``listing_wait``);
- every other delivery goes through ``sync.events.handle_delivery`` on its own;
- a rate limit defers the lane's claimed rows to the reset time, a transient
  error makes them due again after a backoff; both are due times in the
  database, fired by the minute sweep, so the embedded mode behaves exactly
  as production.

Nothing here knows RQ or Redis: the worker passes ``clear_wake`` (forget the
lane's pending wake-up flag) and ``wake`` (ring another lane's bell).

The end of a drain closes the race with a delivery arriving as it stops:
the wake flag is cleared first, then the lease released, then the lane
checked once more; a delivery committed after that check finds no flag,
rings the bell, and its job finds the lease free.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from models import deliveries, lanes, store
from models.deliveries import Claimed
from models.lanes import FullSyncRequest
from models.store import RunResult
from models.tables import as_utc, utcnow
from sync import events, members, orgs, outcomes
from sync.context import SyncContext
from sync.errors import RateLimited, TransientProviderError
from sync.triage import github_member, github_target

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
HEARTBEAT_EVERY = 15.0
CLAIM_LIMIT = 500
# k single reads are worth it while k ≤ ⌈N/100⌉ + HINT_CONSTANT: past that, one
# listing (plus the org read and the removal check) answers them all.
HINT_CONSTANT = 3
# A lane quiet for this long starts a new burst with a fresh read budget.
BURST_QUIET = timedelta(seconds=10)
# A listing this cheap (requests) is taken at once rather than waited for.
CHEAP_LISTING = 10
# In listing mode, a burst is served once it pauses for SETTLE. The first
# listing of a burst waits at most MAX_WAIT for that pause; each listing
# already taken in the same burst doubles the wait, up to MAX_WAIT_LONGEST:
# a burst lasting T costs about log2(T / MAX_WAIT) listings instead of
# T / MAX_WAIT (a 100,000-member org lists in 1,000 requests, a fifth of
# GitHub's hourly installation budget), and no hint waits longer than the
# burst has lasted or MAX_WAIT_LONGEST.
SETTLE = 1.0
MAX_WAIT = 30.0
MAX_WAIT_LONGEST = 480.0


def listing_wait(listings_in_burst: int) -> float:
    """How long the next listing of a burst may wait for the burst to pause."""
    return min(MAX_WAIT * 2 ** min(max(listings_in_burst, 0), 16), MAX_WAIT_LONGEST)


# Membership hints that say "this member left": the listing they ask for needs
# no further check for those members (sync.orgs._confirm_removals).
REMOVAL_ACTIONS = frozenset({"member_removed", "user_remove_from_group"})
# Transient failures: due again after these delays; then failed (replayable).
RETRY_DELAYS = (5, 15, 60, 180, 600)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=RETRY_DELAYS[min(max(attempts, 1), len(RETRY_DELAYS)) - 1])


class LaneEnqueuer:
    """``sync.events.Enqueuer`` for the pipeline: a full sync is a due time on
    the org's lane (a second trigger joins the first); the lane being
    drained runs it before its next delivery, another lane is woken."""

    def __init__(self, ctx: SyncContext, current_lane: str | None, wake: Callable[[str], None]) -> None:
        self.ctx = ctx
        self.current_lane = current_lane
        self.wake = wake
        # A full sync owed to the lane being drained since the drain last
        # looked: it runs once the batch's deliveries are done.
        self.owed_here = False

    def full_sync(self, workspace_id: str, trigger: str) -> None:
        with self.ctx.session() as s:
            ws = store.get_workspace(s, workspace_id)
            lane = lanes.lane_of_workspace(ws)
            lanes.request_full_sync(s, lane, trigger=trigger)
        if lane != self.current_lane:
            self.wake(lane)
        else:
            self.owed_here = True


@dataclass
class DrainReport:
    lane: str
    busy: bool = False  # another worker holds the lane
    claimed: int = 0
    processed: int = 0
    ignored: int = 0
    failed: int = 0
    retrying: int = 0
    deferred: int = 0
    full_syncs: int = 0
    member_reads: int = 0
    lost_lease: bool = False
    events: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "events"}


class _Heartbeat(threading.Thread):
    """Keeps the lane's lease and its claimed rows' leases alive while a long
    full sync runs; dies with the process, so a killed worker's leases run
    out after one LEASE."""

    def __init__(self, ctx: SyncContext, lane: str, holder: str) -> None:
        super().__init__(name=f"lease-{lane}", daemon=True)
        self.ctx, self.lane, self.holder = ctx, lane, holder
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_EVERY):
            try:
                until = utcnow() + LEASE
                with self.ctx.session() as s:
                    if not lanes.extend(s, self.lane, self.holder, until):
                        self.lost = True
                    deliveries.extend_leases(s, self.holder, until)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried; the lease has slack
                log.warning("could not extend the lease of lane %s: %s", self.lane, type(exc).__name__)

    def stop(self) -> None:
        self.stopped.set()


class _Stop(Exception):
    """The rest of the lane waits (rate limit, transient error)."""

    def __init__(self, due_at: datetime) -> None:
        super().__init__(due_at.isoformat())
        self.due_at = due_at


@dataclass(frozen=True, slots=True)
class _Lane:
    """The lane's workspace as the drain needs it, reloaded after each
    delivery that may change it (adoption, reconnect, disconnect)."""

    workspace_id: str | None
    provider: str | None
    status: str | None
    installation_id: int | None
    # Read with the state when the queue's head is a hint (what it costs).
    roster_count: int = 0
    budget: lanes.HintBudget | None = None

    @property
    def takes_hints(self) -> bool:
        # Hints are merged only for a workspace that can be read now; anything
        # else (adoption, a disconnected org) goes through the handlers.
        return self.workspace_id is not None and self.status == "active" and (
            self.provider != "github" or self.installation_id is not None)


class Drain:
    def __init__(self, ctx: SyncContext, lane: str, holder: str, *, clear_wake: Callable[[], None],
                 wake: Callable[[str], None], sleep: Callable[[float], None] = time.sleep,
                 claim_limit: int = CLAIM_LIMIT) -> None:
        self.ctx, self.lane, self.holder = ctx, lane, holder
        self.clear_wake, self.wake, self.sleep = clear_wake, wake, sleep
        self.claim_limit = claim_limit
        self.enqueue = LaneEnqueuer(ctx, lane, wake)
        self.report = DrainReport(lane)
        self.queue: deque[Claimed] = deque()
        self.payloads: dict[str, str] = {}
        self.logins: dict[str, str | None] = {}
        self.inflight: list[Claimed] = []  # taken off the queue, not yet recorded
        self.provider, self.org_id = lanes.parse_lane(lane)
        self.lease: lanes.Lease | None = None
        self.last_claim_full = False  # the last claim hit claim_limit: more may be due
        # The first claim, and the lane's state for a hint at its head, made in
        # the transaction that took the lease: two transactions fewer per drain.
        self.claimed_with_lease = False
        self.state_with_lease: _Lane | None = None

    # ------------------------------------------------------------------ entry

    def run(self) -> DrainReport:
        with self.ctx.session() as s:
            self.lease = lanes.acquire(s, self.lane, self.holder, LEASE)
            # A full sync owed runs before any claim (see _work).
            if self.lease is not None and not self.lease.full_sync_due():
                self._claim(s)
                self.claimed_with_lease = True
                if self.queue and self.queue[0].hint_user_id is not None and self.org_id is not None:
                    self.state_with_lease = self._read_state(s, for_hint=True)
        if self.lease is None:
            self.report.busy = True
            return self.report
        heartbeat = _Heartbeat(self.ctx, self.lane, self.holder)
        heartbeat.start()
        try:
            while True:
                self.clear_wake()
                self._work()
                # Closing: flag cleared, lease released, then one more look,
                # in one transaction. The look comes after the release: a
                # delivery committed before it is seen here; one committed
                # after it rings the bell, and its wake-up's acquire waits
                # for this transaction and then finds the lane free.
                self.clear_wake()
                with self.ctx.session() as s:
                    released = lanes.release(s, self.lane, self.holder)
                    full_sync_due = released is not None and released.full_sync_due()
                    if not (full_sync_due or deliveries.lane_has_due_work(s, self.lane)):
                        break
                    self.lease = lanes.acquire(s, self.lane, self.holder, LEASE)
                    if self.lease is None:
                        break  # someone else took it, and with it the work
        except BaseException as exc:
            # Whatever was claimed and not finished goes back: a crash must
            # not leave rows waiting for their lease to run out. The rows in
            # hand count the attempt (a bug must end in "failed", not a loop).
            try:
                self._retry(self.inflight, f"unexpected error: {type(exc).__name__}: {exc}")
                self._give_back(utcnow())
                with self.ctx.session() as s:
                    lanes.release(s, self.lane, self.holder)
            except Exception:  # the leases run out on their own
                log.exception("could not give lane %s back after an error", self.lane)
            raise
        finally:
            heartbeat.stop()
            self.report.lost_lease = heartbeat.lost
        return self.report

    # ------------------------------------------------------------------ the loop

    def _work(self) -> None:
        try:
            # The lease said whether a full sync is due (a schedule, a login,
            # the sweep); one the batch's own events owe runs after them.
            if self.lease is not None and self.lease.full_sync_due():
                self._maybe_full_sync()
                self.lease = lanes.Lease(None)  # taken: nothing else is known to be owed
            claimed, self.claimed_with_lease = self.claimed_with_lease, False
            while True:
                # Claim again only when the last claim may have left rows
                # behind (it was full): what arrived since is found by the
                # look after release.
                if not self.queue and (claimed and not self.last_claim_full or not self._refill()):
                    return
                claimed = True
                head = self.queue[0]
                state = self._state(for_hint=head.hint_user_id is not None)
                if head.hint_user_id is not None and state.takes_hints and self._plain_hint(head, state):
                    self._hints(state)
                else:
                    self.queue.popleft()
                    self._single(head)
                if not self.queue and self.enqueue.owed_here:
                    # Structural events of one batch coalesce: the full syncs
                    # they owe the org run once, after them. (One owed from
                    # outside meanwhile is found by the check after release.)
                    self._maybe_full_sync()
        except _Stop as stop:
            self._give_back(stop.due_at)

    def _refill(self) -> int:
        with self.ctx.session() as s:
            return self._claim(s)

    def _claim(self, s: Session) -> int:
        rows = deliveries.claim_due(s, self.lane, self.holder, LEASE, limit=self.claim_limit,
                                    payloads=self.payloads)
        self.last_claim_full = len(rows) >= self.claim_limit
        self.queue.extend(rows)
        self.report.claimed += len(rows)
        return len(rows)

    def _state(self, *, for_hint: bool = False) -> _Lane:
        # Read with the lease for the first claim's head (a hint), nothing
        # having happened since; any later head reads afresh.
        early, self.state_with_lease = self.state_with_lease, None
        if early is not None and for_hint:
            return early
        if self.org_id is None:
            return _Lane(None, None, None, None)
        with self.ctx.session() as s:
            return self._read_state(s, for_hint=for_hint)

    def _read_state(self, s: Session, *, for_hint: bool) -> _Lane:
        assert self.org_id is not None
        if for_hint:  # one statement: the workspace, its roster's size, the lane's budget
            hs = lanes.hint_state(s, self.provider, self.org_id, self.lane, quiet=BURST_QUIET)
            if hs is None:
                return _Lane(None, self.provider, None, None)
            ws = hs.workspace
            return _Lane(ws.id, ws.provider, ws.status, ws.installation_id, hs.roster_count, hs.budget)
        found = store.workspace_state(s, self.provider, self.org_id)
        if found is None:
            return _Lane(None, self.provider, None, None)
        return _Lane(found.id, found.provider, found.status, found.installation_id)

    def _plain_hint(self, row: Claimed, state: _Lane) -> bool:
        """A hint the drain may merge: its login noted, its payload dropped."""
        if row.id in self.logins:
            return True
        if row.provider != "github":
            self.logins[row.id] = None  # GitLab reads a member by id alone
            return True
        try:
            payload = json.loads(self.payloads.get(row.id, ""))
        except ValueError:
            return False
        if not isinstance(payload, dict):
            return False
        # A payload naming another installation than the stored one is not a
        # plain hint: which installation is live is for the handlers to find
        # out (the provider decides, not the payload).
        inst = github_target(payload).installation_id
        if inst is not None and inst != state.installation_id:
            return False
        # GitHub reads one membership by login (and checks the id it returns).
        self.logins[row.id] = github_member(payload)[1]
        self.payloads.pop(row.id, None)
        return True

    # ------------------------------------------------------------------ one delivery

    def _single(self, row: Claimed) -> None:
        self.inflight = [row]
        payload_text = self.payloads.pop(row.id, None)
        if payload_text is None:
            with self.ctx.session() as s:
                payload_text = deliveries.payloads(s, [row.id]).get(row.id, "")
        try:
            handled = events.handle_delivery(self.ctx, row.id, row.provider, row.event, payload_text,
                                             self.enqueue)
        except RateLimited as exc:
            self._defer([row], exc.reset_at)
            raise _Stop(exc.reset_at) from None
        except TransientProviderError as exc:
            due = self._retry([row], f"transient provider error: {exc}")
            raise _Stop(due) from None
        except Exception as exc:  # a bug must not wedge the lane: retried, then failed
            log.exception("delivery %s failed unexpectedly", row.id)
            due = self._retry([row], f"unexpected error: {type(exc).__name__}: {exc}")
            raise _Stop(due) from None
        with self.ctx.session() as s:
            events.record(s, row.id, handled, holder=self.holder)
        self.inflight = []
        self._count(handled.status)

    def _count(self, status: str, n: int = 1) -> None:
        if status == deliveries.PROCESSED:
            self.report.processed += n
        elif status == deliveries.IGNORED:
            self.report.ignored += n
        else:
            self.report.failed += n

    # ------------------------------------------------------------------ membership hints

    def _take_hints(self, state: _Lane) -> list[Claimed]:
        seg: list[Claimed] = []
        while self.queue and self.queue[0].hint_user_id is not None and self._plain_hint(self.queue[0], state):
            seg.append(self.queue.popleft())
        return seg

    def _hints(self, state: _Lane) -> None:
        assert state.workspace_id is not None
        seg = self._take_hints(state)
        self.inflight = seg
        # The batch may be the front of a longer run of hints: take it all.
        while not self.queue and self.last_claim_full and self._refill():
            seg.extend(self._take_hints(state))
        uids = self._distinct(seg)
        assert state.budget is not None  # read by _state for a hint at the head
        n, budget = state.roster_count, state.budget
        listing_cost = math.ceil(n / 100) + HINT_CONSTANT
        if budget.reads + len(uids) <= listing_cost:
            self._read_members(state.workspace_id, seg, uids)
            return
        if listing_cost > CHEAP_LISTING:
            seg = self._settle(seg, state, listing_wait(budget.listings))
        self._list_for_hints(state.workspace_id, seg)

    def _settle(self, seg: list[Claimed], state: _Lane, max_wait: float) -> list[Claimed]:
        """Listing mode: wait for the burst to pause (or ``max_wait`` since
        the oldest hint), so that one listing answers as many hints as
        possible."""
        oldest = min(as_utc(r.received_at) for r in seg)  # type: ignore[type-var]
        while True:
            with self.ctx.session() as s:
                newest = deliveries.newest_pending(s, self.lane)
            now = utcnow()
            if newest is None or (now - newest).total_seconds() >= SETTLE:
                break
            if (now - oldest).total_seconds() >= max_wait:  # type: ignore[operator]
                break
            self.sleep(0.25)
        # Everything that arrived meanwhile, up to the next non-hint.
        while not self.queue and self._refill():
            seg.extend(self._take_hints(state))
            if self.queue:
                break
        return seg

    def _read_members(self, workspace_id: str, seg: list[Claimed], uids: dict[int, str | None]) -> None:
        ids = [r.id for r in seg]
        trigger = f"webhook:{seg[0].id}" if len(seg) == 1 else f"webhooks:{len(seg)} hints from {seg[0].id}"
        try:
            run = members.member_reads(self.ctx, workspace_id, list(uids.items()), trigger=trigger)
        except RateLimited as exc:
            self._defer(seg, exc.reset_at)
            raise _Stop(exc.reset_at) from None
        except TransientProviderError as exc:
            raise _Stop(self._retry(seg, f"transient provider error: {exc}")) from None
        self.report.member_reads += len(uids)
        self._finish_hints(ids, run, via="member_reads",
                           note=lambda s: lanes.spend_reads(s, self.lane, len(uids), quiet=BURST_QUIET))

    def _list_for_hints(self, workspace_id: str, seg: list[Claimed]) -> None:
        ids = [r.id for r in seg]
        owed = None
        if self.enqueue.owed_here or (self.lease is not None and self.lease.full_sync_due()):
            # A full sync the lane was owed is answered by this listing too.
            # (One owed from outside since the lease was taken runs after
            # the batch: the check after release finds it.)
            self.enqueue.owed_here = False
            with self.ctx.session() as s:
                owed = lanes.take_full_sync(s, self.lane)
        force = bool(owed and owed.force)
        trigger = f"webhooks:{len(seg)} hints from {seg[0].id}"
        # The newest hint per member decides whether it said "left".
        last_action: dict[int, str | None] = {}
        for r in seg:
            if r.hint_user_id is not None:
                last_action[int(r.hint_user_id)] = r.action
        gone = frozenset(u for u, a in last_action.items() if a in REMOVAL_ACTIONS)
        try:
            run = orgs.full_sync(self.ctx, workspace_id, trigger=trigger, force=force, hinted_absent=gone)
        except RateLimited as exc:
            if owed is not None:
                with self.ctx.session() as s:
                    lanes.reschedule_full_sync(s, self.lane, owed, exc.reset_at, count_attempt=False)
            self._defer(seg, exc.reset_at)
            raise _Stop(exc.reset_at) from None
        except TransientProviderError as exc:
            if owed is not None:
                with self.ctx.session() as s:
                    lanes.request_full_sync(s, self.lane, trigger=owed.trigger, force=owed.force)
            raise _Stop(self._retry(seg, f"transient provider error: {exc}")) from None
        self.report.full_syncs += 1
        if run.result == "held":
            with self.ctx.session() as s:
                lanes.listed(s, self.lane, quiet=BURST_QUIET)
            # The mass-removal guard holds the listing; each hint is still
            # owed an answer, and a single re-read is complete for its member.
            self._read_members(workspace_id, seg, self._distinct(seg))
            return
        self._finish_hints(ids, run, via="full_sync", note=lambda s: lanes.listed(s, self.lane, quiet=BURST_QUIET))

    def _finish_hints(self, ids: list[str], run: RunResult, *, via: str,
                      note: Callable[[Any], None]) -> None:
        """Record the hints' outcome, with ``note`` (what the lane spent on
        them: reads or a listing) in the same transaction."""
        self.inflight = []
        result = run.result
        summary = outcomes.run_summary(run)
        with self.ctx.session() as s:
            note(s)
            if result == "ok":
                # The change-feed entries the run made (capped: a listing that
                # served a burst may have made thousands).
                activity = store.activity_seqs(s, [f"sync:{run.id}"], limit=100)
                n = deliveries.finish_processed(s, ids, self.holder, {
                    "result": "member_synced", "via": via, "workspace": run.workspace_id,
                    "hints": len(ids), "sync": summary, "activity": activity})
                self._count(deliveries.PROCESSED, n)
            elif result == "skipped":
                reason = run.error or "the workspace cannot be synced now"
                n = deliveries.finish_ignored(s, ids, self.holder, str(reason), sync=summary)
                self._count(deliveries.IGNORED, n)
            else:
                n = deliveries.finish_failed(s, ids, self.holder,
                                             f"sync run {run.id} {result}: {run.error or ''}".strip())
                self._count(deliveries.FAILED, n)

    # ------------------------------------------------------------------ full syncs owed

    def _maybe_full_sync(self) -> None:
        self.enqueue.owed_here = False
        if self.org_id is None:
            return
        with self.ctx.session() as s:
            req = lanes.take_full_sync(s, self.lane)
            ws = store.get_provider_workspace(s, self.provider, self.org_id) if req is not None else None
            ws_id = ws.id if ws is not None else None
        if req is None:
            return
        if ws_id is None:
            log.info("lane %s owed a full sync but holds no workspace", self.lane)
            return
        self._run_full_sync(ws_id, req)

    def _run_full_sync(self, ws_id: str, req: FullSyncRequest) -> None:
        try:
            orgs.full_sync(self.ctx, ws_id, trigger=req.trigger, force=req.force)
        except RateLimited as exc:
            with self.ctx.session() as s:
                lanes.reschedule_full_sync(s, self.lane, req, exc.reset_at, count_attempt=False)
            raise _Stop(exc.reset_at) from None
        except TransientProviderError as exc:
            attempts = req.attempts + 1
            if attempts >= MAX_ATTEMPTS:
                log.warning("full sync of %s gave up after %d attempts: %s", ws_id, attempts, exc)
                with self.ctx.session() as s:
                    lanes.full_sync_succeeded(s, self.lane)  # reset: the scheduled resync tries again
                return
            due = utcnow() + retry_delay(attempts)
            with self.ctx.session() as s:
                lanes.reschedule_full_sync(s, self.lane, req, due, count_attempt=True)
            raise _Stop(due) from None
        with self.ctx.session() as s:
            lanes.listed(s, self.lane, quiet=BURST_QUIET)
            lanes.full_sync_succeeded(s, self.lane)
        self.report.full_syncs += 1

    def _distinct(self, seg: list[Claimed]) -> dict[int, str | None]:
        """Hints merged by user id, in order of first appearance; the newest
        login a hint carried wins (logins are labels that change)."""
        out: dict[int, str | None] = {}
        for r in seg:
            assert r.hint_user_id is not None
            uid = int(r.hint_user_id)
            login = self.logins.pop(r.id, None)
            if uid not in out or login:
                out[uid] = login or out.get(uid)
        return out

    # ------------------------------------------------------------------ giving rows back

    def _retry(self, rows: list[Claimed], error: str) -> datetime:
        """Transient failure: each row due again after its backoff, or failed
        once it has used its attempts. Returns when the lane is next due."""
        now = utcnow()
        retry = [r for r in rows if r.attempts < MAX_ATTEMPTS]
        give_up = [r for r in rows if r.attempts >= MAX_ATTEMPTS]
        due = now + retry_delay(max((r.attempts for r in retry), default=1))
        with self.ctx.session() as s:
            if retry:
                deliveries.retry_later(s, [r.id for r in retry], self.holder, due,
                                       f"{error} (attempt {max(r.attempts for r in retry)}; next try at "
                                       f"{due.isoformat(timespec='seconds')})")
            if give_up:
                deliveries.finish_failed(s, [r.id for r in give_up], self.holder,
                                         f"{error} (gave up after {MAX_ATTEMPTS} attempts)")
        self.report.retrying += len(retry)
        self.report.failed += len(give_up)
        self.inflight = []
        return due

    def _defer(self, rows: list[Claimed], reset_at: datetime) -> None:
        with self.ctx.session() as s:
            deliveries.defer(s, [r.id for r in rows], self.holder, reset_at, "rate limited")
        self.report.deferred += len(rows)
        self.inflight = []

    def _give_back(self, due_at: datetime) -> None:
        """The claimed rows not yet handled keep their order: due with (not
        before) the row that stopped the batch."""
        rest = list(self.queue)
        self.queue.clear()
        if rest:
            with self.ctx.session() as s:
                deliveries.release(s, [r.id for r in rest], self.holder, due_at)


def drain(ctx: SyncContext, lane: str, holder: str, *, clear_wake: Callable[[], None],
          wake: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> DrainReport:
    """Drain one lane (see the module docstring). Returns what it did;
    ``busy`` when another worker holds the lane (it will see our work)."""
    return Drain(ctx, lane, holder, clear_wake=clear_wake, wake=wake, sleep=sleep).run()
