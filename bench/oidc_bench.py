"""CI tenant resolution throughput with warm key caches, beside bare PyJWT.

Both sides verify the same kind of RS256 token in this process, in the same run:
- orgsync: POST /v1/oidc/resolve through the Flask app (issuer check, cached JWKS,
  claim checks, jti replay guard in Redis, tenant lookup, activity entry, commit);
- baseline: ``jwt.decode(token, public_key, algorithms=["RS256"], audience=..., issuer=...)``.
Every token has its own jti (each is accepted once).

    .venv/bin/python bench/oidc_bench.py [--n 2000]
ORGSYNC_BENCH_DATABASE_URL / ORGSYNC_BENCH_REDIS_URL use real PostgreSQL / Redis.
"""
from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time

import _common  # noqa: F401  (puts the project on sys.path)
import fakeredis
import jwt
import redis
import responses
from _common import describe_latencies, machine
from sqlalchemy import text

from demo.fakes.issuer import GITHUB_ISSUER, FakeIssuer
from models import store
from models.base import Base, make_engine
from models.config import Settings
from runtime.process import Runtime
from webhooks.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    pg = os.environ.get("ORGSYNC_BENCH_DATABASE_URL")
    schema = f"bench_oidc_{secrets.token_hex(4)}"
    if pg:
        admin = make_engine(pg)
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
        db = f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{schema}"
    else:
        db = f"sqlite:///{tmp}/bench.db"
    redis_url = os.environ.get("ORGSYNC_BENCH_REDIS_URL")
    conn = redis.Redis.from_url(redis_url) if redis_url else fakeredis.FakeRedis(server=fakeredis.FakeServer())
    if redis_url:
        conn.flushdb()
    runtime = Runtime(Settings(database_url=db), redis_client=conn)
    Base.metadata.create_all(runtime.engine)
    with runtime.session() as s:
        from models.tables import Counter

        s.add(Counter(name="activity", value=0))
        s.flush()
        owner = store.create_user(s, "octocat", identity=("github", 583231, "octocat"))
        ws = store.create_provider_workspace(s, "github", 9919, "acme", actor="bench", owner=owner)
        store.set_subscription(s, ws, "pro")
    app = create_app(runtime=runtime)
    client = app.test_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        issuer = FakeIssuer(rsps, GITHUB_ISSUER, "github")
        tokens = [issuer.mint() for _ in range(args.n + 50)]
        public_key = issuer.key.private_key.public_key()
        # Warm up: the first request fetches discovery + JWKS; later ones use the cache.
        for t in tokens[:50]:
            assert client.post("/v1/oidc/resolve", json={"token": t}).status_code == 200
        fetches_after_warmup = issuer.jwks_fetches
        lat: list[float] = []
        start = time.perf_counter()
        for t in tokens[50:]:
            t0 = time.perf_counter()
            resp = client.post("/v1/oidc/resolve", json={"token": t})
            lat.append(time.perf_counter() - t0)
            assert resp.status_code == 200, resp.get_json()
        total = time.perf_counter() - start
        base_lat: list[float] = []
        bstart = time.perf_counter()
        for t in tokens[50:]:
            t0 = time.perf_counter()
            jwt.decode(t, public_key, algorithms=["RS256"], audience="orgsync", issuer=GITHUB_ISSUER,
                       leeway=30)
            base_lat.append(time.perf_counter() - t0)
        btotal = time.perf_counter() - bstart
        extra_fetches = issuer.jwks_fetches - fetches_after_warmup
    runtime.engine.dispose()
    if pg:
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    n = args.n
    print(f"machine: {machine()}")
    print(f"database: {'PostgreSQL' if db.startswith('postgres') else 'SQLite'}, "
          f"redis: {'real' if redis_url else 'in-process stand-in'}")
    print(f"orgsync /v1/oidc/resolve: {n / total:.0f} resolutions/s, {describe_latencies(lat)}")
    print(f"bare PyJWT RS256 decode:  {n / btotal:.0f} verifications/s, {describe_latencies(base_lat)}")
    print(f"ratio (orgsync / bare PyJWT throughput): {(n / total) / (n / btotal):.3f}")
    print(f"JWKS fetches during the measured run: {extra_fetches}")


if __name__ == "__main__":
    main()
