"""`orgsync dev --demo`, the real console script in a fresh directory: the
stand-in orgs and group are adopted before it says what to try, and each
thing it suggests works as printed (a login, a member added on the stand-in
GitHub reaching the roster by a signed webhook, a resync, a CI token)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ORGSYNC


@dataclass
class Running:
    proc: subprocess.Popen[str]
    cwd: Path
    env: dict[str, str]
    out: str
    base: str
    stand_in: str

    def cli(self, *args: str) -> Any:
        done = subprocess.run([str(ORGSYNC), *args, "--json"], cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Running]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORGSYNC_", "GITHUB_", "GITLAB_", "OIDC_", "DATABASE_URL", "REDIS_URL"))}
    proc = subprocess.Popen([str(ORGSYNC), "dev", "--demo", "--port", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"orgsync dev --demo exited ({proc.wait()}):\n{''.join(lines)}")
            lines.append(line)
            if "/demo/ci-token" in line:  # the last line of what to try
                break
        out = "".join(lines)
        base = re.search(r"serving on (http://\S+)", out)
        stand_in = re.search(r"stand-in GitHub and GitLab at (http://\S+)", out)
        assert base and stand_in, out
        yield Running(proc, tmp_path, env, out, base[1], stand_in[1])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_demo_shows_the_whole_job(demo: Running) -> None:
    # Adopted at start: the workspaces are there before anything is tried.
    listed = demo.cli("workspaces", "list")
    assert {w["reference"] for w in listed["workspaces"]} == {"github:acme", "github:globex", "gitlab:initech"}
    for step in ("/v1/logins", "/demo/github/acme/members/dave", "/v1/admin/resync", "/v1/oidc/resolve"):
        assert step in demo.out

    # A login, as printed.
    status, body = http("POST", f"{demo.base}/v1/logins", {"provider": "github", "access_token": "demo-token-alice"},
                        token="demo-service-token")
    assert status == 200, body
    assert {(w["name"], w["role"]) for w in body["workspaces"]} >= {("acme", "owner"), ("globex", "member")}

    # dave joins acme on the stand-in GitHub, which sends the signed webhook.
    status, body = http("POST", f"{demo.stand_in}/demo/github/acme/members/dave")
    assert status == 200 and body["webhook"]["status_code"] == 202, body

    def logins() -> set[str]:
        return {m["login"] for m in demo.cli("workspaces", "members", "acme")["members"]}

    assert eventually(lambda: "dave" in logins(), "dave on acme's roster")
    assert logins() == {"alice", "bob", "dave"}
    activity = demo.cli("workspaces", "activity", "acme")["activity"]
    [added] = [a for a in activity if a["action"] == "member.added" and a["details"]["login"] == "dave"]
    assert added["subject"] == "github:4"  # no account yet: the provider id

    # A resync, as printed.
    before = demo.cli("status")
    [acme_before] = [w for w in before["workspaces"] if w["name"] == "acme"]
    status, body = http("POST", f"{demo.base}/v1/admin/resync", {"target": "acme"}, token="demo-admin-token")
    assert status == 202, body

    def resynced() -> bool:
        [acme] = [w for w in demo.cli("status")["workspaces"] if w["name"] == "acme"]
        return bool(acme["last_sync"] and acme["last_sync"]["at"] != acme_before["last_sync"]["at"])

    eventually(resynced, "the resync of acme")

    # A CI token from the stand-in issuer resolves to acme's workspace.
    with urllib.request.urlopen(f"{demo.stand_in}/demo/ci-token?owner=acme", timeout=30) as resp:
        token = resp.read().decode().strip()
    status, body = http("POST", f"{demo.base}/v1/oidc/resolve", {"token": token})
    assert status == 200, body
    assert body["workspace"]["reference"] == "github:acme" and body["repository"] == "acme/app"
    # The same token a second time is a replay.
    status, body = http("POST", f"{demo.base}/v1/oidc/resolve", {"token": token})
    assert status == 401, body
