"""The platform API's two hot reads under gunicorn against PostgreSQL, beside a
bare Flask endpoint that only answers 202 — same gunicorn settings, same
client, same run:

- GET /v1/users/<ref>/workspaces for a user in 200 workspaces (personal,
  managed as a member, provider through the roster), among other users'
  workspaces;
- GET /v1/workspaces/<ref>/access/<user ref> for that user.

It also counts the SQL statements each request makes (a SQLAlchemy event
listener, in-process) for a user in 20 and in 200 workspaces: the number must
not grow with the number of workspaces.

    .venv/bin/python bench/platform_bench.py [--requests 3000] [--concurrency 8] [--workers 2]
Needs PostgreSQL (ORGSYNC_BENCH_DATABASE_URL; default: the local test
service, schema "bench_platform"). Redis is not used by these reads.
"""
from __future__ import annotations

import argparse
import http.client
import os
import threading
import time
from typing import Any

import _common  # noqa: F401
from _common import describe_latencies, drop_schema, fresh_schema, machine
from intake_bench import free_port, gunicorn, wait_up

PG = os.environ.get("ORGSYNC_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("ORGSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TOKEN = "bench-platform-token"
OTHER_WORKSPACES = 2000


def seed(db_url: str, tag: str, n: int) -> None:
    """User ``tag`` in n workspaces: personal, n - 11 managed, 10 provider."""
    from models import managed, store, users
    from models.base import make_engine, make_session_factory, session_scope

    engine = make_engine(db_url)
    with session_scope(make_session_factory(engine)) as s:
        owner = users.sign_up(s, f"{tag}-owner")
        user, _ = store.get_or_create_user_for_identity(s, "github", abs(hash(tag)) % 10**8 + 1, tag,
                                                        actor="bench")
        uid = user.identities[0].provider_user_id
        for i in range(n - 11):
            ws = managed.create_workspace(s, f"{tag}-team-{i:03d}", owner, managed.OPERATOR)
            _inv, token = managed.create_invitation(s, ws, "member", managed.OPERATOR)
            req, _ = managed.request_to_join(s, token, user)
            managed.decide_request(s, ws, req.id, True, managed.OPERATOR)
            if i % 2:
                store.set_subscription(s, ws, "team", actor="bench")
        for j in range(10):
            org = store.create_provider_workspace(s, "github", abs(hash(tag)) % 10**8 + 1000 + j,
                                                  f"{tag}-org-{j}", actor="bench", installation_id=1)
            store.apply_roster_changes(s, org, adds=[store.StoredMember(uid, tag, "admin")], actor="bench")
    engine.dispose()


def noise(db_url: str) -> None:
    """Other people's workspaces, so the reads are not of a near-empty table."""
    from models import managed, users
    from models.base import make_engine, make_session_factory, session_scope

    engine = make_engine(db_url)
    with session_scope(make_session_factory(engine)) as s:
        for i in range(OTHER_WORKSPACES // 2):
            u = users.sign_up(s, f"other-{i:04d}")
            managed.create_workspace(s, f"other-team-{i:04d}", u, managed.OPERATOR)
    engine.dispose()


def statements(db_url: str) -> dict[str, dict[int, int]]:
    """SQL statements per request, in-process, for users in 20 and 200 workspaces."""
    from sqlalchemy import event

    from models.config import Settings
    from runtime.process import Runtime
    from webhooks.app import create_app

    rt = Runtime(Settings(database_url=db_url, service_tokens=(TOKEN,)))
    client = create_app(runtime=rt).test_client()
    seen: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        seen.append(statement)

    out: dict[str, dict[int, int]] = {"workspaces": {}, "access": {}}
    event.listen(rt.engine, "before_cursor_execute", count)
    for tag, n in (("small", 20), ("bench", 200)):
        for name, path in (("workspaces", f"/v1/users/{tag}/workspaces"),
                           ("access", f"/v1/workspaces/{tag}-team-005/access/{tag}")):
            client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})  # warm
            seen.clear()
            resp = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert resp.status_code == 200, resp.get_data(as_text=True)
            if name == "workspaces":
                assert len(resp.get_json()["workspaces"]) == n, len(resp.get_json()["workspaces"])
            out[name][n] = len(seen)
    event.remove(rt.engine, "before_cursor_execute", count)
    rt.engine.dispose()
    return out


def load(port: int, paths: list[str], concurrency: int) -> tuple[float, list[float], dict[int, int]]:
    lat: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    chunks = [paths[i::concurrency] for i in range(concurrency)]
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def run(chunk: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        codes: dict[int, int] = {}
        for path in chunk:
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - t0)
            codes[resp.status] = codes.get(resp.status, 0) + 1
        conn.close()
        with lock:
            lat.extend(mine)
            for k, v in codes.items():
                statuses[k] = statuses.get(k, 0) + v

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, lat, statuses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16,
                        help="gthread threads per worker, as the Procfile (0: gunicorn's sync workers)")
    args = parser.parse_args()



    schema = "bench_platform"
    db_url = fresh_schema(PG, schema)
    t0 = time.perf_counter()
    noise(db_url)
    seed(db_url, "small", 20)
    seed(db_url, "bench", 200)
    seeded_in = time.perf_counter() - t0
    counts = statements(db_url)

    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=REDIS, ORGSYNC_SERVICE_TOKEN=TOKEN,
               ORGSYNC_LOG_LEVEL="WARNING")
    reads = {"user workspaces": "/v1/users/bench/workspaces",
             "access": "/v1/workspaces/bench-team-005/access/bench"}
    results: dict[str, tuple[float, list[float], dict[int, int]]] = {}
    for server, app in (("bare Flask 202", "bench.bare_app:app"), ("orgsync", "webhooks.app:create_app()")):
        port = free_port()
        proc = gunicorn(app, port, args.workers, env, threads=args.threads)
        try:
            wait_up(port, "/healthz")
            for name, path in reads.items():
                load(port, [path] * 200, args.concurrency)  # warm-up
                results[f"{server}: {name}"] = load(port, [path] * args.requests, args.concurrency)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"machine: {machine()}")
    print(f"seeded {OTHER_WORKSPACES} other users' workspaces and users in 20 and 200 workspaces "
          f"in {seeded_in:.1f} s")
    server = f"gthread, {args.threads} threads each" if args.threads else "sync"
    print(f"gunicorn --workers {args.workers} ({server}), both apps, client: {args.concurrency} keep-alive connections, "
          f"{args.requests} requests per read")
    for label, (total, lat, statuses) in results.items():
        print(f"{label:>32}: {len(lat) / total:.0f} req/s, {describe_latencies(lat)}, statuses {statuses}")
    for name in reads:
        bare = results[f"bare Flask 202: {name}"]
        ours = results[f"orgsync: {name}"]
        ratio = (len(ours[1]) / ours[0]) / (len(bare[1]) / bare[0])
        print(f"ratio (orgsync {name} / bare Flask throughput): {ratio:.3f}")
    for name, by_n in counts.items():
        fixed = "fixed" if len(set(by_n.values())) == 1 else "NOT FIXED"
        print(f"SQL statements per {name} request: "
              + ", ".join(f"{n} workspaces: {c}" for n, c in sorted(by_n.items())) + f" ({fixed})")
    drop_schema(PG, schema)


if __name__ == "__main__":
    main()
