"""Bursts through the whole pipeline: the Procfile's web (gunicorn) and two
`orgsync worker` processes on PostgreSQL and Redis, the fake GitHub over
loopback HTTP (in this process), signed deliveries posted by a client in a
child process.

(a) one org of --org-size members receives --events member events (adds and
    removals at the provider, one event each, plus --dup duplicates, shuffled):
    seconds from the last request until the store equals the provider, and the
    provider requests used, beside the bound 3 × (⌈N/100⌉ + 3) and the previous
    design's figure from issue 11 (one re-read per event: ≈ one request per event).
(b) --spread-events member events spread over --orgs orgs (little to batch):
    deliveries applied per second, beside the previous design's ≈12/s (issue 11).

    .venv/bin/python bench/burst.py [--org-size 20000] [--events 10000] [--orgs 1000] [--spread-events 5000]
Needs PostgreSQL and Redis (ORGSYNC_BENCH_DATABASE_URL, ORGSYNC_BENCH_REDIS_URL; schema "bench_burst").
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import _common  # noqa: F401
from _common import ROOT, machine
from intake_bench import free_port, wait_up

SECRET = "bench-secret"
APP_ID = 4242
PG = os.environ.get("ORGSYNC_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("ORGSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
BIN = str(Path(sys.executable).parent)
SCHEMA = "bench_burst"


def procfile() -> dict[str, str]:
    out = {}
    for line in (Path(ROOT) / "Procfile").read_text().splitlines():
        if ":" in line and not line.startswith("#"):
            name, cmd = line.split(":", 1)
            out[name.strip()] = cmd.strip()
    return out


def event(org_id: int, login: str, installation: int, uid: int, action: str) -> dict[str, Any]:
    return {"action": action, "organization": {"id": org_id, "login": login},
            "membership": {"user": {"id": uid, "login": f"u{uid}"}, "role": "member", "state": "active"},
            "installation": {"id": installation}, "sender": {"id": 1, "login": "u1"}}


def signed(payload: dict[str, Any], delivery: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, {"Content-Type": "application/json", "X-GitHub-Event": "organization",
                  "X-GitHub-Delivery": delivery,
                  "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}


def _post_all(port: int, reqs: list[tuple[bytes, dict[str, str]]], concurrency: int, out: Any) -> None:
    """In a child process (no GIL shared with the fake provider): post every
    request; report (first start, last end, status counts)."""
    lock = threading.Lock()
    codes: dict[int, int] = {}
    chunks = [reqs[i::concurrency] for i in range(concurrency)]

    def run(chunk: list[tuple[bytes, dict[str, str]]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: dict[int, int] = {}
        for body, headers in chunk:
            conn.request("POST", "/webhooks/github", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            mine[resp.status] = mine.get(resp.status, 0) + 1
        conn.close()
        with lock:
            for k, v in mine.items():
                codes[k] = codes.get(k, 0) + v

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((start, time.time(), codes))


def post_in_child(port: int, reqs: list[tuple[bytes, dict[str, str]]], concurrency: int
                  ) -> tuple[float, float, dict[int, int]]:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_post_all, args=(port, reqs, concurrency, q))
    p.start()
    result = q.get()
    p.join()
    return result  # type: ignore[no-any-return]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = Path(ROOT) / "bench" / "out"
        self.logs.mkdir(parents=True, exist_ok=True)

    def setup(self) -> None:
        import redis
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from sqlalchemy import text

        from demo.fakes.github_server import FakeGitHub
        from demo.fakes.server import FakeProviderServer
        from models.base import make_engine, make_session_factory
        from models.migrate import upgrade

        admin = make_engine(PG)
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
            c.execute(text(f'CREATE SCHEMA "{SCHEMA}"'))
        admin.dispose()
        self.db_url = f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{SCHEMA}"
        upgrade(self.db_url)
        self.engine = make_engine(self.db_url, pool_size=2)
        self.sessions = make_session_factory(self.engine)
        redis.Redis.from_url(REDIS).flushdb()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.fake = FakeGitHub(app_id=APP_ID, app_public_key=public)
        self.server = FakeProviderServer(github=self.fake, keep_alive=True).start()
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ORGSYNC_", "GITHUB_", "DATABASE_URL",
                                                                         "REDIS_URL"))},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PORT": str(self.port), "WEB_CONCURRENCY": "2",
            "DATABASE_URL": self.db_url, "REDIS_URL": REDIS,
            "GITHUB_API_URL": self.server.github_api_url, "GITHUB_APP_ID": str(APP_ID),
            "GITHUB_APP_PRIVATE_KEY": key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()).decode(),
            "GITHUB_WEBHOOK_SECRET": SECRET, "ORGSYNC_RESYNC_INTERVAL": "604800", "ORGSYNC_LOG_LEVEL": "WARNING",
        }

    def seed_org(self, org_id: int, login: str, installation: int, members: dict[int, str]) -> str:
        """The org at the provider and, equal to it, in the store."""
        from models import store

        self.fake.add_org(org_id, login, installation_id=installation)
        self.fake.add_members(org_id, [(u, f"u{u}", r) for u, r in members.items()])  # type: ignore[misc]
        s = self.sessions()
        try:
            ws = store.create_provider_workspace(s, "github", org_id, login, actor="bench",
                                                 installation_id=installation)
            store.apply_roster_changes(s, ws, adds=[store.StoredMember(u, f"u{u}", r) for u, r in members.items()],
                                       actor="bench")
            s.commit()
            return ws.id
        finally:
            s.close()

    def start(self) -> None:
        entries = procfile()
        for name, n in (("web", 1), ("worker", self.args.workers)):
            for i in range(n):
                log = open(self.logs / f"burst-{name}-{i}.log", "wb")  # noqa: SIM115
                self.procs.append(subprocess.Popen(entries[name], shell=True, cwd=ROOT, env=self.env,
                                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_up(self.port, "/healthz")

    def stop(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.server.stop()

    def q(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as c:
            return list(c.execute(text(sql), params))

    def roster(self, ws_id: str) -> dict[int, str]:
        return {int(u): r for u, r in self.q(
            "SELECT provider_user_id, role FROM roster_entries WHERE workspace_id = :w", w=ws_id)}

    def provider_roster(self, org_id: int) -> dict[int, str]:
        return {u: role for u, (_, role, state) in self.fake.members_of(org_id).items() if state == "active"}

    # ------------------------------------------------------------------ (a)

    def burst_one_org(self) -> dict[str, Any]:
        n, k = self.args.org_size, self.args.events
        org_id, login, inst = 700001, "bigorg", 7001
        members = {u: ("admin" if u % 50 == 0 else "member") for u in range(1_000_000, 1_000_000 + n)}
        ws = self.seed_org(org_id, login, inst, members)
        # k changes at the provider: 70 % new members, 30 % leaving.
        leaving = self.rng.sample(sorted(members), int(k * 0.3))
        joining = list(range(2_000_000, 2_000_000 + (k - len(leaving))))
        for u in leaving:
            self.fake.remove_member(org_id, u)
        self.fake.add_members(org_id, [(u, f"u{u}", "member") for u in joining])
        reqs = [signed(event(org_id, login, inst, u, "member_removed"), str(uuid.uuid4())) for u in leaving]
        reqs += [signed(event(org_id, login, inst, u, "member_added"), str(uuid.uuid4())) for u in joining]
        reqs += self.rng.sample(reqs, int(len(reqs) * self.args.dup))  # redeliveries: same delivery ids
        self.rng.shuffle(reqs)
        want = self.provider_roster(org_id)
        self.fake.reset_log()
        first, last, codes = post_in_child(self.port, reqs, self.args.concurrency)
        converged = self._wait(lambda: self.roster(ws) == want, self.args.timeout)
        done_at = time.time()
        bound = 3 * (math.ceil(n / 100) + 3)
        return {
            "requests posted": len(reqs), "answers": codes,
            "posting took (s)": round(last - first, 1),
            "store equals provider": converged,
            "seconds from last request to store == provider": round(done_at - last, 1) if converged else None,
            "provider requests": self.fake.request_count,
            "  of which roster listings": self.fake.count("/members"),
            "  single membership reads": self.fake.count("/memberships/"),
            "  token exchanges": self.fake.count("/access_tokens"),
            "bound 3 × (⌈N/100⌉ + 3)": bound,
            "previous design (issue 11)": f"≈ {k} requests (one re-read per event)",
        }

    # ------------------------------------------------------------------ (b)

    def spread(self) -> dict[str, Any]:
        orgs, k = self.args.orgs, self.args.spread_events
        per = max(1, k // orgs)
        reqs = []
        for i in range(orgs):
            org_id, inst = 800000 + i, 80000 + i
            base = {u: "member" for u in range(3_000_000 + i * 100, 3_000_000 + i * 100 + 5)}
            self.seed_org(org_id, f"org{i}", inst, base)
            new = list(range(4_000_000 + i * 100, 4_000_000 + i * 100 + per))
            self.fake.add_members(org_id, [(u, f"u{u}", "member") for u in new])
            reqs += [signed(event(org_id, f"org{i}", inst, u, "member_added"), str(uuid.uuid4())) for u in new]
        self.rng.shuffle(reqs)
        before = int(self.q("SELECT count(*) FROM deliveries WHERE status IN ('processed','ignored','failed')")[0][0])
        self.fake.reset_log()
        first, last, codes = post_in_child(self.port, reqs, self.args.concurrency)
        target = before + len(reqs)

        def all_done() -> bool:
            done = int(self.q("SELECT count(*) FROM deliveries WHERE status IN ('processed','ignored','failed')")[0][0])
            return done >= target

        finished = self._wait(all_done, self.args.timeout)
        end = time.time()
        failed = int(self.q("SELECT count(*) FROM deliveries WHERE status = 'failed'")[0][0])
        return {
            "deliveries posted": len(reqs), "answers": codes, "orgs": orgs,
            "posting took (s)": round(last - first, 1),
            "all processed": finished, "failed": failed,
            "seconds from first request to all applied": round(end - first, 1),
            "deliveries applied per second": round(len(reqs) / (end - first), 1),
            "seconds from last request to all applied": round(end - last, 1),
            "provider requests": self.fake.request_count,
            "  token exchanges": self.fake.count("/access_tokens"),
            "previous design (issue 11)": "≈ 12 deliveries/s with two forking workers",
        }

    def _wait(self, cond: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.25)
        return False


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--org-size", type=int, default=20000)
    p.add_argument("--events", type=int, default=10000)
    p.add_argument("--dup", type=float, default=0.1)
    p.add_argument("--orgs", type=int, default=1000)
    p.add_argument("--spread-events", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--only", choices=["a", "b"], default=None)
    args = p.parse_args()
    b = Bench(args)
    b.setup()
    try:
        b.start()
        print(f"machine: {machine()}")
        print(f"gunicorn (Procfile web, WEB_CONCURRENCY=2) + {args.workers} × `orgsync worker`, PostgreSQL, "
              f"Redis, fake GitHub over loopback; client: {args.concurrency} keep-alive connections")
        if args.only in (None, "a"):
            print(f"\n(a) one org of {args.org_size} members, {args.events} member events "
                  f"+ {int(args.dup * 100)} % duplicates, shuffled")
            for k, v in b.burst_one_org().items():
                print(f"  {k}: {v}")
        if args.only in (None, "b"):
            print(f"\n(b) {args.spread_events} member events over {args.orgs} orgs")
            for k, v in b.spread().items():
                print(f"  {k}: {v}")
    finally:
        b.stop()
        from sqlalchemy import text

        from models.base import make_engine

        eng = make_engine(PG)
        with eng.begin() as c:
            c.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
        eng.dispose()


if __name__ == "__main__":
    main()
