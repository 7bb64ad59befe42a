"""The body read deadline (webhooks/limits.py) without a server: a body
that arrives too slowly, or stops, is answered 408 and records nothing.
Through gunicorn it is shown in tests/e2e/test_slow_clients.py."""
from __future__ import annotations

import io
import json
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from sync.providers.signatures import github_headers
from tests.app_world import GITHUB_SECRET, World
from tests.webhooks.conftest import Clock
from webhooks.limits import BODY_READ_SECONDS, BodyReadDeadline


class SlowInput(io.RawIOBase):
    """A body that costs ``per_read`` seconds of the clock per read, or
    whose reads time out (the client went quiet)."""

    def __init__(self, body: bytes, clock: Clock, per_read: float, silent: bool = False) -> None:
        self.body = io.BytesIO(body)
        self.clock = clock
        self.per_read = per_read
        self.silent = silent

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.silent:
            raise TimeoutError("timed out")
        self.clock.now += self.per_read
        return self.body.read(min(size, 16) if size and size > 0 else 16)


CASES: list[tuple[str, float, bool, int]] = [
    ("prompt", 0.0, False, 200),
    ("trickling past the deadline", 1.0, False, 408),
    ("silent", 0.0, True, 408),
]


@pytest.mark.parametrize(("case", "per_read", "silent", "status"), CASES, ids=[c[0] for c in CASES])
def test_body_read_deadline(world: World, case: str, per_read: float, silent: bool, status: int) -> None:
    clock = Clock()
    inner: Any = world.app.wsgi_app.app  # type: ignore[attr-defined]
    world.app.wsgi_app = BodyReadDeadline(inner, clock=clock)  # type: ignore[method-assign]
    body = json.dumps({"zen": "x" * 400, "hook_id": 1}).encode()
    assert len(body) / 16 * per_read > BODY_READ_SECONDS or per_read == 0
    environ = EnvironBuilder(path="/webhooks/github", method="POST", data=body,
                             headers=github_headers(body, GITHUB_SECRET, "ping")).get_environ()
    environ["wsgi.input"] = SlowInput(body, clock, per_read, silent)
    before = world.counts()
    resp = world.client.open(Request(environ))
    assert resp.status_code == status, resp.get_json()
    if status == 408:
        assert resp.get_json()["error"] == "request_timeout"
        assert world.counts() == before
    else:
        assert resp.get_json()["status"] == "pong"


def test_the_watchdog_cuts_off_a_late_body_and_forgets_finished_requests() -> None:
    import socket
    import time

    from webhooks.limits import _Watchdog

    dog = _Watchdog()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        now = time.monotonic()
        # Two requests that finish in time, then one whose body never ends.
        done = [dog.watch(now + 0.05, pairs[0][0]), dog.watch(now + 0.1, pairs[1][0])]
        late = dog.watch(now + 0.2, pairs[2][0])
        for token in done:
            dog.done(token)
        pairs[2][0].settimeout(5)
        assert pairs[2][0].recv(1) == b""  # reading side shut at the deadline
        assert time.monotonic() - now >= 0.2
        for sock, _ in pairs[:2]:  # the finished requests' sockets were left alone
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
        deadline = time.monotonic() + 2
        while dog._heap and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dog._heap == [] and late not in dog._live
    finally:
        for a, b in pairs:
            a.close()
            b.close()
