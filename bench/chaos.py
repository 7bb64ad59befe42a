"""Chaos run: the Procfile's processes under load while Redis dies and a worker
is killed mid-job; then proof that every accepted delivery was processed
exactly once and the store equals the provider's truth.

What it starts (all cleaned up at the end, whatever happens):
- its own ``redis-server`` on a free loopback port (nothing kept on disk, so
  a restart loses every queued job: the case the durable delivery record and
  the one-minute sweep must cover);
- a fresh PostgreSQL schema (migrated with models.migrate.upgrade, dropped at
  the end);
- the fake GitHub (demo/fakes) in this process, on a loopback port, with a
  few orgs, each with the app installed and a few hundred members;
- from the Procfile's own command lines: gunicorn ``web``, TWO ``orgsync
  worker`` and one ``orgsync cron``, each in its own process group.

What it does:
1. bootstrap: one signed ``installation.created`` per org; waits until each
   workspace exists and its first full sync is ok;
2. changes the provider's truth (members join, leave, change role), so that
   membership webhooks have effects the store must pick up;
3. sends N signed ``organization.member_added`` / ``member_removed``
   deliveries in GitHub's payload shape, for members that were added, removed,
   re-roled, unchanged, or never existed at the provider (each delivery makes
   the worker re-read that member); a fraction are duplicates (same
   X-GitHub-Delivery and body); all shuffled, from a few client threads;
4. while sending: SIGKILLs redis-server, restarts it empty on the same port
   after ``--redis-down`` seconds; later SIGKILLs one worker's whole process
   tree (worker, its scheduler and its work horse) while it runs a job, and
   starts a replacement worker (as a platform restarts a dead dyno);
5. waits until every accepted delivery is processed (polling the database,
   printing progress); ``--budget`` is the pass criterion, ``--wait-limit``
   how long it keeps waiting past the budget to measure the real recovery;
6. checks, prints the counts, runs a final full sync (``orgsync resync --all
   --wait``) and compares every roster with the fake provider's members.

Any process that exits on its own is restarted by this script (as a platform
would) and reported; the run exits 1 if any check fails.

    .venv/bin/python bench/chaos.py [--deliveries 10000] [--duplicates 0.1]
        [--clients 4] [--orgs 3] [--redis-down 10] [--budget 600] [--wait-limit 1500]

Needs PostgreSQL (ORGSYNC_CHAOS_DATABASE_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test) and the redis-server binary.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the project on sys.path)
from _common import ROOT, machine

PG = os.environ.get("ORGSYNC_CHAOS_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET = "chaos-webhook-secret"
SERVICE_TOKEN = "chaos-service-token"
ADMIN_TOKEN = "chaos-admin-token"
APP_ID = 424242
BIN = Path(sys.executable).parent
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- processes


def _proc_table() -> dict[int, tuple[int, int]]:
    """{pid: (ppid, pgid)} of every process, from /proc."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may contain spaces: split after its ')'.
        rest = stat[stat.rfind(")") + 2:].split()
        table[int(entry)] = (int(rest[1]), int(rest[2]))
    return table


def descendants(pid: int) -> list[int]:
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Proc:
    """One process started from a shell command line, in its own session."""

    def __init__(self, name: str, command: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = logs / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.expected_exit = False

    def start(self) -> Proc:
        out = self.log_path.open("ab")
        self.popen = subprocess.Popen(self.command, shell=True, cwd=ROOT, env=self.env, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.expected_exit = False
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tree(self) -> list[int]:
        return [self.pid, *descendants(self.pid)] if self.popen is not None else []

    def kill_tree(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process, its group and every descendant (RQ's work horse
        runs in a process group of its own, so killpg alone would miss it)."""
        if self.popen is None:
            return
        self.expected_exit = True
        pids = self.tree()
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        for p in pids:
            _signal(p, sig)

    def stop(self, timeout: float = 15) -> None:
        if self.popen is None:
            return
        self.expected_exit = True
        if self.popen.poll() is None:
            pids = self.tree()
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            for p in pids:
                _signal(p, signal.SIGKILL)
        # Stragglers (a horse in its own group) die with the rest.
        for p in descendants(self.pid):
            _signal(p, signal.SIGKILL)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class RedisServer:
    def __init__(self, port: int, logs: Path) -> None:
        self.port = port
        self.logs = logs
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        out = (self.logs / "redis.log").open("ab")
        self.popen = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_connect_timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


# --------------------------------------------------------------------------- payloads (GitHub's shape)


def gh_user(uid: int, login: str, kind: str = "User") -> dict[str, Any]:
    api = f"https://api.github.com/users/{login}"
    return {
        "login": login, "id": uid, "node_id": f"MDQ6VXNlcj{uid}", "avatar_url":
        f"https://avatars.githubusercontent.com/u/{uid}?v=4", "gravatar_id": "", "url": api,
        "html_url": f"https://github.com/{login}", "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}", "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs", "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}", "received_events_url": f"{api}/received_events",
        "type": kind, "site_admin": False,
    }


def gh_org(org_id: int, login: str) -> dict[str, Any]:
    api = f"https://api.github.com/orgs/{login}"
    return {
        "login": login, "id": org_id, "node_id": f"MDEyOk9yZ2FuaXphdGlvbj{org_id}", "url": api,
        "repos_url": f"{api}/repos", "events_url": f"{api}/events", "hooks_url": f"{api}/hooks",
        "issues_url": f"{api}/issues", "members_url": f"{api}/members{{/member}}",
        "public_members_url": f"{api}/public_members{{/member}}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{org_id}?v=4", "description": "",
    }


def member_event(org: OrgPlan, action: str, uid: int, login: str, role: str) -> dict[str, Any]:
    removed = action == "member_removed"
    return {
        "action": action,
        "membership": {
            "url": f"https://api.github.com/orgs/{org.login}/memberships/{login}",
            "state": "inactive" if removed else "active",
            "role": "unaffiliated" if removed else role,
            "organization_url": f"https://api.github.com/orgs/{org.login}",
            "user": gh_user(uid, login),
        },
        "organization": gh_org(org.org_id, org.login),
        "sender": gh_user(org.admin_id, org.admin_login),
        "installation": {"id": org.installation_id, "node_id": f"MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u{org.installation_id}"},
    }


def installation_created(org: OrgPlan) -> dict[str, Any]:
    account = gh_user(org.org_id, org.login, kind="Organization")
    return {
        "action": "created",
        "installation": {
            "id": org.installation_id, "account": account, "repository_selection": "all",
            "access_tokens_url": f"https://api.github.com/app/installations/{org.installation_id}/access_tokens",
            "repositories_url": "https://api.github.com/installation/repositories",
            "html_url": f"https://github.com/organizations/{org.login}/settings/installations/{org.installation_id}",
            "app_id": APP_ID, "app_slug": "orgsync-chaos", "target_id": org.org_id, "target_type": "Organization",
            "permissions": {"members": "read", "metadata": "read"}, "events": ["organization", "member"],
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
            "single_file_name": None, "has_multiple_single_files": False, "single_file_paths": [],
            "suspended_by": None, "suspended_at": None,
        },
        "repositories": [],
        "requester": None,
        "sender": gh_user(org.admin_id, org.admin_login),
    }


def signed(body: bytes, event: str, delivery: str) -> dict[str, str]:
    from sync.providers.signatures import sign_github

    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/chaos",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "1",
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-GitHub-Hook-Installation-Target-ID": str(APP_ID),
        "X-Hub-Signature-256": sign_github(body, SECRET),
    }


# --------------------------------------------------------------------------- the provider's truth


@dataclass
class OrgPlan:
    """One org: who is a member before the bootstrap sync, and after it."""

    org_id: int
    login: str
    installation_id: int
    admin_id: int
    admin_login: str
    steady: dict[int, str] = field(default_factory=dict)   # members throughout (uid -> role)
    leaving: dict[int, str] = field(default_factory=dict)  # members at bootstrap, gone after
    joining: dict[int, str] = field(default_factory=dict)  # not at bootstrap, members after
    reroled: dict[int, tuple[str, str]] = field(default_factory=dict)  # uid -> (before, after)
    strangers: list[int] = field(default_factory=list)     # never members
    logins: dict[int, str] = field(default_factory=dict)
    workspace_id: str = ""

    def pool(self) -> list[int]:
        return [*self.steady, *self.leaving, *self.joining, *self.reroled, *self.strangers]

    def role_after(self, uid: int) -> str:
        if uid in self.steady:
            return self.steady[uid]
        if uid in self.joining:
            return self.joining[uid]
        if uid in self.reroled:
            return self.reroled[uid][1]
        return "member"


def plan_orgs(n_orgs: int, rng: random.Random, size: int) -> list[OrgPlan]:
    orgs = []
    uid = 100_000
    for i in range(n_orgs):
        org_id = 9_000_000 + i
        login = f"chaos-org-{i + 1}"
        uid += 1
        admin_login = f"{login}-admin"
        org = OrgPlan(org_id, login, 70_000 + i, uid, admin_login)
        org.steady[uid] = "admin"
        org.logins[uid] = admin_login

        def take(n: int, org: OrgPlan = org) -> list[int]:
            nonlocal uid
            out = []
            for _ in range(n):
                uid += 1
                org.logins[uid] = f"user-{uid}"
                out.append(uid)
            return out

        for u in take(size):
            org.steady[u] = "admin" if rng.random() < 0.05 else "member"
        for u in take(size // 4):
            org.leaving[u] = "member"
        for u in take(size // 2):
            org.joining[u] = "admin" if rng.random() < 0.05 else "member"
        for u in take(size // 6):
            org.reroled[u] = ("member", "admin") if rng.random() < 0.5 else ("admin", "member")
        org.strangers.extend(take(size // 2))
        orgs.append(org)
    return orgs


# --------------------------------------------------------------------------- the client


@dataclass
class Sent:
    delivery: str
    body: bytes
    headers: dict[str, str]
    duplicate: bool


@dataclass
class ClientStats:
    statuses: Counter[int] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    by_delivery: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    during_outage: Counter[int] = field(default_factory=Counter)


def post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
         ) -> tuple[int, dict[str, Any]]:
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    try:
        data = json.loads(raw)
    except ValueError:
        data = {"raw": raw[:200].decode(errors="replace")}
    return resp.status, data if isinstance(data, dict) else {"raw": data}


def send_all(port: int, requests: list[Sent], clients: int, stats: ClientStats,
             outage: threading.Event) -> float:
    chunks = [requests[i::clients] for i in range(clients)]

    def run(chunk: list[Sent]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for item in chunk:
            try:
                status, data = post(conn, "/webhooks/github", item.body, item.headers)
                answer = str(data.get("status", data.get("error", "?")))
            except (OSError, http.client.HTTPException) as exc:
                # Not retried: the intake must answer even while Redis is down.
                status, answer = -1, type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with stats.lock:
                stats.sent += 1
                stats.statuses[status] += 1
                stats.answers[f"{status} {answer}"] += 1
                if status < 200 or status >= 300:
                    stats.errors[f"{status} {answer}"] += 1
                if outage.is_set():
                    stats.during_outage[status] += 1
                stats.by_delivery.setdefault(item.delivery, []).append((status, answer))
        conn.close()

    threads = [threading.Thread(target=run, args=(c,), name=f"client-{i}") for i, c in enumerate(chunks)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start


# --------------------------------------------------------------------------- the run


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.logs = Path(tempfile.mkdtemp(prefix="orgsync-chaos-"))
        self.schema = f"chaos_{secrets.token_hex(4)}"
        self.db_url = f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{self.schema}"
        self.redis = RedisServer(free_port(), self.logs)
        self.port = free_port()
        self.procs: dict[str, Proc] = {}
        self.restarts: list[str] = []
        self.events: list[str] = []
        self.failures: list[str] = []
        self.fault_problems: list[str] = []
        self.fake: Any = None
        self.server: Any = None
        self.engine: Any = None
        self.stop_supervisor = threading.Event()
        self.supervisor_lock = threading.Lock()
        self.worker_seq = 0
        self.killed_delivery: str | None = None
        self.killed_at: float | None = None
        self.redis_down_at: float | None = None
        self.redis_up_at: float | None = None

    # ------------------------------------------------------------ setup

    def env(self) -> dict[str, str]:
        from cryptography.hazmat.primitives import serialization

        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("ORGSYNC_", "GITHUB_", "GITLAB_", "OIDC_", "DATABASE_URL", "REDIS_URL"))}
        return {
            **base,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(self.args.web_workers),
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis.url,
            "GITHUB_API_URL": self.server.github_api_url,
            "GITHUB_APP_ID": str(APP_ID),
            "GITHUB_APP_PRIVATE_KEY": self.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode(),
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "ORGSYNC_SERVICE_TOKEN": SERVICE_TOKEN,
            "ORGSYNC_ADMIN_TOKEN": ADMIN_TOKEN,
            # No scheduled resync during the run: the final full sync is ours.
            "ORGSYNC_RESYNC_INTERVAL": "604800",
            "ORGSYNC_LOG_LEVEL": "INFO",
        }

    def setup(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from sqlalchemy import text

        from demo.fakes.github_server import FakeGitHub
        from demo.fakes.server import FakeProviderServer
        from models.base import make_engine
        from models.migrate import upgrade

        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not installed")
        admin = make_engine(PG)
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        admin.dispose()
        upgrade(self.db_url)
        self.engine = make_engine(self.db_url)
        self.redis.start()
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.fake = FakeGitHub(app_id=APP_ID, app_public_key=public, latency=self.args.provider_latency)
        self.server = FakeProviderServer(github=self.fake).start()
        self.orgs = plan_orgs(self.args.orgs, self.rng, self.args.org_size)
        for org in self.orgs:
            self.fake.add_org(org.org_id, org.login, installation_id=org.installation_id)
            self.fake.add_members(org.org_id, [
                *((u, org.logins[u], r) for u, r in org.steady.items()),
                *((u, org.logins[u], r) for u, r in org.leaving.items()),
                *((u, org.logins[u], before) for u, (before, _) in org.reroled.items()),
            ])
            for u in org.strangers + list(org.joining):
                self.fake.add_user(u, org.logins[u])
        self._env = self.env()
        entries = procfile()
        release = subprocess.run(entries["release"], shell=True, cwd=ROOT, env=self._env,
                                 capture_output=True, text=True, timeout=120, check=False)
        if release.returncode != 0:
            raise RuntimeError(f"release failed: {release.stderr[-2000:]}")
        self.start_proc("web", entries["web"])
        self.start_proc("worker-1", entries["worker"])
        self.start_proc("worker-2", entries["worker"])
        self.worker_seq = 2
        self.start_proc("cron", entries["cron"])
        self.wait_ready()
        threading.Thread(target=self.supervise, name="supervisor", daemon=True).start()

    def start_proc(self, name: str, command: str) -> Proc:
        proc = Proc(name, command, self._env, self.logs).start()
        with self.supervisor_lock:
            self.procs[name] = proc
        return proc

    def supervise(self) -> None:
        """Restart any process that exits on its own, as a platform restarts a
        crashed dyno; each restart is reported."""
        while not self.stop_supervisor.wait(1.0):
            with self.supervisor_lock:
                for name, proc in list(self.procs.items()):
                    if proc.expected_exit or proc.alive():
                        continue
                    code = proc.popen.returncode if proc.popen else None
                    last = [ln for ln in proc.tail(40).splitlines() if ln.strip()]
                    why = next((ln for ln in reversed(last) if "quitting" in ln or "Error" in ln), last[-1] if last else "")
                    self.restarts.append(f"{name} exited with {code} at {time.monotonic() - T0:.1f}s: {why[:300]}")
                    say(f"SUPERVISOR: {name} exited ({code}); restarting it")
                    proc.start()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            if not self.procs["web"].alive():
                raise RuntimeError(f"web exited:\n{self.procs['web'].tail()}")
            time.sleep(0.3)
        raise RuntimeError("web did not become ready")

    # ------------------------------------------------------------ db helpers

    def q(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as c:
            return list(c.execute(text(sql), params))

    def bootstrap(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.setup_ids = []
        for org in self.orgs:
            body = json.dumps(installation_created(org)).encode()
            delivery = str(uuid.uuid4())
            self.setup_ids.append(delivery)
            status, data = post(conn, "/webhooks/github", body, signed(body, "installation", delivery))
            if status != 202:
                raise RuntimeError(f"installation.created answered {status} {data}")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = self.q("SELECT w.provider_org_id, w.id FROM workspaces w "
                          "JOIN sync_runs r ON r.workspace_id = w.id "
                          "WHERE w.kind = 'provider' AND r.kind = 'full' AND r.result = 'ok'")
            ids = {int(a): b for a, b in rows}
            # One finished listing per org is not enough: adoption can owe an
            # org a second one (the installation webhook and the cron's
            # installation reconciliation both adopt), and a listing still
            # running when the truth moves on below would read the new truth
            # and make changes no delivery asked for, before the baseline is
            # even known. The bootstrap ends when the pipeline is quiet.
            if all(o.org_id in ids for o in self.orgs) and self._quiet():
                time.sleep(0.5)
                if self._quiet():
                    for o in self.orgs:
                        o.workspace_id = ids[o.org_id]
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError("bootstrap full syncs did not finish:\n" + self.procs["worker-1"].tail())
        self.baseline_seq = int(self.q("SELECT coalesce(max(seq), 0) FROM activity")[0][0])
        self.baseline_run = int(self.q("SELECT coalesce(max(id), 0) FROM sync_runs")[0][0])
        roster = self.rosters()
        for o in self.orgs:
            want = {**o.steady, **o.leaving, **{u: b for u, (b, _) in o.reroled.items()}}
            if roster[o.workspace_id] != want:
                raise RuntimeError(f"bootstrap roster of {o.login} differs from the provider")
        # The provider's truth moves on; only webhooks (and the final full sync) tell the store.
        for o in self.orgs:
            for u in o.leaving:
                self.fake.remove_member(o.org_id, u)
            for u, r in o.joining.items():
                self.fake.add_member(o.org_id, u, o.logins[u], r)
            for u, (_, after) in o.reroled.items():
                self.fake.set_role(o.org_id, u, after)  # type: ignore[arg-type]
        self.fake.reset_log()

    def _quiet(self) -> bool:
        """No delivery waiting or leased, no sync run running, no full sync
        owed and due, no lane leased."""
        return not self.q(
            "SELECT 1 FROM deliveries WHERE status NOT IN ('processed', 'ignored') "
            "UNION ALL SELECT 1 FROM sync_runs WHERE result = 'running' "
            "UNION ALL SELECT 1 FROM work_lanes WHERE full_sync_due_at <= now() "
            "OR leased_until > now() LIMIT 1")

    def explain_effects(self, unexpected: list[tuple[str, str, int]], missing: list[tuple[str, str, int]],
                        actors: dict[tuple[str, str, int], list[str]]) -> None:
        """Print what a failed effects check needs to be understood: for each
        effect, who the member is in the plan, how many deliveries named them,
        which run made it (kind, trigger, result) and every member.* entry the
        member has in that workspace since the baseline."""
        orgs = {o.workspace_id: o for o in self.orgs}

        def category(o: OrgPlan | None, uid: int) -> str:
            if o is None:
                return "unknown org"
            for name in ("steady", "leaving", "joining", "reroled"):
                if uid in getattr(o, name):
                    return f"{name} {getattr(o, name)[uid]}"
            return "stranger" if uid in o.strangers else "not in the plan"

        for label, items in (("unexpected", unexpected), ("missing", missing)):
            for ws, action, uid in items:
                o = orgs.get(ws)
                print(f"  {label}: {o.login if o else ws} {action} user {uid} ({category(o, uid)}, "
                      f"named by {self.referenced.get((ws, uid), 0)} deliveries) by {actors.get((ws, action, uid))}")
                for seq, act, actor, details, at in self.q(
                        "SELECT seq, action, actor, details::text, at FROM activity WHERE seq > :b "
                        "AND workspace_id = :w AND action LIKE 'member.%' "
                        "AND (details->>'provider_user_id')::bigint = :u ORDER BY seq",
                        b=self.baseline_seq, w=ws, u=uid):
                    run = None
                    if actor.startswith("sync:"):
                        rows = self.q("SELECT kind, trigger, result, started_at, finished_at FROM sync_runs "
                                      "WHERE id = :i", i=int(actor.removeprefix("sync:")))
                        run = tuple(rows[0]) if rows else None
                    print(f"      seq {seq} {act} by {actor} at {at} run={run} {details}")

    def rosters(self) -> dict[str, dict[int, str]]:
        out: dict[str, dict[int, str]] = {}
        for ws, uid, role in self.q("SELECT workspace_id, provider_user_id, role FROM roster_entries"):
            out.setdefault(ws, {})[int(uid)] = role
        return out

    def truth(self, org: OrgPlan) -> dict[int, str]:
        return {u: role for u, (_, role, state) in self.fake.members_of(org.org_id).items() if state == "active"}

    # ------------------------------------------------------------ deliveries

    def build(self) -> list[Sent]:
        n = self.args.deliveries
        dups = round(n * self.args.duplicates)
        distinct = n - dups
        self.referenced: dict[tuple[str, int], int] = Counter()
        originals: list[Sent] = []
        for _ in range(distinct):
            org = self.rng.choice(self.orgs)
            uid = self.rng.choice(org.pool())
            # Hints may be stale or out of order: either action for anyone.
            if uid in org.leaving or uid in org.strangers:
                action = "member_removed" if self.rng.random() < 0.7 else "member_added"
            else:
                action = "member_added" if self.rng.random() < 0.7 else "member_removed"
            payload = member_event(org, action, uid, org.logins[uid], org.role_after(uid))
            body = json.dumps(payload).encode()
            delivery = str(uuid.uuid4())
            originals.append(Sent(delivery, body, signed(body, "organization", delivery), False))
            self.referenced[(org.workspace_id, uid)] += 1
        copies = [Sent(s.delivery, s.body, s.headers, True) for s in self.rng.sample(originals, dups)]
        everything = originals + copies
        self.rng.shuffle(everything)
        self.distinct_ids = {s.delivery for s in originals}
        self.dup_count = dups
        return everything

    # ------------------------------------------------------------ faults

    def _horses(self) -> list[tuple[Proc, int]]:
        """(worker, work horse pid) for each worker running a job: the horse is
        the descendant that leads its own process group (RQ calls setpgrp)."""
        table = _proc_table()
        with self.supervisor_lock:
            workers = [p for n, p in self.procs.items() if n.startswith("worker") and p.alive()]
        out = []
        for proc in workers:
            horses = [pid for pid in descendants(proc.pid)
                      if (entry := table.get(pid)) is not None and entry[1] == pid]
            # A worker that runs jobs in its own process (the default, no
            # fork per job) has no horse: the worker itself is the target.
            out.extend((proc, pid) for pid in horses or [proc.pid])
        return out

    def kill_busy_worker(self, timeout: float = 300) -> None:
        """SIGKILL the whole tree of a worker while it drains a lane with
        deliveries in hand: found by freezing the tree (SIGSTOP) and asking
        the database which deliveries are under a lease whose holder names a
        pid of that tree (the database says who holds what; Redis may have
        been restarted empty since the drain began, so RQ's registries would
        not know); otherwise thaw and look again."""
        deadline = time.monotonic() + timeout
        looked = 0
        while time.monotonic() < deadline:
            for proc, horse in self._horses():
                tree = proc.tree()
                for p in tree:
                    _signal(p, signal.SIGSTOP)
                delivery = None
                status = None
                job_id = None
                try:
                    rows = self.q("SELECT id, status, holder FROM deliveries WHERE status = 'processing'")
                    for d_id, d_status, holder in rows:
                        parts = (holder or "").split(":")
                        if len(parts) >= 3 and parts[-2].isdigit() and int(parts[-2]) in tree:
                            delivery, status, job_id = d_id, d_status, holder
                            break
                except Exception as exc:  # noqa: BLE001 - keep looking
                    say(f"could not read the busy worker's deliveries: {type(exc).__name__}: {exc}")
                    delivery = None
                looked += 1
                if delivery is None or status != "processing" or horse not in proc.tree():
                    for p in tree:
                        _signal(p, signal.SIGCONT)
                    continue
                proc.kill_tree(signal.SIGKILL)
                for p in tree:
                    _signal(p, signal.SIGCONT)
                self.killed_at = time.monotonic()
                self.killed_delivery = delivery
                self.events.append(f"SIGKILLed {proc.name} (worker, scheduler and horse: pids {tree}) at "
                                   f"{self.killed_at - T0:.1f}s while it drained a lane (lease holder {job_id}) "
                                   f"(delivery {delivery}, left '{status}')")
                say(self.events[-1])
                self.worker_seq += 1
                name = f"worker-{self.worker_seq}"
                if not self.args.no_replacement:
                    self.start_proc(name, procfile()["worker"])
                    self.events.append(f"started a replacement worker ({name})")
                    say(self.events[-1])
                return
            time.sleep(0.003)
        self.fault_problems.append(f"no worker was caught running a delivery job within {timeout:.0f}s "
                                   f"({looked} busy moments looked at); none was killed")
        say(self.fault_problems[-1])

    def chaos(self, stats: ClientStats, total: int, outage: threading.Event) -> None:
        def wait_for(fraction: float) -> None:
            while stats.sent < total * fraction and stats.sent < total:
                time.sleep(0.01)

        wait_for(self.args.redis_at)
        self.redis.kill()
        outage.set()
        self.redis_down_at = time.monotonic()
        say(f"redis-server SIGKILLed after {stats.sent} requests")
        time.sleep(self.args.redis_down)
        self.redis.start()
        outage.clear()
        self.redis_up_at = time.monotonic()
        self.events.append(f"Redis down from {self.redis_down_at - T0:.1f}s to {self.redis_up_at - T0:.1f}s "
                           "(restarted empty on the same port)")
        say(f"redis-server restarted (empty) after {self.redis_up_at - self.redis_down_at:.1f}s, "
            f"{stats.sent} requests sent")
        if self.args.kill_at > 0:
            wait_for(self.args.kill_at)
            self.kill_busy_worker()

    # ------------------------------------------------------------ waiting

    def status_counts(self) -> dict[str, int]:
        rows = self.q("SELECT status, count(*) FROM deliveries WHERE NOT (id = ANY(:setup)) GROUP BY status",
                      setup=self.setup_ids)
        return {s: int(n) for s, n in rows}

    def wait_processed(self, sent_done: float) -> float | None:
        """Until every recorded delivery is finished or the wait limit; returns
        the seconds from the end of sending until all were finished."""
        limit = sent_done + self.args.wait_limit
        last_print = 0.0
        last: dict[str, int] = {}
        while True:
            counts = self.status_counts()
            pending = sum(n for s, n in counts.items() if s not in ("processed", "ignored"))
            now = time.monotonic()
            if counts != last and now - last_print > 5 or now - last_print > 30:
                say(f"deliveries by status: {dict(sorted(counts.items()))}")
                last_print, last = now, counts
            if pending == 0 and sum(counts.values()) > 0:
                say(f"deliveries by status: {dict(sorted(counts.items()))}")
                return now - sent_done
            if any(s == "failed" for s in counts) and pending == counts.get("failed", 0):
                # Only failed ones left: no sweep re-queues those (they are replayable).
                return None
            if now > limit:
                return None
            time.sleep(2)

    # ------------------------------------------------------------ checks

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'PASS' if ok else 'FAIL'}] {what}", flush=True)
        if not ok:
            self.failures.append(what)

    def final_sync(self, timeout: int = 300) -> dict[str, dict[str, Any]]:
        # Full syncs queue behind the webhooks queue: with a backlog left, wait less.
        cmd = [str(BIN / "orgsync"), "resync", "--all", "--wait", "--timeout", str(timeout), "--json"]
        res = subprocess.run(cmd, cwd=ROOT, env=self._env, capture_output=True, text=True, timeout=timeout + 100,
                             check=False)
        if res.returncode != 0:
            self.failures.append(f"final full sync failed: {res.stderr[-1000:]}")
            return {}
        data = json.loads(res.stdout)
        out = {}
        for r in data["results"]:
            run = r.get("run") or {}
            out[r["workspace"]] = {k: run.get(k) for k in ("result", "added", "removed", "changed")}
        return out


def procfile() -> dict[str, str]:
    entries = {}
    for line in (Path(ROOT) / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    # Loopback only: the chaos run is not for the network.
    entries["web"] = entries["web"].replace("--bind 0.0.0.0:", "--bind 127.0.0.1:")
    return entries


def run(args: argparse.Namespace) -> int:
    from sync import batch

    c = Chaos(args)
    say(f"machine: {machine()}")
    say(f"logs in {c.logs}; schema {c.schema}; redis port {c.redis.port}; web port {c.port}")
    try:
        c.setup()
        say(f"started: web (gunicorn, {args.web_workers} workers), worker-1, worker-2, cron; "
            f"fake GitHub at {c.server.github_api_url}")
        c.bootstrap()
        sizes = [len(o.pool()) for o in c.orgs]
        say(f"bootstrap: {len(c.orgs)} orgs installed and synced; per org {sizes[0]} people in play "
            f"({len(c.orgs[0].steady)} steady, {len(c.orgs[0].leaving)} leave, {len(c.orgs[0].joining)} join, "
            f"{len(c.orgs[0].reroled)} change role, {len(c.orgs[0].strangers)} never members)")
        requests = c.build()
        say(f"sending {len(requests)} signed deliveries ({len(c.distinct_ids)} distinct, {c.dup_count} duplicates) "
            f"from {args.clients} client threads")
        stats = ClientStats()
        outage = threading.Event()
        chaos = threading.Thread(target=c.chaos, args=(stats, len(requests), outage), name="chaos", daemon=True)
        chaos.start()
        send_started = time.monotonic()
        took = send_all(c.port, requests, args.clients, stats, outage)
        say(f"sent {stats.sent} requests in {took:.1f}s ({stats.sent / took:.0f} req/s); answers {dict(stats.answers)}")
        sent_done = time.monotonic()
        chaos.join(timeout=400)
        say(f"waiting for the deliveries (budget {args.budget}s, waiting at most {args.wait_limit}s; "
            f"the sweep wakes lanes with due or orphaned work every minute; a lease lasts "
            f"{batch.LEASE.total_seconds():.0f}s)")
        recovery = c.wait_processed(sent_done)
        recovery_from_start = time.monotonic() - send_started
        killed_final = None
        if c.killed_delivery:
            rows = c.q("SELECT status, attempts, processed_at, started_at FROM deliveries WHERE id = :i",
                       i=c.killed_delivery)
            killed_final = rows[0] if rows else None

        # ---- the counts
        ids = list(c.distinct_ids)
        rows = c.q("SELECT id, status, attempts, outcome::text FROM deliveries WHERE NOT (id = ANY(:setup))",
                   setup=c.setup_ids)
        recorded = {r[0]: r for r in rows}
        by_status = Counter(r[1] for r in rows)
        attempts = Counter(int(r[2]) for r in rows)
        accepted = stats.statuses.get(202, 0)
        dup_answers = stats.answers.get("200 duplicate", 0)
        non2xx = sum(n for s, n in stats.statuses.items() if s < 200 or s >= 300)
        # Every processed delivery names the sync run that answered it (a
        # batch's member reads or a full listing); that run must have finished ok.
        run_results = {int(i): r for i, r in c.q("SELECT id, result FROM sync_runs WHERE id > :b",
                                                 b=c.baseline_run)}
        answered_by: dict[str, int | None] = {}
        for d, r in recorded.items():
            if r[1] == "processed":
                run_id = (json.loads(r[3] or "{}").get("sync") or {}).get("id")
                answered_by[d] = int(run_id) if run_id is not None else None
        unanswered = [d for d, run_id in answered_by.items() if run_id is None or run_results.get(run_id) != "ok"]
        never = [d for d in ids if recorded.get(d) is None or recorded[d][1] not in ("processed", "ignored")]
        lost_runs = sum(1 for r in run_results.values() if r in ("running", "lost"))
        listing_runs = {int(i) for (i,) in c.q("SELECT id FROM sync_runs WHERE id > :b AND kind = 'full'",
                                               b=c.baseline_run)}
        acts = c.q("SELECT workspace_id, action, actor, details::text FROM activity WHERE seq > :b "
                   "AND action LIKE 'member.%' ORDER BY seq", b=c.baseline_seq)
        webhook_effects: Counter[tuple[str, str, int]] = Counter()
        listing_effects: set[tuple[str, str, int]] = set()
        effect_actors: dict[tuple[str, str, int], list[str]] = {}
        for ws, action, actor, details in acts:
            uid = int(json.loads(details or "{}").get("provider_user_id", -1))
            webhook_effects[(ws, action, uid)] += 1
            effect_actors.setdefault((ws, action, uid), []).append(actor)
            if actor.startswith("sync:") and int(actor.removeprefix("sync:")) in listing_runs:
                listing_effects.add((ws, action, uid))
        dup_effects = {k: n for k, n in webhook_effects.items() if n > 1}
        expected_effects = set()
        for o in c.orgs:
            for u in o.pool():
                if not c.referenced.get((o.workspace_id, u)):
                    continue
                if u in o.joining:
                    expected_effects.add((o.workspace_id, "member.added", u))
                elif u in o.leaving:
                    expected_effects.add((o.workspace_id, "member.removed", u))
                elif u in o.reroled:
                    expected_effects.add((o.workspace_id, "member.role_changed", u))
        roster_before = c.rosters()
        stale_referenced = []
        for o in c.orgs:
            truth = c.truth(o)
            stored = roster_before.get(o.workspace_id, {})
            for u in o.pool():
                if c.referenced.get((o.workspace_id, u)) and truth.get(u) != stored.get(u):
                    stale_referenced.append((o.login, u, truth.get(u), stored.get(u)))
        unreferenced = {o.workspace_id: (
            sum(1 for u in o.joining if not c.referenced.get((o.workspace_id, u))),
            sum(1 for u in o.leaving if not c.referenced.get((o.workspace_id, u))),
            sum(1 for u in o.reroled if not c.referenced.get((o.workspace_id, u))),
        ) for o in c.orgs}
        final = c.final_sync(300 if recovery is not None else 60)
        roster_after = c.rosters()
        provider_calls = {
            "membership reads": c.fake.count("/memberships/", method="GET"),
            "token exchanges": c.fake.count("/access_tokens", method="POST"),
            "total": c.fake.request_count,
        }

        print()
        print("=" * 78)
        print(f"chaos run: {len(requests)} deliveries, {args.clients} clients, {len(c.orgs)} orgs, "
              f"Redis down {args.redis_down}s, one worker SIGKILLed mid-job")
        print("-" * 78)
        print(f"requests sent:                     {stats.sent}")
        print(f"  distinct delivery ids:           {len(ids)}")
        print(f"  duplicate copies sent:           {c.dup_count}")
        print(f"accepted (202):                    {accepted}")
        print(f"duplicates answered 200:           {dup_answers}")
        print(f"non-2xx answers / conn. errors:    {non2xx} {dict(stats.errors) if stats.errors else ''}")
        print(f"answers while Redis was down:      {dict(stats.during_outage)}")
        print(f"deliveries recorded in the DB:     {len(recorded)}")
        print(f"  by status:                       {dict(sorted(by_status.items()))}")
        print(f"  attempts per delivery:           {dict(sorted(attempts.items()))}")
        print(f"answered by an ok sync run:        {len(answered_by) - len(unanswered)} of {len(answered_by)} processed")
        print(f"  sync runs left running / lost:   {lost_runs}")
        print(f"  full listings that served hints: {len(listing_runs)}")
        print(f"member changes by webhooks:        {len(webhook_effects)} "
              f"(expected {len(expected_effects)}; duplicated: {len(dup_effects)})")
        print(f"provider calls during the run:     {provider_calls}")
        print("fault events:")
        for e in c.events:
            print(f"  - {e}")
        if c.killed_delivery:
            print(f"  killed delivery {c.killed_delivery}: final {killed_final[0] if killed_final else None}, "
                  f"attempts {killed_final[1] if killed_final else None}")
        print(f"process restarts by the supervisor: {len(c.restarts)}")
        for r in c.restarts:
            print(f"  - {r}")
        rec = f"{recovery:.1f}s after the last request" if recovery is not None else \
            f"NOT within {args.wait_limit}s"
        print(f"all deliveries finished:           {rec} ({recovery_from_start:.1f}s after the first request)")
        print(f"final full sync:                   {final}")
        print("-" * 78)
        c.check(non2xx == 0, f"no 5xx or connection errors ({non2xx})")
        c.check(accepted == len(ids), f"accepted (202) == distinct ids ({accepted} == {len(ids)})")
        c.check(dup_answers == c.dup_count, f"duplicates answered 200 == duplicates sent ({dup_answers} == {c.dup_count})")
        c.check(set(recorded) == c.distinct_ids, f"recorded == distinct ids sent ({len(recorded)} == {len(ids)})")
        c.check(all(r[1] in ("processed", "ignored") for r in recorded.values()),
                f"every delivery processed or ignored (none lost/failed): {dict(by_status)}")
        c.check(recovery is not None and recovery <= args.budget,
                f"all processed within the budget of {args.budget}s after sending "
                f"({f'{recovery:.1f}s' if recovery is not None else 'not finished'})")
        c.check(not unanswered and not never,
                f"each processed delivery was answered by a finished ok sync run ({len(unanswered)} not; "
                f"{len(never)} unfinished)")
        c.check(all(json.loads(r[3] or "{}").get("result") == "member_synced" for r in recorded.values()
                    if r[1] == "processed"), "every processed outcome is member_synced")
        c.check(not dup_effects, f"no duplicated effect in the activity log ({len(dup_effects)})")
        # A full listing that served a burst of hints also brings members no
        # delivery named; any other effect beyond the expected is a bug.
        unexpected = set(webhook_effects) - expected_effects - listing_effects
        c.check(not unexpected and expected_effects <= set(webhook_effects),
                f"webhook effects == expected, plus what full listings brought ({len(unexpected)} unexpected, "
                f"{len(expected_effects - set(webhook_effects))} missing)")
        if unexpected or not expected_effects <= set(webhook_effects):
            c.explain_effects(sorted(unexpected)[:20], sorted(expected_effects - set(webhook_effects))[:10],
                              effect_actors)
        c.check(not stale_referenced,
                f"before the final sync, every member named by a delivery matches the provider "
                f"({len(stale_referenced)} differ{': ' + str(stale_referenced[:5]) if stale_referenced else ''})")
        final_ok = bool(final) and all(
            f.get("result") == "ok" and all(
                (f.get(k) or 0) <= n for k, n in zip(("added", "removed", "changed"), unreferenced[ws], strict=True))
            for ws, f in final.items())
        c.check(final_ok, f"the final full sync changed only members no delivery named "
                          f"(at most +/-/~ {list(unreferenced.values())})")
        for o in c.orgs:
            t = c.truth(o)
            s = roster_after.get(o.workspace_id, {})
            c.check(t == s, f"store roster of {o.login} == provider ({len(s)} vs {len(t)} members, "
                            f"{len(set(s.items()) ^ set(t.items()))} differ)")
        c.check(not c.fault_problems and c.redis_up_at is not None
                and (c.killed_at is not None or c.args.kill_at <= 0),
                f"the faults were injected as planned {c.fault_problems or ''}")
        print("=" * 78)
        print(f"RESULT: {'OK' if not c.failures else 'FAILED: ' + '; '.join(c.failures)}")
        if c.failures:
            print(f"process logs kept in {c.logs}")
        return 0 if not c.failures else 1
    finally:
        cleanup(c)


def cleanup(c: Chaos) -> None:
    from sqlalchemy import text

    from models.base import make_engine

    c.stop_supervisor.set()
    with c.supervisor_lock:
        procs = list(c.procs.values())
    for p in procs:
        p.expected_exit = True
    for p in procs:
        try:
            p.stop()
        except Exception as exc:  # noqa: BLE001 - clean up the rest regardless
            print(f"cleanup: {p.name}: {exc}", file=sys.stderr)
    c.redis.kill()
    if c.server is not None:
        c.server.stop()
    if c.engine is not None:
        c.engine.dispose()
    try:
        admin = make_engine(PG)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{c.schema}" CASCADE'))
        admin.dispose()
    except Exception as exc:  # noqa: BLE001
        print(f"cleanup: could not drop schema {c.schema}: {exc}", file=sys.stderr)
    if not c.failures and not c.args.keep_logs:
        shutil.rmtree(c.logs, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deliveries", type=int, default=10_000, help="requests sent, duplicates included")
    p.add_argument("--duplicates", type=float, default=0.10, help="fraction of requests that are duplicates")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--orgs", type=int, default=3)
    p.add_argument("--org-size", type=int, default=300, help="steady members per org (others scale from it)")
    p.add_argument("--web-workers", type=int, default=2)
    p.add_argument("--redis-down", type=float, default=10.0, help="seconds Redis stays down")
    p.add_argument("--redis-at", type=float, default=0.35, help="fraction of requests sent when Redis dies")
    p.add_argument("--kill-at", type=float, default=0.70, help="fraction sent when a busy worker is killed (0: kill none)")
    p.add_argument("--no-replacement", action="store_true", help="do not start a worker to replace the killed one")
    p.add_argument("--provider-latency", type=float, default=0.0, help="seconds added to each fake GitHub answer")
    p.add_argument("--budget", type=float, default=600, help="seconds after sending within which all must finish")
    p.add_argument("--wait-limit", type=float, default=1200,
                   help="seconds to keep waiting (past the budget) to measure the real recovery time")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args()
    args.wait_limit = max(args.wait_limit, args.budget)
    started = time.monotonic()
    code = run(args)
    print(f"chaos run took {time.monotonic() - started:.1f}s")
    sys.exit(code)


if __name__ == "__main__":
    main()
