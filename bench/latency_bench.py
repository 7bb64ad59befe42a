"""Webhook-to-store latency with a worker running.

gunicorn (the Procfile's web command) and one `orgsync worker` against
PostgreSQL and Redis, the fake GitHub over loopback HTTP. For each of N new
members: the member is added at the fake provider, a signed
organization.member_added delivery is posted, and the clock stops when the
member's roster entry is committed (polled every 2 ms). One delivery at a time,
so the figure is the pipeline's latency, not queueing under load.

Baseline in the same run: the same member re-read done inline (sync.orgs.member_sync
called in this process against the same database and fake provider), i.e. the
work itself without HTTP intake, Redis and the worker.

    .venv/bin/python bench/latency_bench.py [--n 200]
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import _common  # noqa: F401
import redis
from _common import ROOT, describe_latencies, machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from intake_bench import free_port, wait_up
from sqlalchemy import select, text

from demo.fakes.github_server import FakeGitHub
from demo.fakes.server import FakeProviderServer
from models import store
from models.base import make_engine, make_session_factory
from models.config import Settings
from models.migrate import upgrade
from models.tables import RosterEntry
from sync.context import build_sync_context
from sync.orgs import member_sync

SECRET = "bench-secret"
PG = os.environ.get("ORGSYNC_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("ORGSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
ORG, INSTALLATION, APP_ID = 7001, 71, 4242


def post(port: int, payload: dict[str, object]) -> int:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "organization",
               "X-GitHub-Delivery": str(uuid.uuid4()),
               "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", "/webhooks/github", body=body, headers=headers)
    status = c.getresponse().status
    c.close()
    return status


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--fork", action="store_true", help="run the worker with a fork per job (--fork)")
    args = parser.parse_args()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    schema = f"bench_latency_{secrets.token_hex(4)}"
    eng = make_engine(PG)
    with eng.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    db_url = f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{schema}"
    upgrade(db_url)
    redis.Redis.from_url(REDIS).flushdb()
    procs: list[subprocess.Popen[bytes]] = []
    with FakeProviderServer(github=FakeGitHub(app_id=str(APP_ID), app_public_key=public), keep_alive=True) as server:
        fake = server.github
        fake.add_org(ORG, "latency-org", installation_id=INSTALLATION)
        fake.add_member(ORG, 1, "owner", "admin")
        engine = make_engine(db_url)
        factory = make_session_factory(engine)
        with factory() as s:
            ws = store.create_provider_workspace(s, "github", ORG, "latency-org", actor="bench",
                                                 installation_id=INSTALLATION)
            wid = ws.id
            s.commit()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "ORGSYNC_"))},
               "DATABASE_URL": db_url, "REDIS_URL": REDIS, "GITHUB_API_URL": server.github_api_url,
               "GITHUB_APP_ID": str(APP_ID), "GITHUB_APP_PRIVATE_KEY": private,
               "GITHUB_WEBHOOK_SECRET": SECRET, "ORGSYNC_LOG_LEVEL": "WARNING"}
        bin_dir = Path(sys.executable).parent
        port = free_port()
        try:
            procs.append(subprocess.Popen(
                [str(bin_dir / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2",
                 "--log-level", "warning", "webhooks.app:create_app()"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen([str(bin_dir / "orgsync"), "worker", *(["--fork"] if args.fork else [])], cwd=ROOT, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_up(port, "/readyz")

            def present(uid: int) -> bool:
                with factory() as s:
                    return s.scalar(select(RosterEntry.provider_user_id).where(
                        RosterEntry.workspace_id == wid, RosterEntry.provider_user_id == uid)) is not None

            lat: list[float] = []
            for i in range(args.n + 10):
                uid = 100 + i
                fake.add_member(ORG, uid, f"member{uid}", "member")
                t0 = time.perf_counter()
                status = post(port, {"action": "member_added", "organization": {"id": ORG, "login": "latency-org"},
                                     "membership": {"user": {"id": uid, "login": f"member{uid}"},
                                                    "role": "member", "state": "active"},
                                     "installation": {"id": INSTALLATION}})
                assert status == 202, status
                deadline = time.monotonic() + 30
                while not present(uid):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"member {uid} never reached the store")
                    time.sleep(0.002)
                if i >= 10:  # the first ones warm up the worker and its token
                    lat.append(time.perf_counter() - t0)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
        # Baseline: the same re-read done inline.
        ctx = build_sync_context(Settings(database_url=db_url, github_api_url=server.github_api_url,
                                          github_app_id=str(APP_ID), github_app_private_key=private), factory)
        base: list[float] = []
        for i in range(args.n + 10):
            uid = 100_000 + i
            fake.add_member(ORG, uid, f"inline{uid}", "member")
            t0 = time.perf_counter()
            member_sync(ctx, wid, uid, f"inline{uid}", trigger="bench")
            if i >= 10:
                base.append(time.perf_counter() - t0)
        with factory() as s:
            from models.tables import Delivery

            rows = s.execute(select(Delivery.received_at, Delivery.started_at, Delivery.processed_at)
                             .where(Delivery.processed_at.is_not(None))).all()
        engine.dispose()
    pickup = [(r[1] - r[0]).total_seconds() for r in rows if r[1]]
    work = [(r[2] - r[1]).total_seconds() for r in rows if r[1]]
    with eng.begin() as c:
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    eng.dispose()
    print(f"machine: {machine()}")
    mode = "orgsync worker --fork" if args.fork else "orgsync worker"
    print(f"gunicorn --workers 2 + 1 {mode}, PostgreSQL and Redis, fake GitHub on loopback; n={args.n}")
    print(f"webhook-to-store latency: {describe_latencies(lat)}")
    print(f"  of which: recorded -> job started {describe_latencies(pickup)}")
    print(f"            job started -> processed {describe_latencies(work)}")
    print(f"inline member re-read (baseline): {describe_latencies(base)}")
    mid = sorted(lat)[len(lat) // 2] / sorted(base)[len(base) // 2]
    print(f"ratio (median webhook-to-store / median inline re-read): {mid:.2f}")


if __name__ == "__main__":
    main()
