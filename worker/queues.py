"""Queue names and the one place that knows how jobs are enqueued:
queue names, job ids, retries and timeouts."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

# Priority order: a worker drains webhooks first.
QUEUE_NAMES = ("webhooks", "sync", "default")

# Transient provider errors: retry with backoff (needs a worker with scheduler).
DELIVERY_RETRY = Retry(max=5, interval=[5, 15, 60, 180, 600])
SYNC_RETRY = Retry(max=4, interval=[30, 120, 300, 900])


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


def sync_job_id(workspace_id: str) -> str:
    return f"sync-{workspace_id}"


def enqueue_delivery(connection: redis.Redis, delivery_id: str) -> str:
    """Queue processing of a recorded delivery. Raises redis errors when Redis
    is down: the caller keeps the delivery recorded and the sweep queues it."""
    job_id = delivery_job_id(delivery_id)
    try:
        get_queue("webhooks", connection).enqueue(
            "worker.jobs.process_delivery", delivery_id, job_id=job_id, unique=True,
            retry=DELIVERY_RETRY, job_timeout=300, result_ttl=0, failure_ttl=3600,
        )
    except DuplicateJobError:
        pass  # already queued: nothing is queued twice
    return job_id


def enqueue_full_sync(
    connection: redis.Redis, workspace_id: str, *, trigger: str, force: bool = False,
    at: datetime | None = None, delay: timedelta | None = None,
) -> str:
    """Queue a full sync; a second trigger joins the one already queued."""
    job_id = sync_job_id(workspace_id)
    queue = get_queue("sync", connection)
    kwargs: dict[str, Any] = dict(job_id=job_id, unique=True, retry=SYNC_RETRY, job_timeout=3600,
                  result_ttl=0, failure_ttl=60)
    try:
        if at is not None:
            queue.enqueue_at(at, "worker.jobs.sync_org", workspace_id, trigger, force, **kwargs)
        elif delay is not None:
            queue.enqueue_in(delay, "worker.jobs.sync_org", workspace_id, trigger, force, **kwargs)
        else:
            queue.enqueue("worker.jobs.sync_org", workspace_id, trigger, force, **kwargs)
    except DuplicateJobError:
        pass
    return job_id
