"""Fixtures of the CLI's tests: a migrated SQLite database and no REDIS_URL
(the embedded default), the fake provider server with one GitHub org seeded,
and helpers that run a command in this process (click's runner), read the HTTP
API's answer to the same question on the same database, and record
deliveries."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from demo.fakes.server import FakeProviderServer
from models import deliveries, store
from models.base import make_engine
from models.migrate import upgrade
from runtime.process import Runtime, embedded_redis, set_runtime
from tests.worker_env import (
    ADMIN_TOKEN,
    APP_ID,
    GITHUB_SECRET,
    INSTALLATION,
    ORG_ID,
    make_settings,
)
from webhooks.app import create_app
from worker import jobs
from worker.cli import main


@pytest.fixture
def cli_env(tmp_path: Path, server: FakeProviderServer, app_key: str) -> Iterator[dict[str, str]]:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(db)
    env = {
        "DATABASE_URL": db,
        "REDIS_URL": "",
        "GITHUB_API_URL": server.github_api_url,
        "GITHUB_APP_ID": APP_ID,
        "GITHUB_APP_PRIVATE_KEY": app_key,
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        "ORGSYNC_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    embedded_redis().flushall()
    yield env
    embedded_redis().flushall()
    jobs.set_sync_context(None)
    set_runtime(None)


@pytest.fixture
def seeded(cli_env: dict[str, str], server: FakeProviderServer) -> dict[str, str]:
    server.github.add_org(ORG_ID, "acme", installation_id=INSTALLATION)
    for uid in (1, 2, 3):
        server.github.add_member(ORG_ID, uid, f"user{uid}", "admin" if uid == 1 else "member")
    engine = make_engine(cli_env["DATABASE_URL"])
    rt = Runtime(make_settings(cli_env["DATABASE_URL"], server, cli_env["GITHUB_APP_PRIVATE_KEY"]), engine=engine)
    with rt.session() as s:
        u1, _ = store.get_or_create_user_for_identity(s, "github", 1, "user1", actor="test")
        u2, _ = store.get_or_create_user_for_identity(s, "github", 2, "user2", actor="test")
        ws = store.create_provider_workspace(s, "github", ORG_ID, "acme", actor="test", owner=u1,
                                             installation_id=INSTALLATION)
        store.apply_roster_changes(s, ws, adds=[store.StoredMember(1, "user1", "admin"),
                                                store.StoredMember(2, "user2", "member")], actor="test")
        ids = {"ws": ws.id, "u1": u1.id, "u2": u2.id}
    engine.dispose()
    return ids


def run(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def api_json(env: dict[str, str], method: str, path: str, body: Any = None) -> Any:
    """The HTTP API's answer for the same question, on the same database."""
    from models.config import load_settings

    rt = Runtime(load_settings({k: v for k, v in env.items() if v}))
    client = create_app(runtime=rt).test_client()
    resp = client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    rt.engine.dispose()
    return resp.get_json()


def _record(env: dict[str, str], delivery_id: str, uid: int, status: str) -> None:
    payload = json.dumps({
        "action": "member_added", "organization": {"id": ORG_ID, "login": "acme"},
        "membership": {"user": {"id": uid, "login": f"user{uid}"}, "role": "member", "state": "active"},
        "installation": {"id": INSTALLATION},
    })
    engine = make_engine(env["DATABASE_URL"])
    from models.base import make_session_factory, session_scope

    with session_scope(make_session_factory(engine)) as s:
        deliveries.record_delivery(s, delivery_id, "github", "organization", "member_added", payload, "0" * 64,
                                   f"github:{ORG_ID}")
        deliveries.mark_failed(s, delivery_id, "transient provider error: 502") if status == "failed" else None
    engine.dispose()
