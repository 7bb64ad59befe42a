"""GET /metrics (webhooks/observability.py): a scrape's database cost does not
grow with the tables, the figures are shared by the fleet and computed from
shared state (still answered with Redis down), and ORGSYNC_METRICS_TOKEN
protects it."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models import deliveries
from models.tables import Delivery, SyncRun
from runtime import queues
from tests.app_world import MakeWorld, World
from tests.webhooks.conftest import Clock, statements
from webhooks.app import create_app
from webhooks.observability import CLOCK_EXTENSION, METRICS_REFRESH_SECONDS


def _grow(world: World, workspace_id: str, rows: int) -> None:
    now = datetime.now(UTC)
    with world.session() as s:
        s.add_all(Delivery(id=f"m-{uuid.uuid4()}", provider="github", event="organization", action="member_added",
                           body_sha256="0" * 64, payload="{}", status="processed", received_at=now,
                           started_at=now - timedelta(seconds=1), processed_at=now) for _ in range(rows))
        s.add_all(SyncRun(workspace_id=workspace_id, kind="member", trigger="t", result="ok",
                          started_at=now - timedelta(seconds=2), finished_at=now, api_calls=1)
                  for _ in range(rows))


def _scrape(world: World, **headers: str) -> str:
    resp = world.client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_data(as_text=True)


@pytest.fixture
def clocked(world: World) -> tuple[World, Clock, str]:
    clock = Clock(1_000_000.0)
    world.app.extensions[CLOCK_EXTENSION] = clock
    return world, clock, world.github_workspace(1, "acme")


def test_a_scrapes_statement_count_does_not_grow_with_the_tables(clocked: tuple[World, Clock, str]) -> None:
    world, clock, ws = clocked
    counts: dict[int, int] = {}
    total = 0
    for rows in (0, 10, 1000):
        _grow(world, ws, rows - total)
        total = rows
        clock.now += METRICS_REFRESH_SECONDS  # the snapshot is due
        with statements(world) as seen:
            text = _scrape(world)
        counts[rows] = len(seen)
        assert f'orgsync_sync_runs_total{{kind="member",result="ok"}} {float(rows)}' in text or rows == 0
    assert counts[0] == counts[10] == counts[1000] > 0, counts


def test_scrapes_between_refreshes_cost_no_statement(clocked: tuple[World, Clock, str]) -> None:
    world, clock, ws = clocked
    _grow(world, ws, 5)
    with statements(world) as seen:
        first = _scrape(world)
    assert seen
    _grow(world, ws, 5)
    with statements(world) as seen:
        for _ in range(METRICS_REFRESH_SECONDS - 1):
            clock.now += 1
            again = _scrape(world)
    assert seen == []
    assert 'orgsync_sync_runs_total{kind="member",result="ok"} 5.0' in again
    assert "orgsync_metrics_snapshot_age_seconds" in first
    # Once the interval has passed, one scrape refreshes the figures.
    clock.now += 1
    assert 'orgsync_sync_runs_total{kind="member",result="ok"} 10.0' in _scrape(world)


def test_the_fleet_shares_one_snapshot(clocked: tuple[World, Clock, str]) -> None:
    world, clock, ws = clocked
    _grow(world, ws, 3)
    _scrape(world)
    other = create_app(runtime=world.runtime)  # another web process: same database and Redis
    other.extensions[CLOCK_EXTENSION] = clock
    with statements(world) as seen:
        text = other.test_client().get("/metrics").get_data(as_text=True)
    assert seen == []
    assert 'orgsync_sync_runs_total{kind="member",result="ok"} 3.0' in text


def test_without_redis_each_process_still_refreshes_at_most_once_per_interval(
    make_world: MakeWorld, down_fake_redis: Any
) -> None:
    world = make_world(redis=down_fake_redis)
    clock = Clock(1_000_000.0)
    world.app.extensions[CLOCK_EXTENSION] = clock
    with statements(world) as seen:
        text = _scrape(world)
        refresh = len(seen)
        for _ in range(5):
            _scrape(world)
    assert refresh > 0 and len(seen) == refresh
    assert 'orgsync_scrape_source_up{source="database"} 1.0' in text


METRICS_TOKEN_CASES: list[tuple[str, dict[str, str], int]] = [
    ("no header", {}, 401),
    ("wrong token", {"Authorization": "Bearer not-the-token"}, 401),
    ("prefix of the token", {"Authorization": "Bearer metrics-tok"}, 401),
    ("basic auth", {"Authorization": "Basic bWV0cmljczp4"}, 401),
    ("empty bearer", {"Authorization": "Bearer "}, 401),
    ("the admin token", {"Authorization": "Bearer admin-token"}, 401),
    ("the token", {"Authorization": "Bearer metrics-token-1"}, 200),
    ("the rotated token", {"Authorization": "Bearer metrics-token-2"}, 200),
]


@pytest.mark.parametrize(("case", "headers", "status"), METRICS_TOKEN_CASES, ids=[c[0] for c in METRICS_TOKEN_CASES])
def test_metrics_token(make_world: MakeWorld, case: str, headers: dict[str, str], status: int) -> None:
    world = make_world(metrics_tokens=("metrics-token-1", "metrics-token-2"), admin_tokens=("admin-token",))
    resp = world.client.get("/metrics", headers=headers)
    assert resp.status_code == status
    if status == 401:
        assert resp.get_json()["error"] == "unauthorized"
        assert "orgsync_" not in resp.get_data(as_text=True)
    else:
        assert "orgsync_workspaces" in resp.get_data(as_text=True)


def test_metrics_are_open_when_no_token_is_configured(world: World) -> None:
    assert world.client.get("/metrics").status_code == 200


# --------------------------------------------------------------------------- shared state


def test_metrics_are_computed_from_shared_state(api: World, acme: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    with api.session() as s:
        s.add(SyncRun(workspace_id=acme["ws"], kind="full", trigger="t", result="ok",
                      started_at=now - timedelta(seconds=3), finished_at=now, api_calls=7))
        deliveries.record_delivery(s, "m1", "github", "organization", "member_added", "{}", "0" * 64, None,
                                   status="processed")
    queues.wake(api.redis, "github:9001", queue="sync")
    resp = api.client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    # Exactly Prometheus' exposition type, with its charset named once.
    content_type = resp.headers["Content-Type"]
    assert content_type.startswith("text/plain; version=") and content_type.count("charset=") == 1, content_type
    text = resp.get_data(as_text=True)
    assert 'orgsync_deliveries{event="organization",outcome="processed",provider="github"} 1.0' in text
    assert 'orgsync_sync_runs_total{kind="full",result="ok"} 1.0' in text
    assert 'orgsync_provider_api_calls_total{kind="full"} 7.0' in text
    assert 'orgsync_queue_jobs{queue="sync",state="queued"} 1.0' in text
    assert 'orgsync_sync_duration_seconds_bucket{kind="full",le="5"} 1.0' in text
    assert 'orgsync_sync_duration_seconds_bucket{kind="full",le="1"} 0.0' in text
    assert 'orgsync_scrape_source_up{source="database"} 1.0' in text


def test_metrics_still_answer_when_redis_is_down(make_world: MakeWorld, down_fake_redis: Any) -> None:
    world = make_world(redis=down_fake_redis)
    text = world.client.get("/metrics").get_data(as_text=True)
    assert 'orgsync_scrape_source_up{source="redis"} 0.0' in text
    assert 'orgsync_scrape_source_up{source="database"} 1.0' in text
