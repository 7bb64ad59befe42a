"""The web app's World: the app over SQLite and PostgreSQL (tests.conftest
``engine``), fakeredis (or real Redis), configured secrets, the fake provider
server, helpers to post correctly signed deliveries, and a burst worker that
drains the webhooks queue through the real RQ code path.

A plugin of tests/conftest.py: ``world`` and ``make_world`` serve every test
package (the web app's, and the sync rules' tests that go through it)."""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import fakeredis
import pytest
import redis as redis_lib
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from demo.fakes.gitlab_server import DEFAULT_TOKEN
from demo.fakes.server import FakeProviderServer
from models import lanes, store
from models.config import Settings
from models.tables import Activity, Delivery, RosterEntry, SyncRun, WorkLane, Workspace
from runtime.process import Runtime, set_runtime
from sync.providers.signatures import github_headers, gitlab_headers
from webhooks.app import create_app

GITHUB_SECRET = "gh-webhook-secret-current"
GITHUB_OLD_SECRET = "gh-webhook-secret-previous"
GITLAB_SECRET = "gl-webhook-token-current"
GITLAB_SIGNING = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes
APP_ID = "4242"


@dataclass
class World:
    app: Flask
    client: FlaskClient
    runtime: Runtime
    redis: redis_lib.Redis
    server: FakeProviderServer
    sent: list[str] = field(default_factory=list)

    # ------------------------------------------------------------ posting

    def post_github(
        self,
        event: str,
        payload: dict[str, Any] | bytes,
        *,
        delivery: str | None = None,
        secret: str = GITHUB_SECRET,
        headers: Mapping[str, str | None] | None = None,
        content_type: str | None = None,
    ) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        delivery = delivery or str(uuid.uuid4())
        h: dict[str, str | None] = dict(github_headers(body, secret, event, delivery))
        if content_type is not None:
            h["Content-Type"] = content_type
        h.update(headers or {})
        self.sent.append(delivery)
        return self.client.post("/webhooks/github", data=body,
                                headers={k: v for k, v in h.items() if v is not None})

    def post_gitlab(
        self,
        hook: str,
        payload: dict[str, Any] | bytes,
        *,
        token: str | None = GITLAB_SECRET,
        signing_secret: str | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str | None] | None = None,
        timestamp: int | None = None,
    ) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h: dict[str, str | None] = dict(gitlab_headers(
            body, event=hook, token=token, signing_secret=signing_secret,
            idempotency_key=idempotency_key, timestamp=timestamp,
        ))
        h.update(headers or {})
        return self.client.post("/webhooks/gitlab", data=body,
                                headers={k: v for k, v in h.items() if v is not None})

    # ------------------------------------------------------------ queues

    def queue(self, name: str = "webhooks") -> Queue:
        return Queue(name, connection=self.redis)

    def drain(self) -> None:
        """Run every queued wake-up once, in this process (burst): each drains
        its lane, full syncs owed to the lane included."""
        SimpleWorker([self.queue("webhooks"), self.queue("sync")], connection=self.redis).work(burst=True)

    def full_syncs(self) -> list[str]:
        """``sync-<workspace id>`` for every full sync a webhook caused (run by
        the lane's drain) or still owes (a due time on the lane)."""
        with self.session() as s:
            ran = s.scalars(select(SyncRun.workspace_id).where(
                SyncRun.kind == "full", SyncRun.trigger.like("webhook%")).order_by(SyncRun.id))
            out = [f"sync-{w}" for w in ran]
            for lane in s.scalars(select(WorkLane.lane).where(WorkLane.full_sync_due_at.is_not(None))):
                provider, org_id = lanes.parse_lane(lane)
                ws = store.get_provider_workspace(s, provider, org_id) if org_id is not None else None
                if ws is not None:
                    out.append(f"sync-{ws.id}")
            return out

    # The pipeline runs full syncs inside the lane's drain, not as jobs of
    # their own; kept under its old name for the tests that count them.
    sync_jobs = full_syncs

    def drain_all(self) -> None:
        """Deliveries and the full syncs they owe: one burst drains both (the
        drain of a lane runs the full syncs the lane is owed)."""
        self.drain()

    # ------------------------------------------------------------ store

    def session(self) -> Any:
        return self.runtime.session()

    def counts(self) -> dict[str, int]:
        with self.session() as s:
            return {
                name: int(s.scalar(select(func.count()).select_from(table)) or 0)
                for name, table in (("deliveries", Delivery), ("workspaces", Workspace),
                                    ("roster", RosterEntry), ("activity", Activity))
            }

    def delivery(self, delivery_id: str) -> Delivery | None:
        with self.session() as s:
            return s.get(Delivery, delivery_id)

    def github_workspace(
        self, org_id: int, login: str, *, installation_id: int | None = None,
        roster: dict[int, tuple[str, str]] | None = None, status: str = "active",
    ) -> str:
        return self._workspace("github", org_id, login, installation_id, roster, status)

    def gitlab_workspace(
        self, group_id: int, path: str, *, roster: dict[int, tuple[str, str]] | None = None,
        status: str = "active",
    ) -> str:
        return self._workspace("gitlab", group_id, path, None, roster, status)

    def _workspace(
        self, provider: str, org_id: int, login: str, installation_id: int | None,
        roster: dict[int, tuple[str, str]] | None, status: str,
    ) -> str:
        with self.session() as s:
            ws = store.create_provider_workspace(
                s, provider, org_id, login, actor="operator", installation_id=installation_id
            )
            if roster:
                store.apply_roster_changes(
                    s, ws, adds=[store.StoredMember(uid, lg, role) for uid, (lg, role) in roster.items()],
                    actor="operator",
                )
            if status == "suspended":
                store.suspend(s, ws, actor="operator")
            elif status == "disconnected":
                store.disconnect(s, ws, actor="operator")
            return ws.id

    def roster(self, workspace_id: str) -> dict[int, tuple[str, str]]:
        with self.session() as s:
            rows = s.scalars(select(RosterEntry).where(RosterEntry.workspace_id == workspace_id))
            return {r.provider_user_id: (r.login, r.role) for r in rows}

    def workspace(self, workspace_id: str) -> Workspace:
        with self.session() as s:
            return store.get_workspace(s, workspace_id)


MakeWorld = Callable[..., World]


@pytest.fixture
def make_world(
    engine: Engine, fake_redis: redis_lib.Redis, server: FakeProviderServer,
    app_key: str, db_url: str,
) -> Iterator[MakeWorld]:
    """Build a World; keyword arguments override Settings fields, and
    ``redis=`` swaps the app's Redis (a closed port, real Redis)."""

    def build(*, redis: redis_lib.Redis | None = None, **overrides: Any) -> World:
        settings = Settings(
            database_url=db_url,
            redis_url="redis://127.0.0.1:6379/15",
            github_api_url=server.github_api_url,
            github_app_id=APP_ID,
            github_app_private_key=app_key,
            github_webhook_secrets=(GITHUB_SECRET,),
            gitlab_url=server.gitlab_url,
            gitlab_token=DEFAULT_TOKEN,
            gitlab_webhook_secrets=(GITLAB_SECRET,),
        )
        settings = replace(settings, **overrides)
        conn = redis if redis is not None else fake_redis
        runtime = Runtime(settings, redis_client=conn, engine=engine)
        set_runtime(runtime)  # what worker.jobs sees
        app = create_app(runtime=runtime)
        return World(app, app.test_client(), runtime, conn, server)

    yield build
    set_runtime(None)


@pytest.fixture
def world(make_world: MakeWorld) -> World:
    return make_world()


@pytest.fixture
def down_fake_redis() -> redis_lib.Redis:
    """A fakeredis whose server is unreachable (every command raises
    ConnectionError) until ``server.connected`` is set back to True."""
    server = fakeredis.FakeServer()
    server.connected = False
    return fakeredis.FakeRedis(server=server)
