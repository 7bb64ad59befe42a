"""End to end: the Procfile's processes (release, web, worker, cron) started as
separate processes from the Procfile's own command lines, against PostgreSQL
(a fresh schema) and Redis (db 15), with the fake GitHub on loopback. Signed
deliveries go in over HTTP; the store changes as a user would see it through
the service API."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.fakes.github_server import FakeGitHub
from demo.fakes.server import FakeProviderServer
from sync.providers.signatures import github_headers
from tests.conftest import REDIS_URL, ROOT, free_port, need_redis

BIN = Path(sys.executable).parent
APP_ID = 31337
ORG_ID, INSTALLATION = 7001, 4242
SECRET = "e2e-webhook-secret"
SERVICE = "e2e-service-token"
ADMIN = "e2e-admin-token"

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


@pytest.fixture
def github(app_key_pair: tuple[str, str]) -> Iterator[FakeProviderServer]:
    # The fake verifies our app JWTs with the public key, like GitHub.
    with FakeProviderServer(github=FakeGitHub(app_id=APP_ID, app_public_key=app_key_pair[1])) as server:
        yield server


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: str) -> None:
        out = (self.logs / f"{name}.log").open("wb")
        # The Procfile line runs through a shell (it uses ${PORT:-8000}), in
        # its own process group so that stopping it stops its children too.
        self.procs[name] = subprocess.Popen(command, shell=True, cwd=ROOT, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}):\n{self.log(name)}")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def eventually(check: Callable[[], Any], procs: Processes, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        procs.check_alive()
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}\nworker log:\n{procs.log('worker')}")


def test_procfile_processes_turn_signed_deliveries_into_store_changes(
    pg_schema_url: str, real_redis: Any, github: FakeProviderServer, app_key_pair: tuple[str, str], tmp_path: Path,
) -> None:
    need_redis()
    entries = procfile()
    assert set(entries) >= {"release", "web", "worker", "cron"}
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORGSYNC_", "GITHUB_", "GITLAB_", "OIDC_"))},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "DATABASE_URL": pg_schema_url,
        "REDIS_URL": REDIS_URL,
        "GITHUB_API_URL": github.github_api_url,
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_APP_PRIVATE_KEY": app_key_pair[0],
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "ORGSYNC_SERVICE_TOKEN": SERVICE,
        "ORGSYNC_ADMIN_TOKEN": ADMIN,
        "ORGSYNC_LOG_LEVEL": "INFO",
    }
    fake = github.github
    fake.add_org(ORG_ID, "acme", installation_id=INSTALLATION)
    fake.add_user(1, "alice")
    fake.add_member(ORG_ID, 1, "alice", "admin")
    fake.add_member(ORG_ID, 2, "bob", "member")

    release = subprocess.run(entries["release"], shell=True, cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120, check=False)
    assert release.returncode == 0, release.stderr

    procs = Processes(env, tmp_path)
    try:
        for name in ("web", "worker", "cron"):
            procs.start(name, entries[name])
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return http("GET", f"{base}/readyz")[0] == 200
            except (urllib.error.URLError, OSError):
                return False

        eventually(ready, procs, what="web /readyz")

        def post(event: str, payload: dict[str, Any]) -> tuple[int, Any]:
            body = json.dumps(payload).encode()
            return http("POST", f"{base}/webhooks/github", body,
                        github_headers(body, SECRET, event, str(uuid.uuid4())))

        service = {"Authorization": f"Bearer {SERVICE}"}

        # The app is installed on the org: the workspace appears and is synced.
        status, answer = post("installation", {
            "action": "created",
            "installation": {"id": INSTALLATION, "account": {"id": ORG_ID, "login": "acme", "type": "Organization"}},
            "sender": {"id": 1, "login": "alice"},
        })
        assert status == 202 and answer["status"] == "queued", answer

        def members() -> set[str]:
            code, body = http("GET", f"{base}/v1/workspaces/github:acme/members", headers=service)
            return {m["login"] for m in body["members"]} if code == 200 else set()

        assert eventually(lambda: members() == {"alice", "bob"} and members(), procs, what="the first sync")

        # A member joins on GitHub; the webhook (a hint) makes the worker re-read them.
        fake.add_member(ORG_ID, 3, "carol", "member")
        status, answer = post("organization", {
            "action": "member_added",
            "organization": {"id": ORG_ID, "login": "acme"},
            "membership": {"user": {"id": 3, "login": "carol"}, "role": "member", "state": "active"},
            "installation": {"id": INSTALLATION},
        })
        assert status == 202, answer
        eventually(lambda: "carol" in members(), procs, what="the member event")

        # Operators see it: status, metrics, and the cron scheduler is alive.
        code, report = http("GET", f"{base}/v1/admin/status", headers={"Authorization": f"Bearer {ADMIN}"})
        assert code == 200
        [ws] = report["workspaces"]
        # The installation webhook and the minute's installation reconciliation
        # may each owe the org a full sync; whichever ran last found it in step.
        assert ws["name"] == "acme" and ws["last_sync"]["result"] == "ok"
        code, feed = http("GET", f"{base}/v1/workspaces/github:acme/activity?limit=1000", headers=service)
        assert code == 200
        added = sorted(a["details"]["login"] for a in feed["activity"] if a["action"] == "member.added")
        assert added == ["alice", "bob", "carol"]  # each member added exactly once
        code, metrics = http("GET", f"{base}/metrics")
        assert code == 200 and 'outcome="processed"' in metrics

        from rq.cron import CronScheduler

        assert eventually(lambda: len(CronScheduler.all(real_redis)) == 1, procs, what="cron registration")
        code, activity = http("GET", f"{base}/v1/changes?limit=1000", headers=service)
        assert code == 200 and any(e["action"] == "member.added" and e["subject"] for e in activity["changes"])
    finally:
        procs.stop()
    # The worker logged JSON lines with the bound lane context, no secrets.
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")
    assert '"lane": "github:' in worker_log
    assert SECRET not in worker_log and "BEGIN PRIVATE KEY" not in worker_log
