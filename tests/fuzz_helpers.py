"""Helpers for tests/test_fuzz.py: an app whose outside world is a closed
port, a fingerprint of everything the store and Redis hold (to prove a
rejected request changed nothing), seed data, and case counters."""
from __future__ import annotations

import hashlib
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import redis as redis_lib
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models import deliveries, managed, store, users
from models.base import Base
from models.config import Settings
from runtime.process import Runtime
from webhooks.app import create_app
from webhooks.observability import METRICS_CACHE_PREFIX

GITHUB_SECRET = "fuzz-github-secret"
GITHUB_OTHER_SECRET = "fuzz-github-other-secret"
GITLAB_TOKEN = "fuzz-gitlab-token"
GITLAB_SIGNING = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN_TOKEN = "fuzz-admin-token-0123456789"
SERVICE_TOKEN = "fuzz-service-token-0123456789"


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections at once: the socket is bound
    (so nothing else can take the port) but never listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def offline_settings(db_url: str, port: int, **overrides: Any) -> Settings:
    """Settings whose GitHub, GitLab and OIDC issuers all point at ``port``."""
    dead = f"http://127.0.0.1:{port}"
    settings = Settings(
        database_url=db_url,
        redis_url="redis://127.0.0.1:6379/15",  # never used: the app gets fakeredis
        github_api_url=dead,
        github_app_id="4242",
        github_app_private_key=None,
        github_webhook_secrets=(GITHUB_SECRET,),
        gitlab_url=dead,
        gitlab_token="glpat-fuzz",
        gitlab_webhook_secrets=(GITLAB_TOKEN,),
        oidc_github_issuers=(f"https://127.0.0.1:{port}",),
        oidc_gitlab_issuers=(f"https://127.0.0.1:{port}/gitlab",),
    )
    return replace(settings, **overrides)


@dataclass
class FuzzApp:
    app: Flask
    client: FlaskClient
    runtime: Runtime
    redis: redis_lib.Redis
    seeded: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Rows of every table of the store."""
        with self.runtime.session() as s:
            return {t.name: int(s.scalar(select(func.count()).select_from(t)) or 0)
                    for t in Base.metadata.sorted_tables}

    def fingerprint(self) -> tuple[dict[str, int], str]:
        """Rows per table and a hash of every row of every table (catches
        updates, not only inserts), in one pass."""
        counts: dict[str, int] = {}
        h = hashlib.sha256()
        with self.runtime.engine.connect() as conn:
            for t in Base.metadata.sorted_tables:
                rows = sorted(repr(tuple(r)) for r in conn.execute(select(t)).all())
                counts[t.name] = len(rows)
                for row in rows:
                    h.update(t.name.encode() + b"\0" + row.encode() + b"\n")
        return counts, h.hexdigest()

    def redis_state(self) -> dict[str, Any]:
        """Every Redis key with its type and size (queue lengths included).
        The /metrics snapshot is left out: it is a cache of figures read
        from the store, which any scrape may refresh, not state."""
        state: dict[str, Any] = {}
        for key in sorted(self.redis.keys("*")):
            if key.decode().startswith(METRICS_CACHE_PREFIX):
                continue
            kind = self.redis.type(key).decode()
            size: Any
            if kind == "list":
                size = self.redis.llen(key)
            elif kind == "zset":
                size = self.redis.zcard(key)
            elif kind == "set":
                size = self.redis.scard(key)
            elif kind == "hash":
                size = self.redis.hlen(key)
            else:
                size = self.redis.get(key)
            state[key.decode()] = (kind, size)
        return state

    def snapshot(self) -> tuple[dict[str, int], str, dict[str, Any]]:
        counts, digest = self.fingerprint()
        return counts, digest, self.redis_state()


def build(engine: Engine, redis: redis_lib.Redis, settings: Settings) -> FuzzApp:
    runtime = Runtime(settings, redis_client=redis, engine=engine)
    app = create_app(runtime=runtime)
    return FuzzApp(app, app.test_client(), runtime, redis)


def seed(fa: FuzzApp) -> dict[str, str]:
    """Workspaces, users, roster entries and deliveries for the endpoints to find."""
    with fa.runtime.session() as s:
        alice = store.create_user(s, "alice", identity=("github", 501, "alice"))
        bob = store.create_user(s, "bob", identity=("github", 502, "bob"))
        gh = store.create_provider_workspace(s, "github", 38302899, "Octocoders", actor="operator",
                                             installation_id=1)
        store.apply_roster_changes(s, gh, adds=[store.StoredMember(501, "alice", "admin"),
                                                store.StoredMember(502, "bob", "member"),
                                                store.StoredMember(503, "carol", "member")],
                                   actor="operator")
        gl = store.create_provider_workspace(s, "gitlab", 100, "acme", actor="operator")
        deliveries.record_delivery(s, "dlv-failed", "github", "organization", "member_added", "{}",
                                   "0" * 64, "github:38302899", status=deliveries.RECEIVED)
        deliveries.record_delivery(s, "dlv-ignored", "gitlab", "Push Hook", None, "{}", "1" * 64,
                                   None, status=deliveries.IGNORED, outcome={"result": "ignored"})
        s.flush()
        deliveries.mark_failed(s, "dlv-failed", "boom")
        # The platform API's objects: a managed workspace with a member, a
        # link invitation and a pending request to join.
        team = managed.create_workspace(s, "team", alice, managed.OPERATOR)
        inv, token = managed.create_invitation(s, team, "member", managed.OPERATOR)
        req, _ = managed.request_to_join(s, token, bob)
        dave = users.sign_up(s, "dave")
        _inv2, token2 = managed.create_invitation(s, team, "admin", managed.OPERATOR)
        managed.decide_request(s, team, managed.request_to_join(s, token2, dave)[0].id, True, managed.OPERATOR)
        ids = {"alice": alice.id, "bob": bob.id, "github_ws": gh.id, "gitlab_ws": gl.id,
               "github_name": gh.name, "gitlab_name": gl.name, "team": team.id, "dave": dave.id,
               "token": token, "invitation": str(inv.id), "request": str(req.id)}
    fa.seeded = ids
    return ids


class Tally:
    """Cases run, by a label, for the report (printed at the end of a test)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, label: str) -> None:
        self.counts[label] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def line(self, title: str) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        return f"{title}: {self.total} cases ({parts})"
