"""The worker's Env: a Runtime over a fresh database (SQLite; PostgreSQL where a
test asks for ``engine``) and fakeredis or real Redis, the fake provider
server with one GitHub org installed, and helpers to record deliveries and
drain the queues with real RQ workers in burst mode.

A plugin of tests/conftest.py: ``env``, ``real_env`` and ``env_all_db`` serve
every test package (the pipeline's parts live in sync/, runtime/, models/ and
worker/)."""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from rq import SimpleWorker
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from demo.fakes.gitlab_server import DEFAULT_TOKEN
from demo.fakes.server import FakeProviderServer
from models import deliveries, store
from models.base import make_engine
from models.config import Settings
from models.tables import Delivery, WorkLane, utcnow
from runtime import queues
from runtime.process import Runtime, set_runtime
from runtime.queues import all_queues
from tests.conftest import _create_all
from worker import jobs
from worker.cli import serialize

APP_ID = "4242"
ORG_ID, INSTALLATION = 9001, 77
ADMIN_TOKEN = "admin-token-for-tests"
SERVICE_TOKEN = "service-token-for-tests"
GITHUB_SECRET = "gh-secret-for-tests"


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'worker.db'}")
    _create_all(eng)
    yield eng
    eng.dispose()


def make_settings(db_url: str, server: FakeProviderServer, app_key: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "github_api_url": server.github_api_url,
        "github_app_id": APP_ID,
        "github_app_private_key": app_key,
        "github_webhook_secrets": (GITHUB_SECRET,),
        "gitlab_url": server.gitlab_url,
        "gitlab_token": DEFAULT_TOKEN,
        "admin_tokens": (ADMIN_TOKEN,),
        "service_tokens": (SERVICE_TOKEN,),
        "resync_interval": 3600,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Env:
    runtime: Runtime
    redis: redis_lib.Redis
    server: FakeProviderServer
    workspace_id: str = ""

    def session(self) -> Any:
        return self.runtime.session()

    def drain(self) -> None:
        """Run every queued job: a real RQ worker in burst mode. No RQ
        scheduler: retries and deferrals are due times in the database, which
        the sweep turns into wake-ups."""
        SimpleWorker(all_queues(self.redis), connection=self.redis).work(burst=True, logging_level="WARNING")

    def add_org(self, login: str = "acme", members: int = 3) -> str:
        self.server.github.add_org(ORG_ID, login, installation_id=INSTALLATION)
        for uid in range(1, members + 1):
            self.server.github.add_member(ORG_ID, uid, f"user{uid}", "admin" if uid == 1 else "member")
        with self.session() as s:
            ws = store.create_provider_workspace(s, "github", ORG_ID, login, actor="test",
                                                 installation_id=INSTALLATION)
            self.workspace_id = ws.id
        return self.workspace_id

    def record_member_event(self, uid: int, *, action: str = "member_added",
                            delivery_id: str | None = None) -> str:
        payload = {
            "action": action,
            "organization": {"id": ORG_ID, "login": "acme"},
            "membership": {"user": {"id": uid, "login": f"user{uid}"}, "role": "member", "state": "active"},
            "installation": {"id": INSTALLATION},
            "sender": {"id": 1, "login": "user1"},
        }
        text = json.dumps(payload)
        delivery_id = delivery_id or f"d-{uid}-{action}-{time.monotonic_ns()}"
        with self.session() as s:
            deliveries.record_delivery(s, delivery_id, "github", "organization", action, text,
                                       hashlib.sha256(text.encode()).hexdigest(), f"github:{ORG_ID}",
                                       hint_user_id=uid)
        return delivery_id

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        with self.session() as s:
            return serialize.delivery(deliveries.delivery_view(deliveries.get_delivery(s, delivery_id)))

    def runs(self, kind: str = "full") -> list[store.RunResult]:
        from sqlalchemy import select

        from models.tables import SyncRun

        with self.session() as s:
            return [store.run_result(r) for r in s.scalars(
                select(SyncRun).where(SyncRun.kind == kind).order_by(SyncRun.id))]


def _env(engine: Engine, redis: redis_lib.Redis, server: FakeProviderServer, app_key: str) -> Iterator[Env]:
    settings = make_settings(engine.url.render_as_string(hide_password=False), server, app_key,
                             redis_url=None)
    rt = Runtime(settings, redis_client=redis, engine=engine)
    set_runtime(rt)
    jobs.set_sync_context(None)
    try:
        yield Env(rt, redis, server)
    finally:
        jobs.set_sync_context(None)
        set_runtime(None)


@pytest.fixture
def env(sqlite_engine: Engine, any_redis: redis_lib.Redis, server: FakeProviderServer,
        app_key: str) -> Iterator[Env]:
    """SQLite with fakeredis, and with real Redis when configured."""
    yield from _env(sqlite_engine, any_redis, server, app_key)


@pytest.fixture
def real_env(sqlite_engine: Engine, real_redis: redis_lib.Redis, server: FakeProviderServer,
             app_key: str) -> Iterator[Env]:
    """SQLite with real Redis only (a forking worker cannot share fakeredis)."""
    yield from _env(sqlite_engine, real_redis, server, app_key)


@pytest.fixture
def env_all_db(engine: Engine, any_redis: redis_lib.Redis, server: FakeProviderServer,
               app_key: str) -> Iterator[Env]:
    """Every database (SQLite, PostgreSQL) with every Redis."""
    yield from _env(engine, any_redis, server, app_key)


def other_connection(conn: redis_lib.Redis) -> redis_lib.Redis:
    """A second client of the same Redis (another process's view)."""
    import fakeredis

    if isinstance(conn, fakeredis.FakeRedis):
        return fakeredis.FakeRedis(server=conn.connection_pool.connection_kwargs["server"])
    return redis_lib.Redis(connection_pool=redis_lib.ConnectionPool(**conn.connection_pool.connection_kwargs))


# --------------------------------------------------------------------------- the pipeline's lane
# The one org's lane, and readers of its state, for the tests of the pipeline's
# parts (sync/batch.py, worker/jobs.py, runtime/queues.py, models/lanes.py).
LANE = f"github:{ORG_ID}"


def _wake(env: Env) -> None:
    queues.wake(env.redis, LANE, force=True)


def _time_passes(env: Env) -> None:
    """Every due time and lease of the lane is now in the past."""
    past = utcnow() - timedelta(seconds=1)
    with env.session() as s:
        s.execute(update(Delivery).where(Delivery.org_key == LANE, Delivery.due_at.is_not(None))
                  .values(due_at=past))
        s.execute(update(Delivery).where(Delivery.org_key == LANE, Delivery.leased_until.is_not(None))
                  .values(leased_until=past))
        s.execute(update(WorkLane).where(WorkLane.lane == LANE, WorkLane.leased_until.is_not(None))
                  .values(leased_until=past))
        s.execute(update(WorkLane).where(WorkLane.lane == LANE, WorkLane.full_sync_due_at.is_not(None))
                  .values(full_sync_due_at=past))


def _roster(env: Env) -> dict[int, str]:
    from models.tables import RosterEntry

    with env.session() as s:
        return {r.provider_user_id: r.role for r in s.scalars(
            select(RosterEntry).where(RosterEntry.workspace_id == env.workspace_id))}


def _statuses(env: Env, ids: list[str]) -> list[tuple[str, int]]:
    return [(env.delivery(d)["status"], env.delivery(d)["attempts"]) for d in ids]
