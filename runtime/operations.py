"""Operator actions, one place each, shared by the admin API
(webhooks/api.py) and the CLI (worker/cli/): both answer with the same
objects and neither writes the rule again.

Each takes a session and, where work must be woken, the Redis connection
(None in the embedded default or when Redis is down: the work is recorded in
the database and the sweep wakes it). Each returns typed values; the API
(webhooks/serialize.py) and the CLI (worker/cli/serialize.py) turn them into
JSON.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from models import deliveries, queries, store, users
from models import lanes as lane_store
from models.errors import InvalidState
from models.lanes import lane_of_workspace
from models.store import RunResult, WorkspaceView
from models.tables import as_utc
from runtime.process import Runtime
from runtime.queues import queue_depths, wake
from sync.installations import Reconnection, reconnect_workspace


@dataclass(frozen=True, slots=True)
class QueuedSync:
    workspace_id: str
    job: str | None  # the lane's wake-up; None when Redis could not be reached (the sweep wakes it)


@dataclass(frozen=True, slots=True)
class Replay:
    delivery_id: str
    status: str  # queued (its lane was woken) | received (the sweep wakes it) | the row's status once run
    job: str | None


@dataclass(frozen=True, slots=True)
class WorkspaceStatus:
    """A provider workspace in the status report."""

    workspace: WorkspaceView
    link_error: str | None
    last_sync: RunResult | None  # its newest full run
    installation_id: int | None
    installation_checked_at: datetime | None


@dataclass(frozen=True, slots=True)
class HeldSync:
    """A workspace whose newest full run the mass-removal guard holds."""

    workspace_id: str
    name: str
    run_id: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    pending: int
    failed: int
    deferred: int
    retrying: int
    by_status: dict[str, int]


@dataclass(frozen=True, slots=True)
class StatusReport:
    workspaces: tuple[WorkspaceStatus, ...]
    held: tuple[HeldSync, ...]
    deliveries: DeliveryCounts
    # Full syncs owed (due times on the orgs' lanes, a retry's or a rate
    # limit's included): what the database says is still to do.
    full_syncs_owed: int
    queues: dict[str, dict[str, int]] | None  # per queue (runtime.queues.queue_depths); None without Redis
    queues_error: str | None = None  # why ``queues`` is None when Redis did not answer


def resync(session: Any, connection: redis.Redis | None, target: str, *, force: bool = False,
           trigger: str = "operator") -> list[QueuedSync]:
    """Owe full syncs: ``target`` is a workspace reference or ``"all"`` (every
    active provider workspace). Returns each workspace with its lane's
    wake-up."""
    if target == "all":
        targets = [store.get_workspace(session, ws_id) for ws_id in queries.resyncable_workspace_ids(session)]
    else:
        ws = store.find_workspace(session, target)
        if ws.kind != "provider":
            raise InvalidState(f"workspace {ws.name!r} is a {ws.kind} workspace; only provider workspaces sync")
        if ws.status == "disconnected":
            raise InvalidState(f"workspace {ws.name!r} is disconnected; it syncs again once reconnected")
        targets = [ws]
    for ws in targets:
        lane_store.request_full_sync(session, lane_of_workspace(ws), trigger=trigger, force=force)
    session.commit()  # the requests must be visible before any drain looks
    out: list[QueuedSync] = []
    for ws in targets:
        lane = lane_of_workspace(ws)
        job: str | None = None
        if connection is not None:
            try:
                # An operator's resync always rings: a pending flag whose job
                # was lost would otherwise hold it back until the sweep.
                job = wake(connection, lane, queue="sync", force=True)
            except redis.RedisError:
                job = None
        out.append(QueuedSync(ws.id, job))
    return out


def replay_delivery(session: Any, connection: redis.Redis | None, delivery_id: str) -> Replay:
    """Make a failed (or stuck) delivery due now and wake its lane;
    processed and ignored ones are finished and are not replayed."""
    lane = deliveries.replay(session, delivery_id)
    session.commit()
    job: str | None = None
    if connection is not None:
        try:
            job = wake(connection, lane, force=True)
        except redis.RedisError:
            job = None
    return Replay(delivery_id, "queued" if job else "received", job)


def status_report(session: Any, connection: redis.Redis | None) -> StatusReport:
    """What operators look at: provider workspaces with their last full
    sync, held syncs, deliveries pending and failed, queue depths."""
    runs = queries.last_full_runs(session)
    workspaces = []
    held = []
    for ws in queries.provider_workspaces(session):
        run = runs.get(ws.id)
        workspaces.append(WorkspaceStatus(store.workspace_view(ws), ws.link_error, run, ws.installation_id,
                                          as_utc(ws.installation_checked_at)))
        if run is not None and run.result == "held":
            held.append(HeldSync(ws.id, ws.name, run.id, run.error))
    counts = queries.delivery_status_counts(session)
    queues: dict[str, dict[str, int]] | None = None
    queues_error: str | None = None
    if connection is not None:
        try:
            queues = queue_depths(connection)
        except redis.RedisError as exc:
            queues_error = f"redis unreachable: {type(exc).__name__}"
    return StatusReport(
        workspaces=tuple(workspaces),
        held=tuple(held),
        deliveries=DeliveryCounts(
            pending=sum(counts.get(s, 0) for s in deliveries.PENDING),
            failed=counts.get(deliveries.FAILED, 0),
            deferred=counts.get(deliveries.DEFERRED, 0),
            retrying=counts.get(deliveries.RETRYING, 0),
            by_status=counts,
        ),
        full_syncs_owed=lane_store.count_owed_full_syncs(session),
        queues=queues,
        queues_error=queues_error,
    )


def transfer(session: Any, ref: str, to: str) -> WorkspaceView:
    """Hand a workspace's ownership (and billing) to ``to``, a user id or username."""
    ws = store.find_workspace(session, ref)
    store.transfer_ownership(session, ws, users.transfer_target(session, ws, to), actor="operator")
    session.refresh(ws)  # the owner relationship was loaded before the change
    return store.workspace_view(ws)


def disconnect(session: Any, ref: str) -> tuple[WorkspaceView, bool]:
    """Disconnect a provider workspace; (workspace, whether it changed)."""
    ws = store.find_workspace(session, ref)
    changed = store.disconnect(session, ws, actor="operator", reason="operator")
    return store.workspace_view(ws), changed


def set_subscription(session: Any, ref: str, plan: str | None) -> WorkspaceView:
    """Set (a plan name) or clear (None) a workspace's subscription."""
    ws = store.find_workspace(session, ref)
    store.set_subscription(session, ws, plan, actor="operator")
    return store.workspace_view(ws)


def reconnect(rt: Runtime, ref: str) -> Reconnection:
    """Re-read the org; reconnect and owe a full sync only if the provider
    says it is back. Raises ProviderSaysGone (still gone: nothing changed),
    RateLimited/TransientProviderError (not reachable) or ProviderError."""
    with rt.session() as s:
        ws_id = store.find_workspace(s, ref).id
    return reconnect_workspace(rt.sync_context, ws_id, actor="operator", enqueue=rt.enqueuer)
