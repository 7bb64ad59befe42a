"""GET /metrics (Prometheus).

Metrics come from the shared database and Redis by a custom collector, not
from counters in process memory: with many gunicorn workers and RQ work
horses (which exit after every job) in-process counters would each see a
fraction and reset on every restart. Any web process therefore answers with
the deployment-wide figures.

Cost: the database figures are aggregates over the deliveries and sync-runs
tables. Computed on every scrape, a few scrapers in a loop over a large
table would slow the webhook intake that shares the database. So they are a
snapshot, shared through Redis and recomputed at most once every
METRICS_REFRESH_SECONDS by one process of the fleet (a Redis lock); a scrape
in between costs no database statement at all, whatever the table sizes.
``orgsync_metrics_snapshot_age_seconds`` says how old the figures are. The
tables themselves stay bounded: deliveries and sync runs are pruned after
30 days.

``ORGSYNC_METRICS_TOKEN``, when set, protects /metrics with a bearer token.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis as redis_lib
from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from models import queries
from oidc.verifier import REPLAYS_COUNTER
from runtime.process import Runtime
from runtime.queues import queue_depths
from sync.providers.signatures import token_matches
from webhooks.errors import ApiError
from webhooks.services import services

bp = Blueprint("observability", __name__)
log = logging.getLogger(__name__)

METRICS_REFRESH_SECONDS = 30
# Cache keys only (figures read from the store, refreshable at any time).
METRICS_CACHE_PREFIX = "orgsync:metrics:"
SNAPSHOT_KEY = METRICS_CACHE_PREFIX + "database"
REFRESH_LOCK_KEY = METRICS_CACHE_PREFIX + "refreshing"
# app.extensions keys: the clock (tests move it) and the process's own copy
# of the snapshot, used while Redis is unreachable.
CLOCK_EXTENSION = "orgsync_metrics_clock"
LOCAL_SNAPSHOT_EXTENSION = "orgsync_metrics_local_snapshot"

Snapshot = dict[str, Any]


def compute_snapshot(runtime: Runtime, now: float) -> Snapshot:
    """Every database figure, in a fixed number of statements."""
    with runtime.session() as s:
        return {
            "computed_at": now,
            "outcomes": queries.delivery_outcomes(s),
            "runs": queries.sync_run_totals(s),
            "sync_hist": queries.duration_histogram(s, "sync"),
            "delivery_hist": queries.duration_histogram(s, "delivery"),
            "workspaces": queries.workspace_counts(s),
            "held": sum(1 for r in queries.last_full_runs(s).values() if r.result == "held"),
        }


class SnapshotCache:
    """The database figures, recomputed at most every METRICS_REFRESH_SECONDS."""

    def __init__(self, runtime: Runtime, clock: Callable[[], float], local: dict[str, Snapshot]) -> None:
        self.runtime = runtime
        self.clock = clock
        self.local = local

    def _fresh(self, snap: Snapshot | None, now: float) -> bool:
        return snap is not None and now - float(snap["computed_at"]) < METRICS_REFRESH_SECONDS

    def get(self) -> Snapshot | None:
        now = self.clock()
        try:
            raw = self.runtime.redis.get(SNAPSHOT_KEY)
            snap: Snapshot | None = json.loads(raw) if raw else None
            if self._fresh(snap, now):
                return snap
            # One refresher for the fleet; the others serve the previous
            # snapshot meanwhile. The lock expires on its own, so a refresher
            # that dies (or a database that fails) is retried next interval,
            # not on every scrape.
            if not self.runtime.redis.set(REFRESH_LOCK_KEY, "1", nx=True, ex=METRICS_REFRESH_SECONDS):
                return snap
        except redis_lib.RedisError:
            # Without Redis each process refreshes its own copy, still at most
            # once per interval.
            snap = self.local.get("snapshot")
            if self._fresh(snap, now):
                return snap
            self.local["snapshot"] = snap = compute_snapshot(self.runtime, now)
            return snap
        snap = compute_snapshot(self.runtime, now)
        self.local["snapshot"] = snap
        try:
            self.runtime.redis.set(SNAPSHOT_KEY, json.dumps(snap), ex=METRICS_REFRESH_SECONDS * 20)
            # From here the fresh snapshot keeps the others from refreshing;
            # the lock only stood between concurrent refreshers. (After a
            # failed refresh it stays until it expires.)
            self.runtime.redis.delete(REFRESH_LOCK_KEY)
        except redis_lib.RedisError:
            pass
        return snap


class OrgsyncCollector(Collector):
    def __init__(self, runtime: Runtime, cache: SnapshotCache) -> None:
        self.runtime = runtime
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("orgsync_scrape_source_up",
                               "1 when the source could be read for this scrape", labels=["source"])
        try:
            snap = self.cache.get()
        except Exception:  # a scrape reports what it can
            log.warning("metrics: the database figures could not be computed", exc_info=True)
            snap = None
        if snap is not None:
            yield from self._database(snap)
        up.add_metric(["database"], 1 if snap is not None else 0)
        try:
            yield from self._redis()
            up.add_metric(["redis"], 1)
        except Exception:  # noqa: BLE001
            up.add_metric(["redis"], 0)
        yield up

    def _database(self, snap: Snapshot) -> Iterator[Metric]:
        yield GaugeMetricFamily("orgsync_metrics_snapshot_age_seconds",
                                "Age of the database figures (recomputed at most every "
                                f"{METRICS_REFRESH_SECONDS} s)",
                                value=max(0.0, self.cache.clock() - float(snap["computed_at"])))
        d = GaugeMetricFamily(
            "orgsync_deliveries",
            "Webhook deliveries stored (processed ones are kept 30 days), by provider, event and outcome",
            labels=["provider", "event", "outcome"],
        )
        for provider, event, status, n in snap["outcomes"]:
            d.add_metric([provider, event, status], n)
        yield d
        r = CounterMetricFamily("orgsync_sync_runs", "Sync runs by kind and result (kept 30 days)",
                                labels=["kind", "result"])
        calls = CounterMetricFamily("orgsync_provider_api_calls",
                                    "Provider API requests made by sync runs", labels=["kind"])
        nm = CounterMetricFamily("orgsync_provider_not_modified",
                                 "Conditional provider requests answered 304 (free of rate limit)",
                                 labels=["kind"])
        per_kind_calls: dict[str, int] = {}
        per_kind_nm: dict[str, int] = {}
        for kind, result, n, c, m in snap["runs"]:
            r.add_metric([kind, result], n)
            per_kind_calls[kind] = per_kind_calls.get(kind, 0) + c
            per_kind_nm[kind] = per_kind_nm.get(kind, 0) + m
        for kind, c in per_kind_calls.items():
            calls.add_metric([kind], c)
            nm.add_metric([kind], per_kind_nm[kind])
        yield r
        yield calls
        yield nm
        yield _histogram("orgsync_sync_duration_seconds", "Duration of finished sync runs", "kind",
                         snap["sync_hist"])
        yield _histogram("orgsync_delivery_processing_seconds",
                         "Time from a delivery job's start to the delivery being processed",
                         "provider", snap["delivery_hist"])
        w = GaugeMetricFamily("orgsync_workspaces", "Workspaces by kind and status", labels=["kind", "status"])
        for kind, status, n in snap["workspaces"]:
            w.add_metric([kind, status], n)
        yield w
        yield GaugeMetricFamily("orgsync_syncs_held",
                                "Workspaces whose last full sync is held by the mass-removal guard",
                                value=snap["held"])

    def _redis(self) -> Iterator[Metric]:

        depths = queue_depths(self.runtime.redis)
        g = GaugeMetricFamily("orgsync_queue_jobs", "RQ jobs per queue and state", labels=["queue", "state"])
        for queue, states in depths.items():
            for state, n in states.items():
                g.add_metric([queue, state], n)
        yield g
        replays = self.runtime.redis.get(REPLAYS_COUNTER)
        yield CounterMetricFamily("orgsync_oidc_replays",
                                  "CI tokens refused because they were already used",
                                  value=int(replays or 0))


def _histogram(name: str, doc: str, label: str, rows: list[tuple[str, list[int], int, float]]) -> Metric:
    h = HistogramMetricFamily(name, doc, labels=[label])
    for value, buckets, count, total in rows:
        pairs = [(_le(b), n) for b, n in zip(queries.DURATION_BUCKETS, buckets, strict=True)]
        pairs.append(("+Inf", count))
        h.add_metric([value], pairs, total)
    return h


def _le(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)


def _check_metrics_token() -> None:
    configured = services().settings.metrics_tokens
    if not configured:
        return
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    # token_matches hashes both sides: the comparison leaks neither the
    # token's bytes nor its length.
    if scheme.lower() != "bearer" or not value.strip() or not token_matches(value.strip(), configured):
        raise ApiError(401, "unauthorized", "A valid metrics bearer token (ORGSYNC_METRICS_TOKEN) is required.")


@bp.get("/metrics")
def metrics() -> Response:
    _check_metrics_token()
    runtime = services()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    cache = SnapshotCache(runtime, app.extensions.get(CLOCK_EXTENSION, time.time),
                          app.extensions.setdefault(LOCAL_SNAPSHOT_EXTENSION, {}))
    # A registry per scrape: the figures come from shared state, and nothing
    # is registered globally (several apps may live in one test process).
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OrgsyncCollector(runtime, cache))
    # CONTENT_TYPE_LATEST already names its charset; `mimetype=` would append a second one.
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
