"""oidc.verifier: failing closed without Redis, and the replay guard under
concurrent use of one token."""
from __future__ import annotations

import os
import threading
import uuid
from typing import Any

import fakeredis
import pytest
import redis as redis_lib
import requests
import responses

from demo.fakes.issuer import GITHUB_ISSUER, FakeIssuer
from oidc.errors import OidcUnavailable, TokenReplayed
from oidc.settings import OidcSettings
from oidc.verifier import OidcVerifier


def test_redis_down_fails_closed(rsps: responses.RequestsMock) -> None:
    github = FakeIssuer(rsps, GITHUB_ISSUER, "github")
    server = fakeredis.FakeServer()
    server.connected = False  # every command raises ConnectionError
    down = fakeredis.FakeRedis(server=server)
    verifier = OidcVerifier(OidcSettings(), down, requests.Session())
    with pytest.raises(OidcUnavailable) as caught:
        verifier.verify(github.mint())
    assert (caught.value.status, caught.value.error) == (503, "unavailable")


def _race_verifier(verifier: OidcVerifier, token: str, racers: int = 16) -> list[str]:
    barrier = threading.Barrier(racers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        try:
            verifier.verify(token)
            outcome = "ok"
        except TokenReplayed:
            outcome = "replayed"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


def test_verifier_replay_race_on_fakeredis(rsps: responses.RequestsMock, fake_redis: Any) -> None:
    github = FakeIssuer(rsps, GITHUB_ISSUER, "github")
    verifier = OidcVerifier(OidcSettings(), fake_redis, requests.Session())
    verifier.verify(github.mint())  # warm the keys
    assert _race_verifier(verifier, github.mint()) == ["ok"] + ["replayed"] * 15


@pytest.mark.redis
def test_verifier_replay_race_on_real_redis(rsps: responses.RequestsMock) -> None:
    url = os.environ.get("ORGSYNC_TEST_REDIS_URL")
    if not url:
        pytest.skip("ORGSYNC_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/15)")
    real = redis_lib.Redis.from_url(url)
    try:
        real.ping()
    except redis_lib.RedisError as exc:
        pytest.skip(f"ORGSYNC_TEST_REDIS_URL is not reachable: {type(exc).__name__}")
    # A per-run issuer, so that keys cached by earlier runs don't interfere.
    issuer_url = f"{GITHUB_ISSUER}/test-{uuid.uuid4().hex[:8]}"
    github = FakeIssuer(rsps, issuer_url, "github")
    verifier = OidcVerifier(OidcSettings(github_issuers=(issuer_url,)), real, requests.Session())
    try:
        verifier.verify(github.mint())
        assert _race_verifier(verifier, github.mint()) == ["ok"] + ["replayed"] * 15
    finally:
        for key in real.scan_iter(f"orgsync:oidc:jwks*{issuer_url}"):
            real.delete(key)
