"""What one unit of work costs, measured in-process (no HTTP server, no
other process competing for the cores), beside a baseline from the same run:

1. intake: one signed GitHub delivery through the app's WSGI stack (Flask's
   test client) on PostgreSQL and real Redis — wall time and CPU per
   delivery — beside the bare Flask 202 endpoint (bench/bare_app.py);
2. a lane's drain: --orgs orgs of 5 members, 5 member events each, drained
   one lane after another by sync.batch.drain (what `orgsync worker` runs
   per wake-up) — wall time, CPU (the worker and the fake GitHub serving it,
   which runs in this process), SQL statements, transactions and provider
   requests per lane.

3. one GitHub request through the adapter's transport, with requests'
   per-request scan of the environment (its default) and without it (the
   adapter's default when the environment sets no proxy) — CPU per
   request.

    .venv/bin/python bench/cost_bench.py [--deliveries 2000] [--orgs 200] [--requests 2000]
Needs PostgreSQL and Redis (ORGSYNC_BENCH_DATABASE_URL, ORGSYNC_BENCH_REDIS_URL; schemas
"bench_cost_intake" and "bench_cost_drain", Redis db 14).
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import _common  # noqa: F401
from _common import ROOT, drop_schema, fresh_schema, machine

PG = os.environ.get("ORGSYNC_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("ORGSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET = "bench-secret"


def per_unit(n: int, wall: float, cpu: float) -> str:
    return f"{wall / n * 1000:.2f} ms wall, {cpu / n * 1000:.2f} ms CPU"


def intake(n: int) -> None:
    import redis
    from bare_app import app as bare

    from models.config import load_settings
    from runtime.logs import configure_logging
    from runtime.process import Runtime
    from webhooks.app import create_app

    url = fresh_schema(PG, "bench_cost_intake")
    redis.Redis.from_url(REDIS).flushdb()
    os.environ.update(DATABASE_URL=url, REDIS_URL=REDIS, GITHUB_WEBHOOK_SECRET=SECRET)
    level = os.environ.setdefault("ORGSYNC_LOG_LEVEL", "INFO")
    corpus = Path(ROOT).parent / "shared/corpus/github/organization.member_added.json"
    template: dict[str, Any] = json.loads(corpus.read_text()) if corpus.exists() else {
        "action": "member_added", "organization": {"id": 1, "login": "acme"},
        "membership": {"user": {"id": 2, "login": "u"}, "role": "member", "state": "active"}}
    body = json.dumps(template).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    client = create_app(runtime=Runtime(load_settings())).test_client()
    # Production logs one line per delivery at INFO (the default): rendered
    # and written here too (to /dev/null), so the figure includes it.
    configure_logging(level, stream=open(os.devnull, "w"), force=True)  # noqa: SIM115
    print(f"log level: {level} (ORGSYNC_LOG_LEVEL)")

    def post() -> None:
        resp = client.post("/webhooks/github", data=body, headers={
            "Content-Type": "application/json", "X-GitHub-Event": "organization",
            "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": sig})
        assert resp.status_code == 202, resp.get_data(as_text=True)

    bare_client = bare.test_client()

    def post_bare() -> None:
        resp = bare_client.post("/webhooks/github", data=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 202

    results = {}
    for name, fn in (("bare Flask 202", post_bare), ("orgsync intake", post)):
        for _ in range(200):  # warm-up
            fn()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            fn()
        results[name] = (time.perf_counter() - t0, time.process_time() - c0)
        print(f"{name:>15}: {per_unit(n, *results[name])} per request ({n} requests, one thread)")
    ratio = results["bare Flask 202"][1] / results["orgsync intake"][1]
    print(f"ratio (bare CPU / orgsync intake CPU per request): {ratio:.3f}")
    parts(n, template, body, client.application.extensions["orgsync"])
    drop_schema(PG, "bench_cost_intake")


def parts(n: int, payload: dict[str, Any], body: bytes, rt: Any) -> None:
    """The intake's own steps, each on its own, CPU per call: where the
    difference with the bare 202 goes."""
    import structlog

    from sync.triage import triage
    from webhooks import github as view

    text_ = body.decode()
    sha = hashlib.sha256(body).hexdigest()
    intake_ = triage("github", "organization", payload)
    log = structlog.get_logger("webhooks.github")

    def log_line() -> None:
        with structlog.contextvars.bound_contextvars(delivery="d", provider="github", event="organization",
                                                     action="member_added"):
            log.info("webhook.accepted", queued=True)

    steps = {
        "verify + parse + triage": lambda: (
            hmac.compare_digest(hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(), sig_hex),
            triage("github", "organization", json.loads(text_))),
        "record (one autocommitted INSERT)": lambda: view._record(
            rt, "github", str(uuid.uuid4()), "organization", "member_added", text_, sha, intake_),
        "wake-up (SET NX, pending)": lambda: view._wake(rt, intake_.lane or "github:1"),
        "the log line": log_line,
    }
    sig_hex = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    print("  intake steps on their own (CPU per call):")
    for name, fn in steps.items():
        for _ in range(100):
            fn()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"    {name:<36} {cpu / n * 1e6:6.0f} µs CPU, {wall / n * 1e6:6.0f} µs wall")


def drain(orgs: int) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from sqlalchemy import event, func, select

    from demo.fakes.github_server import FakeGitHub
    from demo.fakes.server import FakeProviderServer
    from models import deliveries, store
    from models.base import make_engine, make_session_factory
    from models.config import Settings
    from models.tables import Delivery
    from sync import batch
    from sync.context import build_sync_context

    url = fresh_schema(PG, "bench_cost_drain")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    fake = FakeGitHub(app_id=1234, app_public_key=public)
    server = FakeProviderServer(github=fake, keep_alive=True).start()
    settings = Settings(database_url=url, github_api_url=server.github_api_url, github_app_id=1234,
                        github_app_private_key=key.private_bytes(
                            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode())
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    lanes = []
    for i in range(orgs):
        org, inst = 800_000 + i, 80_000 + i
        fake.add_org(org, f"org{i}", installation_id=inst)
        base = [(u, f"u{u}", "member") for u in range(3_000_000 + i * 100, 3_000_000 + i * 100 + 5)]
        fake.add_members(org, base)
        with sessions.begin() as s:
            ws = store.create_provider_workspace(s, "github", org, f"org{i}", actor="bench", installation_id=inst)
            store.apply_roster_changes(s, ws, adds=[store.StoredMember(u, login, r) for u, login, r in base],
                                       actor="bench")
        new = list(range(4_000_000 + i * 100, 4_000_000 + i * 100 + 5))
        fake.add_members(org, [(u, f"u{u}", "member") for u in new])
        with sessions.begin() as s:
            for u in new:
                text_ = json.dumps({
                    "action": "member_added", "organization": {"id": org, "login": f"org{i}"},
                    "membership": {"user": {"id": u, "login": f"u{u}"}, "role": "member", "state": "active"},
                    "installation": {"id": inst}, "sender": {"id": 1, "login": "x"}})
                deliveries.record_delivery(s, str(uuid.uuid4()), "github", "organization", "member_added", text_,
                                           hashlib.sha256(text_.encode()).hexdigest(), f"github:{org}",
                                           hint_user_id=u)
        lanes.append(f"github:{org}")
    counts = {"statements": 0, "commits": 0}
    trace = os.environ.get("ORGSYNC_BENCH_TRACE_SQL") == "1"

    def on_execute(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
        counts["statements"] += 1
        if trace:
            print("   SQL", " ".join(statement.split())[:160])

    event.listen(engine, "before_cursor_execute", on_execute)
    if trace:
        event.listen(engine, "commit", lambda *a: print("   COMMIT"))
    event.listen(engine, "commit", lambda *a: counts.__setitem__("commits", counts["commits"] + 1))
    ctx = build_sync_context(settings, sessions)
    fake.reset_log()
    c0, t0 = time.process_time(), time.perf_counter()
    for lane in lanes:
        batch.drain(ctx, lane, "bench-holder", clear_wake=lambda: None, wake=lambda lane: None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with sessions() as s:
        done = s.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "processed"))
    server.stop()
    engine.dispose()
    print(f"drain: {orgs} lanes of 5 member events each (org of 5 members), one after another, one process")
    print(f"  processed: {done} of {orgs * 5}; {orgs * 5 / wall:.1f} deliveries/s")
    print(f"  per lane: {per_unit(orgs, wall, cpu)} (CPU: the drain and the in-process fake GitHub), "
          f"{counts['statements'] / orgs:.1f} SQL statements, {counts['commits'] / orgs:.1f} transactions, "
          f"{fake.request_count / orgs:.1f} provider requests")
    drop_schema(PG, "bench_cost_drain")


def transport(n: int) -> None:
    """One GitHub request through the adapter's transport to the in-process
    keep-alive fake: CPU per request when requests scans the environment on
    every request (its default; here forced by setting NO_PROXY, which
    changes no route) beside the adapter's default with nothing configured
    (sync.providers.http_env)."""
    from demo.fakes.github_server import FakeGitHub
    from demo.fakes.server import FakeProviderServer
    from sync.providers.github_http import GitHubTransport
    from sync.providers.http_env import environment_sets_proxy_or_netrc

    fake = FakeGitHub(app_id=1, app_public_key="")
    fake.add_org(1, "acme", installation_id=1)
    saved = os.environ.pop("NO_PROXY", None)
    configured = environment_sets_proxy_or_netrc()
    cases = (("scanning the environment per request", 30.001, "none.invalid"),
             ("the adapter's default", 30.002, None))
    results = dict.fromkeys((name for name, _, _ in cases), 0.0)
    rounds = 10
    with FakeProviderServer(github=fake, keep_alive=True) as server:
        # Interleaved rounds, so both meet the same machine; the CPU is this
        # thread's (the client's), not the fake's.
        for _ in range(rounds):
            for name, timeout, no_proxy in cases:
                if no_proxy is not None:
                    os.environ["NO_PROXY"] = no_proxy
                else:
                    os.environ.pop("NO_PROXY", None)
                # A timeout of its own: the thread's shared connection is per settings.
                http = GitHubTransport(server.github_api_url, timeout=timeout, per_page=100, on_send=lambda: None)
                http.send("GET", "/organizations/1")
                c0 = time.thread_time()
                for _ in range(n // rounds):
                    http.send("GET", "/organizations/1")
                results[name] += (time.thread_time() - c0) / (n // rounds * rounds)
    os.environ.pop("NO_PROXY", None)
    if saved is not None:
        os.environ["NO_PROXY"] = saved
    print(f"GitHub transport: {n} requests each to the in-process fake (CPU of the client thread)")
    for name, cpu in results.items():
        print(f"  {name:<38} {cpu * 1e6:6.0f} µs CPU per request")
    base, ours = results.values()
    print(f"  saved per request: {(base - ours) * 1e6:.0f} µs ({(base - ours) / base:.0%})"
          + ("; this environment sets a proxy or netrc, so both scan" if configured else ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--orgs", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    intake(args.deliveries)
    transport(args.requests)
    drain(args.orgs)


if __name__ == "__main__":
    main()
