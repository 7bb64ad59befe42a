"""Queue names and the one place that knows how jobs are enqueued."""
from __future__ import annotations

import redis
from rq import Queue

# Priority order: a worker drains webhooks first.
QUEUE_NAMES = ("webhooks", "sync", "default")


def get_queue(name: str, connection: redis.Redis) -> Queue:
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=connection)


def all_queues(connection: redis.Redis) -> list[Queue]:
    return [Queue(n, connection=connection) for n in QUEUE_NAMES]
