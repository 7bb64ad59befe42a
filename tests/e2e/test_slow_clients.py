"""End to end: the Procfile's web line under slow clients.

The web process is started from the Procfile's own command line (gunicorn
with its settings), on SQLite and the embedded Redis stand-in. Slow clients
open requests and trickle their bodies, or stop sending; signed webhook
deliveries sent meanwhile must still be answered, and the slow clients are
cut off by the body read deadline (408) rather than holding a thread for
ever. What is asserted is the answers, never the time they took (the HTTP
client's timeout is GitHub's own: it gives up on a delivery after 10 s).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from sync.providers.signatures import github_headers
from tests.conftest import ROOT, free_port
from tests.e2e.test_procfile import BIN, procfile
from webhooks.app import MAX_BODY

SECRET = "slow-clients-secret"
# More slow clients than the old Procfile had workers (2 sync workers: two
# slow clients were enough to stall every delivery).
TRICKLING = 6
SILENT = 2


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("slow-clients")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items()
           if not k.startswith(("ORGSYNC_", "GITHUB_", "GITLAB_", "OIDC_", "REDIS_", "DATABASE_", "WEB_"))},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp / 'orgsync.db'}",
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": "http://127.0.0.1:9",
    }
    entries = procfile()
    release = subprocess.run(entries["release"], shell=True, cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120, check=False)
    assert release.returncode == 0, release.stderr
    log = (tmp / "web.log").open("wb")
    proc = subprocess.Popen(entries["web"], shell=True, cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert proc.poll() is None, (tmp / "web.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        yield base
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


def _status_line(sock: socket.socket) -> str:
    sock.settimeout(60)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


class SlowClient(threading.Thread):
    """Opens a webhook request announcing a body it then trickles (one byte
    every half second) or never sends; records the status line it gets."""

    def __init__(self, base: str, trickle: bool) -> None:
        super().__init__(daemon=True)
        host, port = base.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.trickle = trickle
        self.answer = ""
        self.started_sending = threading.Event()

    def run(self) -> None:
        with socket.create_connection(self.address) as sock:
            sock.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"X-GitHub-Event: ping\r\nX-GitHub-Delivery: slow\r\nContent-Length: 100000\r\n\r\n{")
            self.started_sending.set()
            if self.trickle:
                sock.setblocking(False)
                for _ in range(200):  # far longer than the read deadline
                    try:
                        sock.send(b" ")
                        if sock.recv(4096, socket.MSG_PEEK):
                            break  # answered
                    except BlockingIOError:
                        pass
                    except OSError:
                        break
                    time.sleep(0.5)
                sock.setblocking(True)
            self.answer = _status_line(sock)


def _deliver(base: str) -> tuple[int, dict[str, str]]:
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    headers = github_headers(body, SECRET, "ping", str(uuid.uuid4()))
    req = urllib.request.Request(f"{base}/webhooks/github", data=body, headers=headers, method="POST")
    # GitHub gives up after 10 s and does not retry: a timeout here is a lost delivery.
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def test_slow_clients_do_not_block_signed_deliveries_and_are_cut_off(web: str) -> None:
    slow = [SlowClient(web, trickle=True) for _ in range(TRICKLING)]
    slow += [SlowClient(web, trickle=False) for _ in range(SILENT)]
    for client in slow:
        client.start()
    for client in slow:
        assert client.started_sending.wait(30)

    answers = [_deliver(web) for _ in range(5)]
    assert [status for status, _ in answers] == [200] * 5
    assert all(body["status"] == "pong" for _, body in answers)

    for client in slow:
        client.join(timeout=90)
    # Trickling or silent, the body deadline ends the request: the thread is
    # free again and the client is told why.
    assert [c.answer.split(" ")[1] if " " in c.answer else c.answer for c in slow] == ["408"] * len(slow)


def test_a_chunked_body_over_the_limit_is_refused_through_gunicorn(web: str) -> None:
    host, port = web.removeprefix("http://").split(":")
    chunk = b" " * (1 << 20)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"X-GitHub-Event: ping\r\nX-GitHub-Delivery: big\r\nX-Hub-Signature-256: sha256=00\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            sock.sendall(b"2\r\n{}\r\n")
            for _ in range(MAX_BODY // len(chunk) + 2):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may answer and close before the rest is sent
        status = _status_line(sock)
    assert status.split(" ")[1] == "413", status
