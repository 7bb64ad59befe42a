"""Webhook intake under gunicorn against PostgreSQL and Redis, beside a bare Flask
endpoint that only answers 202 — same gunicorn settings, same client, same run.

Every request is a distinct, correctly signed GitHub delivery
(organization.member_added), so orgsync verifies, records (commit) and queues each.
No worker runs: this measures the intake path only.

    .venv/bin/python bench/intake_bench.py [--requests 3000] [--concurrency 8] [--workers 2] [--threads 16]
Needs PostgreSQL and Redis (ORGSYNC_BENCH_DATABASE_URL, ORGSYNC_BENCH_REDIS_URL;
defaults: the local test services, schema "bench_intake", Redis db 14).
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import _common  # noqa: F401
from _common import ROOT, describe_latencies, fresh_schema, machine

SECRET = "bench-secret"
PG = os.environ.get("ORGSYNC_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("ORGSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server on {port} did not come up")


def bodies(n: int) -> list[tuple[bytes, dict[str, str]]]:
    template = json.loads((Path(ROOT).parent / "shared/corpus/github/organization.member_added.json").read_text()) \
        if (Path(ROOT).parent / "shared/corpus/github/organization.member_added.json").exists() else {
            "action": "member_added", "organization": {"id": 1, "login": "acme"},
            "membership": {"user": {"id": 2, "login": "u"}, "role": "member", "state": "active"}}
    out = []
    for _ in range(n):
        body = json.dumps(template).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        out.append((body, {"Content-Type": "application/json", "X-GitHub-Event": "organization",
                           "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": sig}))
    return out


def load(port: int, reqs: list[tuple[bytes, dict[str, str]]], concurrency: int) -> tuple[float, list[float], dict[int, int]]:
    lat: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    chunks = [reqs[i::concurrency] for i in range(concurrency)]

    def run(chunk: list[tuple[bytes, dict[str, str]]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        codes: dict[int, int] = {}
        for body, headers in chunk:
            t0 = time.perf_counter()
            conn.request("POST", "/webhooks/github", body=body, headers=headers)
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


def gunicorn(app: str, port: int, workers: int, env: dict[str, str], *, threads: int = 0) -> subprocess.Popen[bytes]:
    cmd = [str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{port}",
           "--workers", str(workers), "--log-level", "warning"]
    if threads:  # the Procfile's server: gthread workers
        cmd += ["--worker-class", "gthread", "--threads", str(threads)]
    cmd.append(app)
    # The logs go to a file, as a real deployment's would go somewhere: a
    # pipe nobody reads fills after 64 KiB and then blocks every request's
    # log line (the server hung that way).
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16,
                        help="gthread threads per worker, as the Procfile (0: gunicorn's sync workers)")
    args = parser.parse_args()

    import redis
    from sqlalchemy import text

    from models.base import make_engine

    schema = "bench_intake"
    db_url = fresh_schema(PG, schema)
    redis.Redis.from_url(REDIS).flushdb()
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=REDIS, GITHUB_WEBHOOK_SECRET=SECRET)
    results = {}
    for name, app in (("bare Flask 202", "bench.bare_app:app"), ("orgsync intake", "webhooks.app:create_app()")):
        port = free_port()
        proc = gunicorn(app, port, args.workers, env, threads=args.threads)
        try:
            wait_up(port, "/healthz")
            load(port, bodies(100), args.concurrency)  # warm-up
            total, lat, statuses = load(port, bodies(args.requests), args.concurrency)
        finally:
            # SIGQUIT: gunicorn's quick shutdown (SIGTERM waits up to 30 s
            # for idle keep-alive connections to go away).
            proc.send_signal(signal.SIGQUIT)
            proc.wait(timeout=30)
        results[name] = (total, lat, statuses)
    print(f"machine: {machine()}")
    server = f"gthread, {args.threads} threads each" if args.threads else "sync"
    print(f"gunicorn --workers {args.workers} ({server}), both apps, client: {args.concurrency} keep-alive connections, "
          f"{args.requests} signed deliveries each")
    for name, (total, lat, statuses) in results.items():
        print(f"{name:>15}: {len(lat) / total:.0f} req/s, {describe_latencies(lat)}, statuses {statuses}")
    bare = len(results["bare Flask 202"][1]) / results["bare Flask 202"][0]
    ours = len(results["orgsync intake"][1]) / results["orgsync intake"][0]
    print(f"ratio (orgsync intake / bare Flask throughput): {ours / bare:.3f}")
    eng = make_engine(PG)
    with eng.begin() as c:
        recorded = c.execute(text(f'SELECT count(*) FROM "{schema}".deliveries')).scalar_one()
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    print(f"deliveries recorded by orgsync: {recorded} (expected {args.requests + 100})")


if __name__ == "__main__":
    main()
