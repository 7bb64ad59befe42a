"""Queue names and the one place that knows how jobs are enqueued:
queue names, job ids, retries and timeouts.

Job ids and coalescing
----------------------
Delivery jobs use one id per delivery (``delivery-<hash>``), enqueued with
``unique=True``: a redelivery or a sweep racing the web view finds the job
already there and queues nothing twice.

Full syncs must coalesce *waiting* triggers, but a trigger that arrives while a
sync is already reading the provider has to cause one more sync afterwards (the
running one may have read the roster before the change). A fixed
``sync-<workspace>`` id cannot express that: RQ's ``unique=True`` rejects any
id whose job hash still exists, and the hash exists while the job runs. So the
id carries a per-workspace *generation* kept in Redis:

- triggers enqueue ``sync-<ws>`` (generation 0) or ``sync-<ws>-g<n>`` with
  ``unique=True``; a trigger that meets a waiting job of the current
  generation joins it;
- a sync job advances the generation the moment it starts, before it reads
  anything, so later triggers create the next job instead of joining one
  that has already begun;
- a running job that must run again later (rate limit, another worker holds
  the org's lock) enqueues into the current generation like any trigger, so
  it never collides with its own still-existing hash.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

# Priority order: a worker drains webhooks first.
QUEUE_NAMES = ("webhooks", "sync", "default")

# Transient provider errors: retry with backoff (needs a worker with scheduler).
DELIVERY_RETRY = Retry(max=5, interval=[5, 15, 60, 180, 600])
SYNC_RETRY = Retry(max=4, interval=[30, 120, 300, 900])

DELIVERY_TIMEOUT = 300
SYNC_TIMEOUT = 3600
# Failed jobs stay visible to `rq info` for a while; kept short because a
# unique id is blocked for as long as its hash exists (see _enqueue_unique).
DELIVERY_FAILURE_TTL = 3600
SYNC_FAILURE_TTL = 60

# Job states in which a job will still run: joining it is enough.
WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)
# Terminal states: the hash only lingers for inspection and must not block a
# new job with the same id (a replayed delivery, a new sync).
TERMINAL = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)

_GENERATION_KEY = "orgsync:sync-generation:{}"
# Generation counters are tiny; they expire long after any job that carries
# them could still be waiting.
_GENERATION_TTL = 30 * 24 * 3600

# Advance only if nobody else did: two starts of the same generation (an RQ
# retry and a fresh job) must not skip one.
_ADVANCE_SCRIPT = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v == tonumber(ARGV[1]) then
  v = redis.call('INCR', KEYS[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return v
"""


def get_queue(name: str, connection: redis.Redis) -> Queue:
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=connection)


def all_queues(connection: redis.Redis) -> list[Queue]:
    return [Queue(n, connection=connection) for n in QUEUE_NAMES]


def delivery_job_id(delivery_id: str) -> str:
    # RQ job ids allow only letters, digits, '_' and '-'; delivery ids are
    # provider-chosen strings, so the id is derived from their hash.
    return "delivery-" + hashlib.sha256(delivery_id.encode()).hexdigest()[:40]


def deferred_delivery_job_id(delivery_id: str, at: datetime) -> str:
    """The id of a delivery job rescheduled by the running job itself (rate
    limit): it must differ from the running job's id, whose hash still exists."""
    return f"{delivery_job_id(delivery_id)}-at{int(at.timestamp())}"


def sync_job_id(workspace_id: str, generation: int = 0) -> str:
    if generation == 0:
        return f"sync-{workspace_id}"
    return f"sync-{workspace_id}-g{generation}"


def sync_generation(connection: redis.Redis, workspace_id: str) -> int:
    raw = connection.get(_GENERATION_KEY.format(workspace_id))
    return int(raw) if raw else 0


def advance_sync_generation(connection: redis.Redis, workspace_id: str, started: int) -> int:
    """Called by a sync job as it starts: later triggers get a new job."""
    value = connection.eval(_ADVANCE_SCRIPT, 1, _GENERATION_KEY.format(workspace_id),
                            started, _GENERATION_TTL)
    return int(value)  # type: ignore[arg-type]


def fetch_job(connection: redis.Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return None


def _enqueue_unique(queue: Queue, func: str, args: tuple[Any, ...], *, job_id: str,
                    at: datetime | None, **kwargs: Any) -> None:
    """Enqueue (or schedule) with ``unique=True``; a terminal job that still
    holds the id (kept for inspection) is deleted and the enqueue retried.
    Raises DuplicateJobError when a live job holds it."""
    for _ in range(3):
        try:
            if at is not None:
                queue.enqueue_at(at, func, *args, job_id=job_id, unique=True, **kwargs)
            else:
                queue.enqueue(func, *args, job_id=job_id, unique=True, **kwargs)
            return
        except DuplicateJobError:
            job = fetch_job(queue.connection, job_id)
            if job is None:
                continue  # it finished between the check and now
            if job.get_status(refresh=False) in TERMINAL:
                job.delete()
                continue
            raise
    raise DuplicateJobError(f"job {job_id} keeps reappearing")


def enqueue_delivery(connection: redis.Redis, delivery_id: str, *, at: datetime | None = None,
                     job_id: str | None = None) -> str:
    """Queue processing of a recorded delivery. Raises redis errors when Redis
    is down: the caller keeps the delivery recorded and the sweep queues it.

    A live job for the delivery (queued, scheduled, running) is joined; a
    finished or failed one is replaced, which is what replay and the sweep need.
    """
    job_id = job_id or delivery_job_id(delivery_id)
    try:
        _enqueue_unique(
            get_queue("webhooks", connection), "worker.jobs.process_delivery", (delivery_id,),
            job_id=job_id, at=at, retry=DELIVERY_RETRY, job_timeout=DELIVERY_TIMEOUT,
            result_ttl=0, failure_ttl=DELIVERY_FAILURE_TTL,
            description=f"process delivery {delivery_id[:80]}",
        )
    except DuplicateJobError:
        pass  # already queued: nothing is queued twice
    return job_id


def enqueue_full_sync(
    connection: redis.Redis, workspace_id: str, *, trigger: str, force: bool = False,
    at: datetime | None = None, delay: timedelta | None = None,
) -> str:
    """Queue a full sync; a second trigger joins the one already waiting.

    Returns the id of the job that will run (new or joined). A forced trigger
    that joins an unforced waiting job makes it forced.
    """
    if at is None and delay is not None:
        from rq.utils import now

        at = now() + delay
    queue = get_queue("sync", connection)
    for _ in range(10):
        generation = sync_generation(connection, workspace_id)
        job_id = sync_job_id(workspace_id, generation)
        try:
            _enqueue_unique(
                queue, "worker.jobs.sync_org", (workspace_id, trigger, force), job_id=job_id, at=at,
                retry=SYNC_RETRY, job_timeout=SYNC_TIMEOUT, result_ttl=0, failure_ttl=SYNC_FAILURE_TTL,
                meta={"generation": generation, "force": force, "trigger": trigger},
                description=f"full sync of {workspace_id} ({trigger[:80]})",
            )
            return job_id
        except DuplicateJobError:
            job = fetch_job(connection, job_id)
            if job is None:
                continue
            status = job.get_status(refresh=False)
            if status in WAITING or status == JobStatus.STARTED:
                # A started job of the current generation has not advanced it
                # yet, i.e. it has not read the provider: joining is correct.
                if force and not job.meta.get("force"):
                    job.meta["force"] = True
                    job.save_meta()
                return job_id
            # Anything else (created, terminal): the generation is stale.
            advance_sync_generation(connection, workspace_id, generation)
    raise RuntimeError(f"could not queue a sync of {workspace_id}: job ids keep colliding")


class RqEnqueuer:
    """The sync engine's Enqueuer, backed by RQ (sync.events stays RQ-free)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def full_sync(self, workspace_id: str, trigger: str) -> None:
        enqueue_full_sync(self.connection, workspace_id, trigger=trigger)


def queue_depths(connection: redis.Redis) -> dict[str, dict[str, int]]:
    """Per queue: waiting, scheduled, running and failed job counts."""
    out: dict[str, dict[str, int]] = {}
    for q in all_queues(connection):
        out[q.name] = {
            "queued": q.count,
            "scheduled": q.scheduled_job_registry.count,
            "started": q.started_job_registry.count,
            "deferred": q.deferred_job_registry.count,
            "failed": q.failed_job_registry.count,
        }
    return out


# --------------------------------------------------------------------------- operator actions
# Shared by the admin API (webhooks/api.py) and the CLI (worker/cli.py), so
# both answer with the same objects.


def resync(session: Any, connection: redis.Redis, target: str, *, force: bool = False,
           trigger: str = "operator") -> list[dict[str, str]]:
    """Queue full syncs: ``target`` is a workspace reference or ``"all"``
    (every active provider workspace). Returns [{"workspace", "job"}]."""
    from models import queries, store
    from models.errors import InvalidState

    if target == "all":
        ids = queries.resyncable_workspace_ids(session)
    else:
        ws = store.find_workspace(session, target)
        if ws.kind != "provider":
            raise InvalidState(f"workspace {ws.name!r} is a {ws.kind} workspace; only provider workspaces sync")
        if ws.status == "disconnected":
            raise InvalidState(f"workspace {ws.name!r} is disconnected; it syncs again once reconnected")
        ids = [ws.id]
    return [
        {"workspace": ws_id, "job": enqueue_full_sync(connection, ws_id, trigger=trigger, force=force)}
        for ws_id in ids
    ]


def replay_delivery(session: Any, connection: redis.Redis, delivery_id: str) -> dict[str, Any]:
    """Queue a delivery again (failed, deferred, or stuck); processed and
    ignored ones are finished and are not replayed."""
    from models import deliveries
    from models.errors import InvalidState

    d = deliveries.get_delivery(session, delivery_id)
    if d.status not in deliveries.REQUEUEABLE:
        raise InvalidState(f"delivery {delivery_id!r} is already {d.status}; only unfinished or failed "
                           "deliveries are replayed")
    status = d.status
    job_id = enqueue_delivery(connection, delivery_id)
    # Conditional on the status read above: a worker that already picked the
    # job up must not be moved backwards.
    deliveries.mark_queued(session, delivery_id, job_id, from_statuses=(status,))
    return {"delivery": delivery_id, "status": "queued", "job": job_id}


def status_report(session: Any, connection: redis.Redis | None) -> dict[str, Any]:
    """What operators look at: provider workspaces with their last full
    sync, held syncs, deliveries pending and failed, queue depths."""
    from models import deliveries, queries, store
    from models.tables import as_utc

    runs = queries.last_full_runs(session)
    workspaces = []
    held = []
    for ws in queries.provider_workspaces(session):
        run = runs.get(ws.id)
        last = store.sync_run_to_dict(run) if run is not None else None
        if last is not None:
            last["at"] = last["finished_at"] or last["started_at"]
        checked = as_utc(ws.installation_checked_at)
        item = {**store.workspace_to_dict(ws), "link_error": ws.link_error, "last_sync": last,
                "installation_id": ws.installation_id,
                "installation_checked_at": checked.isoformat() if checked else None}
        workspaces.append(item)
        if run is not None and run.result == "held":
            held.append({"workspace": ws.id, "name": ws.name, "run": run.id, "reason": run.error})
    counts = queries.delivery_status_counts(session)
    report: dict[str, Any] = {
        "workspaces": workspaces,
        "held": held,
        "deliveries": {
            "pending": sum(counts.get(s, 0) for s in deliveries.PENDING),
            "failed": counts.get(deliveries.FAILED, 0),
            "deferred": counts.get(deliveries.DEFERRED, 0),
            "by_status": counts,
        },
        "queues": None,
    }
    if connection is not None:
        try:
            report["queues"] = queue_depths(connection)
        except redis.RedisError as exc:
            report["queues_error"] = f"redis unreachable: {type(exc).__name__}"
    return report
