"""Login sync (POST /v1/logins) for a user who belongs to 100 GitHub orgs.

Baseline in the same run: the bare provider reads a login needs (the user
behind the token and its org memberships, through the same adapter over the
same loopback HTTP), without any store work. Figures: first login (account,
personal workspace and 100 provider workspaces created), repeat logins (no
change), API calls per login.

    .venv/bin/python bench/login_bench.py [--orgs 100] [--repeat 20]
ORGSYNC_BENCH_DATABASE_URL=postgresql+psycopg://... runs on PostgreSQL (throwaway schema).
"""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time

import _common  # noqa: F401
from _common import describe_latencies, machine
from sqlalchemy import text

from demo.fakes.server import FakeProviderServer
from models.base import Base, make_engine
from models.config import Settings
from models.tables import Counter
from runtime.process import Runtime
from sync.providers.github import GitHubProvider
from webhooks.app import create_app

SERVICE = "bench-service-token"
USER_TOKEN = "gho_benchusertoken000000000000"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    pg = os.environ.get("ORGSYNC_BENCH_DATABASE_URL")
    schema = None
    if pg:
        schema = f"bench_login_{secrets.token_hex(4)}"
        eng = make_engine(pg)
        with eng.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
        eng.dispose()
        db = f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{schema}"
    else:
        db = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    with FakeProviderServer(keep_alive=True) as server:
        gh = server.github
        gh.add_user_token(USER_TOKEN, 583231, "octocat")
        for i in range(args.orgs):
            org_id = 10_000 + i
            gh.add_org(org_id, f"org{i}")
            gh.add_member(org_id, 583231, "octocat", "admin" if i % 10 == 0 else "member")
            for j in range(20):
                gh.add_member(org_id, 1_000_000 + i * 100 + j, f"m{i}-{j}")
        settings = Settings(database_url=db, service_tokens=(SERVICE,), github_api_url=server.github_api_url)
        runtime = Runtime(settings)
        Base.metadata.create_all(runtime.engine)
        with runtime.session() as s:
            s.add(Counter(name="activity", value=0))
        client = create_app(runtime=runtime).test_client()
        headers = {"Authorization": f"Bearer {SERVICE}"}
        body = {"provider": "github", "access_token": USER_TOKEN}

        # Baseline: the provider reads alone.
        base_times = []
        base_calls = 0
        for _ in range(args.repeat):
            p = GitHubProvider(server.github_api_url)
            t0 = time.perf_counter()
            p.get_token_user(USER_TOKEN)
            orgs = list(p.iter_token_orgs(USER_TOKEN))
            base_times.append(time.perf_counter() - t0)
            base_calls = p.api_calls
            assert len(orgs) == args.orgs

        gh.reset_log()
        t0 = time.perf_counter()
        resp = client.post("/v1/logins", json=body, headers=headers)
        first = time.perf_counter() - t0
        assert resp.status_code == 200, resp.get_json()
        first_calls = gh.request_count
        workspaces = resp.get_json()["workspaces"]
        repeat_times = []
        for _ in range(args.repeat):
            gh.reset_log()
            t0 = time.perf_counter()
            resp = client.post("/v1/logins", json=body, headers=headers)
            repeat_times.append(time.perf_counter() - t0)
            assert resp.status_code == 200
        repeat_calls = gh.request_count
    if schema and pg:
        eng = make_engine(pg)
        with eng.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        eng.dispose()
    print(f"machine: {machine()}")
    print(f"database: {'PostgreSQL' if pg else 'SQLite'}; user in {args.orgs} GitHub orgs (20 other members each)")
    print(f"first login: {first * 1000:.0f} ms, {first_calls} API calls, "
          f"{len(workspaces)} workspaces in the answer (personal + {args.orgs} provider)")
    print(f"repeat login ({args.repeat}x): {describe_latencies(repeat_times)}, {repeat_calls} API calls each")
    print(f"bare provider reads ({args.repeat}x): {describe_latencies(base_times)}, {base_calls} API calls each")
    print(f"ratio (repeat login / bare provider reads, median): "
          f"{statistics.median(repeat_times) / statistics.median(base_times):.2f}")


if __name__ == "__main__":
    main()
