"""End to end: the platform's walk through the workspace store, over real
HTTP against `orgsync dev` (its embedded default: SQLite, in-process Redis)
with the fake GitHub on loopback.

Sign-up without a provider gives a personal workspace; a managed workspace is
created; invite -> request -> approve makes the invitee a member with the
invited role, which their `GET /v1/users/<ref>/workspaces` shows, and access
says can_deploy once a subscription is set; a provider workspace (made by a
GitHub login) cannot be deleted until it is disconnected."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ORGSYNC, free_port
from tests.fakes.server import FakeProviderServer

SERVICE = "walk-service-token"
ADMIN = "walk-admin-token"
APP_ID = "31337"


class Http:
    def __init__(self, base: str) -> None:
        self.base = base

    def __call__(self, method: str, path: str, body: Any = None, *, user: str | None = None,
                 token: str = SERVICE) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if user is not None:
            headers["X-Orgsync-User"] = user
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw else None


@pytest.fixture
def http(tmp_path: Path, server: FakeProviderServer, app_key: str) -> Iterator[Http]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({
        "ORGSYNC_SERVICE_TOKEN": SERVICE, "ORGSYNC_ADMIN_TOKEN": ADMIN,
        "GITHUB_API_URL": server.github_api_url, "GITHUB_APP_ID": APP_ID,
        "GITHUB_APP_PRIVATE_KEY": app_key, "GITHUB_WEBHOOK_SECRET": "walk-secret",
    })
    proc = subprocess.Popen([str(ORGSYNC), "dev", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"orgsync dev did not start: {proc.stdout.read()}")  # type: ignore[union-attr]
                time.sleep(0.2)
        yield Http(base)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_platform_walk(http: Http, server: FakeProviderServer) -> None:
    # Sign-up without a provider: an account and its personal workspace.
    status, sam = http("POST", "/v1/users", {"username": "sam"})
    assert status == 201 and sam["personal_workspace"]["name"] == "sam"
    status, mira = http("POST", "/v1/users", {"username": "mira"})
    assert status == 201
    status, listed = http("GET", "/v1/users/sam/workspaces")
    assert [(w["name"], w["kind"], w["role"]) for w in listed["workspaces"]] == [("sam", "personal", "owner")]

    # Sam creates a managed workspace and invites by link as admin.
    status, studio = http("POST", "/v1/workspaces", {"name": "studio"}, user="sam")
    assert status == 201 and studio["kind"] == "managed" and studio["owner"]["username"] == "sam"
    status, body = http("POST", "/v1/workspaces/studio/invitations", {"role": "admin"}, user="sam")
    assert status == 201
    invitation = body["invitation"]
    assert invitation["role"] == "admin" and invitation["status"] == "active"

    # Mira opens the link and asks; Sam approves.
    status, body = http("POST", f"/v1/invitations/{invitation['token']}/requests", user="mira")
    assert status == 202 and body["request"]["status"] == "requested"
    request_id = body["request"]["id"]
    status, body = http("POST", f"/v1/workspaces/studio/requests/{request_id}/approve", user="sam")
    assert status == 200 and body["request"]["status"] == "approved"

    status, listed = http("GET", f"/v1/users/{mira['user']['id']}/workspaces")
    assert [(w["name"], w["kind"], w["role"], w["subscription"]) for w in listed["workspaces"]] == [
        ("mira", "personal", "owner", None), ("studio", "managed", "admin", None)]

    # Access: a role, but no subscription yet; then the operator sets one.
    status, access = http("GET", "/v1/workspaces/studio/access/mira")
    assert status == 200 and access["role"] == "admin" and access["can_deploy"] is False
    status, _ = http("POST", "/v1/admin/workspaces/studio/subscription", {"plan": "team"}, token=ADMIN)
    assert status == 200
    status, access = http("GET", "/v1/workspaces/studio/access/mira")
    assert access["role"] == "admin" and access["can_deploy"] is True
    status, access = http("GET", "/v1/workspaces/studio/access/sam")
    assert access["role"] == "owner" and access["can_deploy"] is True

    # A provider workspace, made by a GitHub login: not deletable while connected.
    server.github.add_org(9100, "octo-org", installation_id=4100)
    server.github.add_member(9100, 501, "octocat", "admin")
    server.github.add_user_token("gho_walk", 501, "octocat")
    status, login = http("POST", "/v1/logins", {"provider": "github", "access_token": "gho_walk"})
    assert status == 200, login
    org = next(w for w in login["workspaces"] if w["kind"] == "provider")
    assert org["role"] == "owner"
    status, err = http("DELETE", f"/v1/workspaces/{org['id']}", user="github:501")
    assert status == 409 and err["error"] == "cannot_delete"
    status, _ = http("POST", f"/v1/admin/workspaces/{org['id']}/disconnect", token=ADMIN)
    assert status == 200
    status, err = http("DELETE", f"/v1/workspaces/{org['id']}", user="mira")
    assert status == 403 and err["error"] == "forbidden"
    status, _ = http("DELETE", f"/v1/workspaces/{org['id']}", user="github:501")
    assert status == 204
    status, _ = http("GET", f"/v1/workspaces/{org['id']}")
    assert status == 404
    status, listed = http("GET", "/v1/users/github:501/workspaces")
    assert [w["kind"] for w in listed["workspaces"]] == ["personal"]

    # Every change is in the change feed, on whose behalf it was made.
    status, feed = http("GET", "/v1/changes?limit=1000")
    actions = [(c["action"], c["actor"]) for c in feed["changes"] if c["workspace"] == studio["id"]]
    assert actions == [
        ("workspace.created", f"user:{sam['user']['id']}"),
        ("ownership.changed", f"user:{sam['user']['id']}"),
        ("invitation.created", f"user:{sam['user']['id']}"),
        ("member.requested", f"user:{mira['user']['id']}"),
        ("member.added", f"user:{sam['user']['id']}"),
        ("subscription.changed", "operator"),
    ]
    assert ("workspace.deleted", f"user:{login['user']['id']}") in [
        (c["action"], c["actor"]) for c in feed["changes"] if c["workspace"] == org["id"]]
