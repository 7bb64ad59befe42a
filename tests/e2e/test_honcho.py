"""End to end through the real `honcho start`: the Procfile's four lines
started together, as a newcomer would, against PostgreSQL (a fresh, empty
schema) and Redis. The service must come up with the schema at head, stay up
after the release step is done, and turn a signed delivery into a store
change seen through the service API."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from demo.fakes.server import FakeProviderServer
from sync.providers.signatures import github_headers
from tests.conftest import REDIS_URL, ROOT, free_port, need_redis
from tests.e2e.test_procfile import (  # noqa: F401 - fixtures
    ADMIN,
    APP_ID,
    BIN,
    INSTALLATION,
    ORG_ID,
    SECRET,
    SERVICE,
    github,
    http,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

HONCHO = BIN / "honcho"


def wait_for(check: Callable[[], Any], proc: subprocess.Popen[bytes], log: Path, what: str,
             timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"honcho exited ({proc.returncode}) while waiting for {what}:\n"
                                 + log.read_text(errors="replace")[-6000:])
        try:
            last = check()
        except OSError:
            last = None
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}\n" + log.read_text(errors="replace")[-6000:])


def test_honcho_start_keeps_the_service_up_and_processes_a_delivery(
    pg_schema_url: str, real_redis: Any, github: FakeProviderServer, app_key_pair: tuple[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    need_redis()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORGSYNC_", "GITHUB_", "GITLAB_", "OIDC_"))},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # honcho gives the first Procfile line PORT and each later one +100.
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "DATABASE_URL": pg_schema_url,
        "REDIS_URL": REDIS_URL,
        "GITHUB_API_URL": github.github_api_url,
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_APP_PRIVATE_KEY": app_key_pair[0],
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "ORGSYNC_SERVICE_TOKEN": SERVICE,
        "ORGSYNC_ADMIN_TOKEN": ADMIN,
    }
    env.pop("DYNO", None)
    fake = github.github
    fake.add_org(ORG_ID, "acme", installation_id=INSTALLATION)
    fake.add_member(ORG_ID, 1, "alice", "admin")
    fake.add_member(ORG_ID, 2, "bob", "member")
    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(HONCHO), "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http("GET", f"{base}/readyz")[0] == 200, proc, log, "web /readyz")
        text = log.read_text(errors="replace")
        assert "release: database is at the newest revision" in text, text
        # The release step is done; nothing may have taken the others down
        # (honcho stops everything when any one process exits).
        wait_for(lambda: "staying up" in log.read_text(errors="replace"), proc, log, "release to settle")
        time.sleep(4)
        assert proc.poll() is None, log.read_text(errors="replace")

        def post(event: str, payload: dict[str, Any]) -> tuple[int, Any]:
            body = json.dumps(payload).encode()
            return http("POST", f"{base}/webhooks/github", body,
                        github_headers(body, SECRET, event, str(uuid.uuid4())))

        status, answer = post("installation", {
            "action": "created",
            "installation": {"id": INSTALLATION, "account": {"id": ORG_ID, "login": "acme", "type": "Organization"}},
            "sender": {"id": 1, "login": "alice"},
        })
        assert status == 202 and answer["status"] == "queued", answer

        service = {"Authorization": f"Bearer {SERVICE}"}

        def members() -> set[str]:
            code, body = http("GET", f"{base}/v1/workspaces/github:acme/members", headers=service)
            return {m["login"] for m in body["members"]} if code == 200 else set()

        assert wait_for(lambda: members() == {"alice", "bob"}, proc, log, "the first sync")
        fake.add_member(ORG_ID, 3, "carol", "member")
        status, answer = post("organization", {
            "action": "member_added",
            "organization": {"id": ORG_ID, "login": "acme"},
            "membership": {"user": {"id": 3, "login": "carol"}, "role": "member", "state": "active"},
            "installation": {"id": INSTALLATION},
        })
        assert status == 202, answer
        assert wait_for(lambda: "carol" in members(), proc, log, "the member event")
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
