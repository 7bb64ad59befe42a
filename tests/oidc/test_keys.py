"""oidc.keys: the issuers' signing keys, cached in process and shared through
Redis, refetched at most once a minute, kept when a fetch fails; exercised
through the verifier that uses them."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
import responses

from demo.fakes.issuer import GITHUB_ISSUER, FakeIssuer
from oidc import keys
from oidc.errors import InvalidToken
from oidc.settings import OidcSettings
from oidc.verifier import OidcVerifier


@pytest.fixture
def verifier_setup(rsps: responses.RequestsMock, fake_redis: Any) -> tuple[FakeIssuer, OidcVerifier]:
    github = FakeIssuer(rsps, GITHUB_ISSUER, "github")
    verifier = OidcVerifier(OidcSettings(), fake_redis, requests.Session())
    verifier.verify(github.mint())
    assert (github.discovery_fetches, github.jwks_fetches) == (1, 1)
    return github, verifier


def _reason(verifier: OidcVerifier, token: str) -> str:
    try:
        verifier.verify(token)
    except InvalidToken as exc:
        assert exc.reason is not None
        return exc.reason
    return "ok"


def test_keys_are_cached_in_process(verifier_setup: tuple[FakeIssuer, OidcVerifier]) -> None:
    github, verifier = verifier_setup
    for _ in range(5):
        verifier.verify(github.mint())
    assert github.jwks_fetches == 1


def test_keys_are_shared_through_redis(
    verifier_setup: tuple[FakeIssuer, OidcVerifier], fake_redis: Any
) -> None:
    github, _ = verifier_setup
    other_process = OidcVerifier(OidcSettings(), fake_redis, requests.Session())
    other_process.verify(github.mint())
    assert github.jwks_fetches == 1


def test_unknown_kid_refetches_once(verifier_setup: tuple[FakeIssuer, OidcVerifier]) -> None:
    github, verifier = verifier_setup
    assert _reason(verifier, github.mint(kid="never-published")) == "unknown_key"
    assert github.jwks_fetches == 2


def test_rotated_key_is_found_with_one_refetch(verifier_setup: tuple[FakeIssuer, OidcVerifier]) -> None:
    github, verifier = verifier_setup
    new = github.rotate_in()
    assert _reason(verifier, github.mint(signing_key=new)) == "ok"
    assert _reason(verifier, github.mint(signing_key=new)) == "ok"
    assert github.jwks_fetches == 2


def test_random_kid_flood_costs_one_fetch_a_minute(
    verifier_setup: tuple[FakeIssuer, OidcVerifier], fake_redis: Any
) -> None:
    github, verifier = verifier_setup
    other_process = OidcVerifier(OidcSettings(), fake_redis, requests.Session())
    for i in range(40):
        target = verifier if i % 2 else other_process
        assert _reason(target, github.mint(kid=f"random-{uuid.uuid4().hex}")) == "unknown_key"
    assert github.jwks_fetches == 2  # the warm-up and one refetch
    # Real tokens keep working during the flood.
    assert _reason(verifier, github.mint()) == "ok"
    assert _reason(other_process, github.mint()) == "ok"


def _break_jwks_500(issuer: FakeIssuer) -> None:
    issuer.jwks_status = 500


def _break_jwks_empty(issuer: FakeIssuer) -> None:
    issuer.jwks_override = {"keys": []}


def _break_jwks_garbage(issuer: FakeIssuer) -> None:
    issuer.jwks_override = {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}


def _break_discovery_no_jwks_uri(issuer: FakeIssuer) -> None:
    issuer.discovery_override = {"issuer": issuer.url}


def _break_discovery_http_jwks_uri(issuer: FakeIssuer) -> None:
    issuer.discovery_override = {"issuer": issuer.url, "jwks_uri": "http://token.actions.githubusercontent.com/k"}


def _break_discovery_500(issuer: FakeIssuer) -> None:
    issuer.discovery_status = 500


BREAKAGES = [
    _break_jwks_500,
    _break_jwks_empty,
    _break_jwks_garbage,
    _break_discovery_no_jwks_uri,
    _break_discovery_http_jwks_uri,
    _break_discovery_500,
]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda f: f.__name__.removeprefix("_break_"))
def test_failed_fetch_keeps_cached_keys(
    verifier_setup: tuple[FakeIssuer, OidcVerifier], fake_redis: Any, breakage: Callable[[FakeIssuer], None]
) -> None:
    github, verifier = verifier_setup
    breakage(github)
    # A rotated key can't be fetched now...
    new = github.rotate_in()
    assert _reason(verifier, github.mint(signing_key=new)) == "unknown_key"
    assert github.discovery_fetches == 2
    # ...but the keys we had still work, in this process and in a fresh one.
    assert _reason(verifier, github.mint()) == "ok"
    assert _reason(OidcVerifier(OidcSettings(), fake_redis, requests.Session()), github.mint()) == "ok"
    assert github.discovery_fetches == 2


def test_outage_at_cold_start_costs_one_fetch_a_minute(rsps: responses.RequestsMock, fake_redis: Any) -> None:
    github = FakeIssuer(rsps, GITHUB_ISSUER, "github")
    github.jwks_status = 500
    verifier = OidcVerifier(OidcSettings(), fake_redis, requests.Session())
    for _ in range(10):
        assert _reason(verifier, github.mint()) == "unknown_key"
    assert github.jwks_fetches == 1


def test_refresh_when_keys_are_old(
    verifier_setup: tuple[FakeIssuer, OidcVerifier], fake_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    github, verifier = verifier_setup

    # A key the issuer withdrew stops working once the cache is refreshed.
    old_key = github.keys[0]
    github.keys[0] = github.new_key()
    monkeypatch.setattr(keys, "KEYS_MAX_AGE", -1)
    assert _reason(verifier, github.mint(signing_key=old_key)) == "unknown_key"
    assert github.jwks_fetches == 2
    assert _reason(verifier, github.mint()) == "ok"
