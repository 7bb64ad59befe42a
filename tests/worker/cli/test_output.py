"""Every read's --json, printed by the real `orgsync` console script, is
exactly the HTTP API's body for the same read on the same database (SPEC
section 8), and nothing else is on stdout."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from models.config import load_settings
from runtime.process import Runtime
from tests.conftest import ORGSYNC
from tests.worker.cli.conftest import _record
from tests.worker_env import ADMIN_TOKEN, SERVICE_TOKEN
from webhooks.app import create_app

# (CLI arguments, API path, token kind); the status read is compared without
# "queues": without REDIS_URL the queues live inside `orgsync dev`, so the CLI
# says so (null) where the API process reads its own.
READS = [
    (["workspaces", "show", "acme"], "/v1/workspaces/acme", "service"),
    (["workspaces", "members", "acme"], "/v1/workspaces/acme/members", "service"),
    (["workspaces", "activity", "acme"], "/v1/workspaces/acme/activity", "service"),
    (["workspaces", "activity", "acme", "--after", "1", "--limit", "2"],
     "/v1/workspaces/acme/activity?after=1&limit=2", "service"),
    (["deliveries", "list"], "/v1/admin/deliveries", "admin"),
    (["deliveries", "list", "--failed"], "/v1/admin/deliveries?status=failed", "admin"),
    (["deliveries", "list", "--provider", "gitlab"], "/v1/admin/deliveries?provider=gitlab", "admin"),
    (["status"], "/v1/admin/status", "admin"),
]


def api_body(env: dict[str, str], path: str, kind: str) -> Any:
    rt = Runtime(load_settings({**{k: v for k, v in env.items() if v}, "ORGSYNC_SERVICE_TOKEN": SERVICE_TOKEN}))
    try:
        token = SERVICE_TOKEN if kind == "service" else ADMIN_TOKEN
        resp = create_app(runtime=rt).test_client().get(path, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.get_json()
    finally:
        rt.engine.dispose()


@pytest.mark.parametrize(("args", "path", "kind"), READS, ids=[" ".join(r[0]) for r in READS])
def test_cli_json_is_the_api_body(cli_env: dict[str, str], seeded: dict[str, str],
                                  args: list[str], path: str, kind: str, tmp_path: Path) -> None:
    _record(cli_env, "d-failed", 3, "failed")
    _record(cli_env, "d-new", 2, "received")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("ORGSYNC_", "GITHUB_", "GITLAB_"))},
           **{k: v for k, v in cli_env.items() if v}, "ORGSYNC_LOG_FORMAT": "json"}
    proc = subprocess.run([str(ORGSYNC), *args, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    expected = api_body(cli_env, path, kind)
    if args == ["status"]:
        assert printed.pop("queues") is None
        expected.pop("queues")
    assert printed == expected
    assert printed  # an empty answer on both sides would prove nothing


def test_listings_have_headers(cli_env: dict[str, str], seeded: dict[str, str], tmp_path: Path) -> None:
    _record(cli_env, "d-new", 2, "received")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("ORGSYNC_", "GITHUB_", "GITLAB_"))},
           **{k: v for k, v in cli_env.items() if v}}
    for args, header in ((["workspaces", "list"], ["ID", "NAME", "KIND", "STATUS", "REFERENCE", "OWNER"]),
                         (["workspaces", "members", "acme"], ["LOGIN", "ROLE", "ACCOUNT", "ACCESS"]),
                         (["workspaces", "activity", "acme"], ["SEQ", "AT", "ACTOR", "ACTION", "SUBJECT"]),
                         (["deliveries", "list"], ["RECEIVED", "SOURCE", "STATUS", "EVENT", "ID"])):
        proc = subprocess.run([str(ORGSYNC), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].split() == header, proc.stdout
        assert len(lines) >= 2
