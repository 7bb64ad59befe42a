"""Operator errors through the real `orgsync` console script (and gunicorn):
each is one clear line on stderr and a non-zero exit, never a traceback, and
nothing is left behind (no empty SQLite file from a read in the wrong
directory)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ORGSYNC, ROOT
from tests.worker.cli.conftest import _record
from worker.cli import main

GUNICORN = Path(sys.executable).with_name("gunicorn")
DOWN_DB = "postgresql+psycopg://nobody@127.0.0.1:1/orgsync"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORGSYNC_", "GITHUB_", "GITLAB_", "OIDC_", "DATABASE_URL", "REDIS_URL"))}
    env.update(extra)
    return env


def orgsync(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ORGSYNC), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def error_lines(stderr: str) -> list[str]:
    """stderr without the start-up warnings (which are not errors)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning: ")]


def assert_one_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args", [
    ["workspaces", "list"],
    ["workspaces", "show", "acme"],
    ["status"],
    ["deliveries", "list"],
    ["resync", "--all"],
    ["db", "upgrade"],
    ["dev", "--port", "0"],
], ids=lambda a: "-".join(a[:2]))
def test_an_unreachable_database_is_one_line(args: list[str], tmp_path: Path) -> None:
    proc = orgsync(args, clean_env(DATABASE_URL=DOWN_DB), tmp_path)
    assert_one_line(proc, "cannot use the database at postgresql+psycopg://nobody@127.0.0.1:1/orgsync",
                    "Connection refused")
    assert proc.stdout.strip() == "" or args[0] == "dev"


@pytest.mark.parametrize("args", [["workspaces", "list"], ["status"], ["deliveries", "list"],
                                  ["resync", "--all"], ["workspaces", "members", "acme"]],
                         ids=lambda a: "-".join(a[:2]))
def test_a_read_outside_the_clone_leaves_no_empty_database_behind(args: list[str], tmp_path: Path) -> None:
    proc = orgsync(args, clean_env(), tmp_path)
    assert_one_line(proc, f"no database at {tmp_path / 'orgsync.db'}", "orgsync db upgrade")
    assert list(tmp_path.iterdir()) == []


def test_a_database_without_the_schema_says_to_migrate(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    env = clean_env(DATABASE_URL="sqlite:///empty.db")
    assert_one_line(orgsync(["workspaces", "list"], env, tmp_path), "has no orgsync schema", "orgsync db upgrade")
    migrated = orgsync(["db", "upgrade"], env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    listed = orgsync(["workspaces", "list", "--json"], env, tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == {"workspaces": []}


@pytest.mark.parametrize(("url", "fragment"), [
    ("not-a-url", "--url must be an http:// or https:// URL"),
    ("ftp://127.0.0.1/", "--url must be an http:// or https:// URL"),
    ("http://", "--url must be an http:// or https:// URL"),
    ("http://127.0.0.1:notaport", "could not post to"),
    ("http://127.0.0.1:1", "Connection refused"),
])
def test_deliveries_send_to_a_bad_url_is_one_line(url: str, fragment: str, tmp_path: Path) -> None:
    payload = tmp_path / "ping.json"
    payload.write_text('{"zen": "hi"}')
    proc = orgsync(["deliveries", "send", str(payload), "--provider", "github", "--event", "ping", "--url", url],
                   clean_env(GITHUB_WEBHOOK_SECRET="s"), tmp_path)
    assert_one_line(proc, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ping.json"]


def test_a_bad_configuration_value_stops_gunicorn_with_one_line(tmp_path: Path) -> None:
    env = clean_env(ORGSYNC_RESYNC_INTERVAL="soon", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    proc = subprocess.run([str(GUNICORN), "--bind", "127.0.0.1:0", "--workers", "2", "webhooks.app:create_app()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 4, proc.stderr  # gunicorn's "App failed to load": it stops, no respawn loop
    assert "Traceback" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("orgsync:")]
    assert ours and set(ours) == {
        "orgsync: configuration error: ORGSYNC_RESYNC_INTERVAL: must be a whole number of seconds"}, proc.stderr


@pytest.fixture
def black_hole() -> Iterator[socket.socket]:
    """A server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def test_ctrl_c_during_an_in_process_resync_is_one_line(cli_env: dict[str, str], seeded: dict[str, str],
                                                        black_hole: socket.socket, tmp_path: Path) -> None:
    port = black_hole.getsockname()[1]
    env = {**clean_env(), **{k: v for k, v in cli_env.items() if v},
           "GITHUB_API_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen([str(ORGSYNC), "resync", "acme"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        black_hole.settimeout(60)
        conn, _ = black_hole.accept()  # the sync is now waiting on the provider
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in out + err
    assert error_lines(err) == ["interrupted: stopped the work running in this process"], err


def test_replay_that_fails_again_exits_nonzero(cli_env: dict[str, str], seeded: dict[str, str],
                                               tmp_path: Path) -> None:
    _record(cli_env, "d-again", 3, "failed")
    # The provider is gone: the replay cannot re-read the member.
    env = {**clean_env(), **{k: v for k, v in cli_env.items() if v}, "GITHUB_API_URL": "http://127.0.0.1:1"}
    proc = orgsync(["deliveries", "replay", "d-again"], env, tmp_path, timeout=120)
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert error_lines(proc.stderr)[-1].startswith("Error: delivery d-again failed again: "), proc.stderr
    listed = orgsync(["deliveries", "list", "--json"], env, tmp_path)
    [row] = json.loads(listed.stdout)["deliveries"]
    assert row["id"] == "d-again" and row["status"] != "processed"


def test_dev_warns_at_start_when_github_has_no_webhook_secret(tmp_path: Path, app_key: str) -> None:
    env = clean_env(GITHUB_APP_ID="1", GITHUB_APP_PRIVATE_KEY=app_key, ORGSYNC_LOG_FORMAT="json")
    proc = subprocess.Popen([str(ORGSYNC), "dev", "--port", "0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("orgsync dev serving on"), first
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings == [("warning: GitHub is half configured: GITHUB_WEBHOOK_SECRET is not set, "
                         "so every GitHub webhook is refused (401)")], err


# Deep: it waits out the sync job's real retry schedule (about half a minute).
@pytest.mark.deep
def test_an_in_process_resync_that_keeps_failing_says_so_and_exits_nonzero(
        cli_env: dict[str, str], seeded: dict[str, str], tmp_path: Path) -> None:
    env = {**clean_env(), **{k: v for k, v in cli_env.items() if v}, "GITHUB_API_URL": "http://127.0.0.1:1"}
    proc = orgsync(["resync", "acme"], env, tmp_path, timeout=180)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "continue in the background" not in proc.stdout
    # The sync stays owed in the database (the next `orgsync dev` runs it); the
    # command stops once the next retry would fall past its wait.
    assert "gave up on acme: the provider keeps failing" in proc.stdout
    assert "the sync stays owed" in proc.stdout
    assert "JobStatus" not in proc.stdout


def test_the_web_process_warns_at_start_when_github_has_no_webhook_secret(tmp_path: Path, app_key: str) -> None:
    env = clean_env(GITHUB_APP_ID="1", GITHUB_APP_PRIVATE_KEY=app_key, ORGSYNC_LOG_FORMAT="json",
                    DATABASE_URL=f"sqlite:///{tmp_path / 'web.db'}")
    proc = subprocess.Popen([str(GUNICORN), "--bind", "127.0.0.1:0", "--workers", "1", "webhooks.app:create_app()"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # If the warning never comes, stderr ends when this stops gunicorn and the assertion fails.
    stopper = threading.Timer(60, proc.terminate)
    stopper.start()
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "half configured" in line:
                break
    finally:
        stopper.cancel()
        proc.terminate()
        proc.wait(timeout=30)
    assert seen and "half configured" in seen[-1], "".join(seen)
    warning = json.loads(seen[-1])
    assert warning["level"] == "warning" and warning["event"] == (
        "GitHub is half configured: GITHUB_WEBHOOK_SECRET is not set, so every GitHub webhook is refused (401)")


@pytest.mark.parametrize(("args", "message"), [
    (("workspaces", "transfer", "nope", "--to", "user2"), "no workspace 'nope'"),
    (("workspaces", "transfer", "acme", "--to", "ghost"), "ghost"),
    (("workspaces", "subscription", "acme"), "--plan NAME or --none"),
    (("workspaces", "subscription", "acme", "--plan", "bad name"), "plan name"),
    (("resync",), "--all"),
    (("resync", "nope"), "no workspace 'nope'"),
    (("deliveries", "replay", "missing"), "no delivery 'missing'"),
    (("deliveries", "list", "--status", "weird"), "--status must be one of"),
    (("worker",), "REDIS_URL"),
    (("cron",), "REDIS_URL"),
])
def test_errors_are_one_line_and_a_nonzero_exit(cli_env: dict[str, str], seeded: dict[str, str],
                                                args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(main, list(args), env=cli_env)
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output
