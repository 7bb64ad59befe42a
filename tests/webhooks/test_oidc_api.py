"""CI tenant resolution through POST /v1/oidc/resolve (the oidc package's own
tests are in tests/oidc/).

Keys and tokens are made here (demo/fakes/issuer.py); the issuers' discovery
documents and JWKS are served through ``responses`` with fetch counters, the
store is a real SQLite database, Redis is fakeredis (or real Redis for the
tests marked ``redis``).
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import responses

from demo.fakes.issuer import DROP, GITHUB_ISSUER, GITLAB_ISSUER, FakeIssuer, b64url
from models import store
from models.base import Base
from models.config import Settings
from oidc.verifier import REPLAYS_COUNTER
from runtime.process import Runtime
from sync.errors import NotFound, TransientProviderError
from sync.providers.base import ProviderOrg
from tests.models.test_config import ENTERPRISE_SLUG_ISSUER, GHES_ISSUER, SELF_MANAGED_GITLAB
from webhooks import serialize
from webhooks.app import create_app
from webhooks.oidc_api import RESOLVER_EXTENSION

RESOLVE = "/v1/oidc/resolve"


# --------------------------------------------------------------------------- fakes


class FakeNamespaceResolver:
    """GitLab namespace id → top-level group, counting API calls."""

    def __init__(self, roots: dict[int, ProviderOrg]) -> None:
        self.roots = roots
        self.calls: list[int] = []
        self.down: set[int] = set()

    def get_top_level_group(self, namespace_id: int) -> ProviderOrg:
        self.calls.append(namespace_id)
        if namespace_id in self.down:
            raise TransientProviderError("GitLab answered 502")
        try:
            return self.roots[namespace_id]
        except KeyError:
            raise NotFound(f"namespace {namespace_id}") from None


GITLAB_ACME = ProviderOrg("gitlab", 72, "acme")
GITLAB_ORPHAN_ROOT = ProviderOrg("gitlab", 501, "orphan")


@dataclass
class World:
    app: Any
    runtime: Runtime
    redis: Any
    rsps: responses.RequestsMock
    github: FakeIssuer
    gitlab: FakeIssuer
    resolver: FakeNamespaceResolver
    ws: dict[str, str] = field(default_factory=dict)  # label → workspace id

    def post(self, token: str | None = None, workspace: str | None = None, **kwargs: Any) -> Any:
        if "data" not in kwargs and "json" not in kwargs:
            body: dict[str, Any] = {"token": token}
            if workspace is not None:
                body["workspace"] = workspace
            kwargs["json"] = body
        return self.app.test_client().post(RESOLVE, **kwargs)

    def activity(self, label: str) -> list[dict[str, Any]]:
        with self.runtime.session() as session:
            rows = store.list_activity(session, workspace_id=self.ws[label], limit=1000)
            return [serialize.activity(store.activity_view(a)) for a in rows if a.action.startswith("oidc.")]

    def fetches(self) -> int:
        return len(self.rsps.calls)


def _seed(runtime: Runtime) -> dict[str, str]:
    with runtime.session() as s:
        octocat = store.create_user(s, "octocat", identity=("github", 583231, "octocat"))
        store.create_user(s, "nosub", identity=("github", 4040, "nosub"))
        acme = store.create_provider_workspace(s, "github", 9919, "acme", actor="operator", owner=octocat)
        globex = store.create_provider_workspace(s, "github", 5555, "globex", actor="operator", owner=octocat)
        initech = store.create_provider_workspace(s, "github", 6666, "initech", actor="operator", owner=octocat)
        # "umbrella" (id 7777) was deleted on GitHub; its name is free for
        # anyone to register there (as org id 8888, say).
        umbrella = store.create_provider_workspace(s, "github", 7777, "umbrella", actor="operator", owner=octocat)
        gl_acme = store.create_provider_workspace(s, "gitlab", 72, "acme", actor="operator", owner=octocat)
        personal = store.get_personal_workspace_for_identity(s, "github", 583231)
        nosub_personal = store.get_personal_workspace_for_identity(s, "github", 4040)
        assert personal is not None and nosub_personal is not None
        for ws in (acme, initech, umbrella, gl_acme, personal):
            store.set_subscription(s, ws, "team")
        store.suspend(s, initech, actor="operator")
        store.disconnect(s, umbrella, actor="operator", reason="org deleted")
        return {
            "acme": acme.id,
            "globex": globex.id,
            "initech": initech.id,
            "umbrella": umbrella.id,
            "gitlab-acme": gl_acme.id,
            "octocat": personal.id,
            "nosub": nosub_personal.id,
        }


def _make_world(tmp_path: Any, fake_redis: Any, rsps: responses.RequestsMock, **settings: Any) -> World:
    db = f"sqlite:///{tmp_path / 'orgsync.db'}"
    runtime = Runtime(Settings(database_url=db, **settings), redis_client=fake_redis)
    Base.metadata.create_all(runtime.engine)
    ids = _seed(runtime)
    app = create_app(runtime=runtime)
    resolver = FakeNamespaceResolver({72: GITLAB_ACME, 73: GITLAB_ACME, 500: GITLAB_ORPHAN_ROOT})
    app.extensions[RESOLVER_EXTENSION] = resolver
    return World(
        app=app,
        runtime=runtime,
        redis=fake_redis,
        rsps=rsps,
        github=FakeIssuer(rsps, GITHUB_ISSUER, "github"),
        gitlab=FakeIssuer(rsps, GITLAB_ISSUER, "gitlab", jwks_uri="https://gitlab.com/oauth/discovery/keys"),
        resolver=resolver,
        ws=ids,
    )


@pytest.fixture
def world(tmp_path: Any, fake_redis: Any, rsps: responses.RequestsMock) -> World:
    return _make_world(tmp_path, fake_redis, rsps)


def assert_error(resp: Any, status: int, error: str, reason: str | None = None) -> None:
    body = resp.get_json()
    assert resp.status_code == status, body
    assert body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"]
    if reason is None:
        assert "reason" not in body, body
    else:
        assert body["reason"] == reason, body


# --------------------------------------------------------------------------- happy paths

Mint = Callable[[World], str]

HAPPY: list[tuple[str, Mint, str, str, dict[str, Any], str]] = [
    ("github-org", lambda w: w.github.mint(), "acme", "github", {"login": "acme", "id": 9919}, "acme/app"),
    (
        "github-user",
        lambda w: w.github.mint(
            repository="octocat/site", repository_owner="octocat", repository_owner_id="583231",
            sub="repo:octocat/site:ref:refs/heads/main",
        ),
        "octocat",
        "github",
        {"login": "octocat", "id": 583231},
        "octocat/site",
    ),
    ("gitlab-top-level", lambda w: w.gitlab.mint(), "gitlab-acme", "gitlab", {"login": "acme", "id": 72}, "acme/app"),
    (
        "gitlab-subgroup",
        lambda w: w.gitlab.mint(namespace_id="73", namespace_path="acme/platform", project_path="acme/platform/api"),
        "gitlab-acme",
        "gitlab",
        {"login": "acme/platform", "id": 73},
        "acme/platform/api",
    ),
]


@pytest.mark.parametrize(
    ("mint", "label", "provider", "owner", "repository"),
    [case[1:] for case in HAPPY],
    ids=[case[0] for case in HAPPY],
)
def test_resolves_the_owners_workspace(
    world: World, mint: Mint, label: str, provider: str, owner: dict[str, Any], repository: str
) -> None:
    token = mint(world)
    claims = json.loads(_b64decode(token.split(".")[1]))

    resp = world.post(token)

    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["workspace"]["id"] == world.ws[label]
    assert set(body["workspace"]) >= {"id", "name", "kind", "provider", "status", "owner", "subscription"}
    assert body["provider"] == provider
    assert body["owner"] == owner
    assert body["repository"] == repository
    assert body["subject"] == claims["sub"]
    [entry] = world.activity(label)
    assert entry["action"] == "oidc.resolved"
    assert entry["actor"] == f"ci:{provider}"
    assert entry["details"]["jti"] == claims["jti"]
    assert entry["details"]["repository"] == repository


def test_gitlab_subgroup_root_is_looked_up_by_id_once_and_cached(world: World) -> None:
    sub: dict[str, Any] = {"namespace_id": "73", "namespace_path": "acme/platform", "project_path": "acme/platform/api"}
    assert world.post(world.gitlab.mint(**sub)).status_code == 200
    assert world.post(world.gitlab.mint(**sub)).status_code == 200
    assert world.resolver.calls == [73]
    # A project directly in the top-level group needs no API call at all.
    assert world.post(world.gitlab.mint()).status_code == 200
    assert world.resolver.calls == [73]


def test_bearer_header_is_accepted(world: World) -> None:
    resp = world.app.test_client().post(RESOLVE, headers={"Authorization": f"Bearer {world.github.mint()}"})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["workspace"]["id"] == world.ws["acme"]


@pytest.mark.parametrize("ref", ["acme", "ACME", "github:acme", "github:9919", "<id>"])
def test_explicit_workspace_naming_the_tenant_is_accepted(world: World, ref: str) -> None:
    ref = world.ws["acme"] if ref == "<id>" else ref
    resp = world.post(world.github.mint(), workspace=ref)
    assert resp.status_code == 200, resp.get_json()


def test_github_owner_audience_accepted_when_enabled(tmp_path: Any, fake_redis: Any, rsps: Any) -> None:
    w = _make_world(tmp_path, fake_redis, rsps, oidc_accept_github_owner_audience=True)
    assert w.post(w.github.mint(aud="https://github.com/acme")).status_code == 200
    # Only the owner the token names: another owner's URL is still refused.
    assert_error(w.post(w.github.mint(aud="https://github.com/globex")), 401, "invalid_token", "wrong_audience")
    # And GitLab tokens never get it.
    assert_error(w.post(w.gitlab.mint(aud="https://github.com/acme")), 401, "invalid_token", "wrong_audience")


# --------------------------------------------------------------------------- attacks


def _b64decode(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _tamper(token: str) -> str:
    """Same header and signature, a payload claiming another owner."""
    header, payload, sig = token.split(".")
    claims = json.loads(_b64decode(payload))
    claims["repository_owner_id"] = "5555"
    return f"{header}.{b64url(json.dumps(claims).encode())}.{sig}"


def _now(delta: int = 0) -> int:
    return int(time.time()) + delta


ATTACKS: list[tuple[str, Mint, int, str, str | None]] = [
    # Algorithm and key confusion.
    ("alg-none", lambda w: w.github.mint(alg="none"), 401, "invalid_token", "algorithm"),
    ("alg-None-case", lambda w: w.github.mint(alg="None"), 401, "invalid_token", "algorithm"),
    ("hs256-public-key-secret", lambda w: w.github.mint(alg="HS256"), 401, "invalid_token", "algorithm"),
    ("rs512", lambda w: w.github.mint(headers={"alg": "RS512"}), 401, "invalid_token", "algorithm"),
    (
        "other-key-reusing-real-kid",
        lambda w: w.github.mint(signing_key=FakeIssuer.new_key(kid=w.github.key.kid)),
        401, "invalid_token", "bad_signature",
    ),
    ("tampered-payload", lambda w: _tamper(w.github.mint()), 401, "invalid_token", "bad_signature"),
    ("no-kid", lambda w: w.github.mint(kid=DROP), 401, "invalid_token", "missing_claim"),
    # PyJWT itself refuses a non-string kid while parsing the header.
    ("kid-not-a-string", lambda w: w.github.mint(kid=7), 400, "malformed_token", None),
    ("unknown-kid", lambda w: w.github.mint(kid="not-a-published-key"), 401, "invalid_token", "unknown_key"),
    # Issuers.
    (
        "gitlab-issuer-github-key",
        lambda w: w.github.mint(iss=GITLAB_ISSUER),
        401, "invalid_token", "unknown_key",
    ),
    ("unknown-issuer", lambda w: w.github.mint(iss="https://evil.example"), 401, "invalid_token", "wrong_issuer"),
    ("issuer-trailing-slash", lambda w: w.gitlab.mint(iss=GITLAB_ISSUER + "/"), 401, "invalid_token", "wrong_issuer"),
    (
        "issuer-http",
        lambda w: w.github.mint(iss="http://token.actions.githubusercontent.com"),
        401, "invalid_token", "wrong_issuer",
    ),
    ("issuer-not-a-string", lambda w: w.github.mint(iss=["https://gitlab.com"]), 401, "invalid_token", "wrong_issuer"),
    ("issuer-missing", lambda w: w.github.mint(iss=DROP), 401, "invalid_token", "missing_claim"),
    # Audiences.
    ("aud-missing", lambda w: w.github.mint(aud=DROP), 401, "invalid_token", "missing_claim"),
    (
        "aud-github-default-option-off",
        lambda w: w.github.mint(aud="https://github.com/acme"),
        401, "invalid_token", "wrong_audience",
    ),
    ("aud-other-service", lambda w: w.github.mint(aud="sigstore"), 401, "invalid_token", "wrong_audience"),
    ("aud-list-with-ours", lambda w: w.github.mint(aud=["orgsync", "vault"]), 401, "invalid_token", "wrong_audience"),
    ("aud-list-only-ours", lambda w: w.github.mint(aud=["orgsync"]), 401, "invalid_token", "wrong_audience"),
    ("aud-case", lambda w: w.github.mint(aud="OrgSync"), 401, "invalid_token", "wrong_audience"),
    # Time.
    ("expired-beyond-leeway", lambda w: w.github.mint(exp=_now(-31), iat=_now(-400), nbf=_now(-400)), 401,
     "invalid_token", "expired"),
    ("nbf-in-future", lambda w: w.github.mint(nbf=_now(120)), 401, "invalid_token", "not_yet_valid"),
    ("iat-in-future", lambda w: w.github.mint(iat=_now(120)), 401, "invalid_token", "not_yet_valid"),
    # Required claims, and claims of the wrong type.
    ("exp-missing", lambda w: w.github.mint(exp=DROP), 401, "invalid_token", "missing_claim"),
    ("exp-numeric-string", lambda w: w.github.mint(exp=str(_now(300))), 401, "invalid_token", "missing_claim"),
    ("exp-word", lambda w: w.github.mint(exp="tomorrow"), 401, "invalid_token", "missing_claim"),
    ("exp-bool", lambda w: w.github.mint(exp=True), 401, "invalid_token", "expired"),  # PyJWT: int(True) == 1
    ("exp-float", lambda w: w.github.mint(exp=float(_now(300))), 401, "invalid_token", "missing_claim"),
    ("iat-missing", lambda w: w.github.mint(iat=DROP), 401, "invalid_token", "missing_claim"),
    ("nbf-string", lambda w: w.github.mint(nbf=str(_now())), 401, "invalid_token", "missing_claim"),
    ("jti-missing", lambda w: w.github.mint(jti=DROP), 401, "invalid_token", "missing_claim"),
    ("jti-integer", lambda w: w.github.mint(jti=12345), 401, "invalid_token", "missing_claim"),
    ("sub-missing", lambda w: w.github.mint(sub=DROP), 401, "invalid_token", "missing_claim"),
    ("owner-id-integer", lambda w: w.github.mint(repository_owner_id=9919), 401, "invalid_token", "missing_claim"),
    ("owner-id-missing", lambda w: w.github.mint(repository_owner_id=DROP), 401, "invalid_token", "missing_claim"),
    ("owner-id-padded", lambda w: w.github.mint(repository_owner_id="09919"), 401, "invalid_token", "missing_claim"),
    # 19 digits pass a digits check but overflow the BIGINT id columns.
    ("owner-id-19-digits", lambda w: w.github.mint(repository_owner_id="9999999999999999999"), 401,
     "invalid_token", "missing_claim"),
    ("owner-id-bigint-max-plus-one", lambda w: w.github.mint(repository_owner_id=str(2**63)), 401,
     "invalid_token", "missing_claim"),
    ("namespace-id-19-digits", lambda w: w.gitlab.mint(namespace_id="9223372036854775808"), 401,
     "invalid_token", "missing_claim"),
    # A validly signed token that lives for years is a standing credential.
    ("lifetime-ten-years", lambda w: w.github.mint(iat=_now(), exp=_now(10 * 365 * 86400)), 401,
     "invalid_token", "lifetime_too_long"),
    ("lifetime-just-over-default", lambda w: w.gitlab.mint(iat=_now(-60), exp=_now(14400 - 60 + 1)), 401,
     "invalid_token", "lifetime_too_long"),
    # Another instance's issuer naming one of our ids (see test_ids_of_another_instance_never_resolve).
    ("ghes-issuer-same-owner-id", lambda w: w.github.mint(iss="https://ghe.example.com/_services/token"), 401,
     "invalid_token", "wrong_issuer"),
    ("self-managed-gitlab-same-namespace-id", lambda w: w.gitlab.mint(iss="https://gitlab.example.com"), 401,
     "invalid_token", "wrong_issuer"),
    ("namespace-id-integer", lambda w: w.gitlab.mint(namespace_id=72), 401, "invalid_token", "missing_claim"),
    # A GitHub-shaped token from the GitLab issuer has no namespace_id.
    (
        "github-claims-from-gitlab",
        lambda w: w.gitlab.mint(claims=w.github.claims(iss=GITLAB_ISSUER)),
        401, "invalid_token", "missing_claim",
    ),
    # Tenant by numeric id only (account-name reuse).
    (
        "owner-name-right-id-wrong",
        lambda w: w.github.mint(repository_owner="acme", repository_owner_id="424242"),
        404, "no_workspace", None,
    ),
    (
        "deleted-org-name-reused",
        lambda w: w.github.mint(repository="umbrella/app", repository_owner="umbrella", repository_owner_id="8888"),
        404, "no_workspace", None,
    ),
    (
        "user-name-right-id-wrong",
        lambda w: w.github.mint(repository_owner="octocat", repository_owner_id="583232"),
        404, "no_workspace", None,
    ),
    (
        "gitlab-path-right-id-unknown",
        lambda w: w.gitlab.mint(namespace_id="600", namespace_path="acme/platform"),
        404, "no_workspace", None,
    ),
    (
        "gitlab-subgroup-of-unconnected-group",
        lambda w: w.gitlab.mint(namespace_id="500", namespace_path="acme/x"),
        404, "no_workspace", None,
    ),
    (
        "gitlab-id-of-github-org",  # a GitLab id equal to a GitHub org id is another tenant
        lambda w: w.gitlab.mint(namespace_id="9919", namespace_path="acme"),
        404, "no_workspace", None,
    ),
    # Checks once the tenant is known.
    ("suspended", lambda w: w.github.mint(repository_owner="initech", repository_owner_id="6666"), 403,
     "workspace_inactive", None),
    ("disconnected", lambda w: w.github.mint(repository_owner="umbrella", repository_owner_id="7777"), 403,
     "workspace_inactive", None),
    ("no-subscription", lambda w: w.github.mint(repository_owner="globex", repository_owner_id="5555"), 402,
     "subscription_required", None),
    ("personal-no-subscription", lambda w: w.github.mint(repository_owner="nosub", repository_owner_id="4040"),
     402, "subscription_required", None),
]


@pytest.mark.parametrize(
    ("mint", "status", "error", "reason"),
    [case[1:] for case in ATTACKS],
    ids=[case[0] for case in ATTACKS],
)
def test_refuses(world: World, mint: Mint, status: int, error: str, reason: str | None) -> None:
    assert_error(world.post(mint(world)), status, error, reason)


@pytest.mark.parametrize(
    ("mint", "label"),
    [
        (lambda w: w.github.mint(exp=_now(-20), iat=_now(-400), nbf=_now(-400)), "acme"),  # expired within leeway
        (lambda w: w.github.mint(nbf=_now(20)), "acme"),
        (lambda w: w.github.mint(iat=_now(20)), "acme"),
        (lambda w: w.github.mint(nbf=DROP), "acme"),  # nbf is optional
    ],
    ids=["expired-within-leeway", "nbf-within-leeway", "iat-within-leeway", "no-nbf"],
)
def test_leeway_and_optional_nbf(world: World, mint: Mint, label: str) -> None:
    resp = world.post(mint(world))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["workspace"]["id"] == world.ws[label]


def test_keys_named_in_the_token_header_are_never_used(world: World) -> None:
    attacker = FakeIssuer.new_key(kid="attacker")
    token = world.github.mint(
        signing_key=attacker,
        headers={"jku": "https://evil.example/jwks", "jwk": attacker.public_jwk, "x5u": "https://evil.example/c"},
    )
    assert_error(world.post(token), 401, "invalid_token", "unknown_key")
    assert all("evil.example" not in (call.request.url or "") for call in world.rsps.calls)


def test_gitlab_api_down_is_503_and_the_same_token_can_retry(world: World) -> None:
    world.resolver.roots[74] = GITLAB_ACME
    world.resolver.down.add(74)
    token = world.gitlab.mint(namespace_id="74", namespace_path="acme/ops")
    assert_error(world.post(token), 503, "unavailable")
    world.resolver.down.clear()
    assert world.post(token).status_code == 200
    assert_error(world.post(token), 401, "token_replayed")


@pytest.mark.parametrize(
    "iss",
    ["https://evil.example", GITLAB_ISSUER + "/", "http://gitlab.com", "https://token.actions.githubusercontent.com.evil.example"],
)
def test_unknown_issuer_causes_no_fetch(world: World, iss: str) -> None:
    assert_error(world.post(world.gitlab.mint(iss=iss)), 401, "invalid_token", "wrong_issuer")
    assert world.fetches() == 0


@pytest.mark.parametrize(
    ("ref", "label"),
    [("octocat", "acme"), ("gitlab:acme", "acme"), ("no-such-workspace", "acme"), ("acme", "gitlab-acme")],
)
def test_token_for_one_workspace_asking_for_another(world: World, ref: str, label: str) -> None:
    issuer = world.github if label == "acme" else world.gitlab
    resp = world.post(issuer.mint(), workspace=ref)
    assert_error(resp, 403, "workspace_mismatch")
    [entry] = world.activity(label)
    assert entry["action"] == "oidc.refused"
    assert entry["details"]["reason"] == "workspace_mismatch"


@pytest.mark.parametrize(
    ("owner", "owner_id", "label", "status", "error"),
    [
        ("initech", "6666", "initech", 403, "workspace_inactive"),
        ("globex", "5555", "globex", 402, "subscription_required"),
    ],
)
def test_refusals_are_logged_on_the_workspace(
    world: World, owner: str, owner_id: str, label: str, status: int, error: str
) -> None:
    token = world.github.mint(repository_owner=owner, repository_owner_id=owner_id)
    assert_error(world.post(token), status, error)
    [entry] = world.activity(label)
    assert entry["action"] == "oidc.refused"
    assert entry["actor"] == "ci:github"
    assert entry["details"]["reason"] == error
    assert token not in json.dumps(entry)


# --------------------------------------------------------------------------- malformed bodies


_RS256_HEADER = b64url(json.dumps({"alg": "RS256", "kid": "k"}).encode())

MALFORMED: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty", {"data": b""}, 400, "malformed_token"),
    ("whitespace", {"data": b"  \n"}, 400, "malformed_token"),
    ("list", {"data": b"[]"}, 400, "malformed_token"),
    ("number", {"data": b"12345"}, 400, "malformed_token"),
    ("null", {"data": b"null"}, 400, "malformed_token"),
    ("json-string", {"data": b'"not-a-jwt"'}, 400, "malformed_token"),
    ("bad-json", {"data": b"{"}, 400, "malformed_token"),
    ("not-utf8", {"data": b"\xff\xfe\x00"}, 400, "malformed_token"),
    ("deep-nesting", {"data": b"[" * 20000}, 400, "malformed_token"),
    ("token-null", {"json": {"token": None}}, 400, "malformed_token"),
    ("token-missing", {"json": {"workspace": "acme"}}, 400, "malformed_token"),
    ("token-number", {"json": {"token": 12345}}, 400, "malformed_token"),
    ("token-list", {"json": {"token": ["a.b.c"]}}, 400, "malformed_token"),
    ("token-empty", {"json": {"token": ""}}, 400, "malformed_token"),
    ("not-a-jwt", {"json": {"token": "not-a-jwt"}}, 400, "malformed_token"),
    ("two-dots-garbage", {"json": {"token": "a.b.c"}}, 400, "malformed_token"),
    ("four-segments", {"json": {"token": "a.b.c.d"}}, 400, "malformed_token"),
    ("non-ascii", {"json": {"token": "é.é.é"}}, 400, "malformed_token"),
    ("header-not-object", {"json": {"token": f"{b64url(b'[1]')}.{b64url(b'{}')}.sig"}}, 400, "malformed_token"),
    ("payload-not-object", {"json": {"token": _RS256_HEADER + "." + b64url(b"[1]") + ".c2ln"}},
     400, "malformed_token"),
    ("workspace-number", {"json": {"token": "<valid>", "workspace": 5}}, 400, "malformed_token"),
    ("workspace-empty", {"json": {"token": "<valid>", "workspace": ""}}, 400, "malformed_token"),
    ("basic-auth", {"headers": {"Authorization": "Basic Zm9vOmJhcg=="}}, 400, "malformed_token"),
    ("bearer-empty", {"headers": {"Authorization": "Bearer "}}, 400, "malformed_token"),
    ("bearer-megabyte", {"headers": {"Authorization": "Bearer " + "a" * 1_000_000}}, 400, "malformed_token"),
    ("body-megabyte", {"json": {"token": "a" * 1_000_000}}, 413, "payload_too_large"),
    ("token-over-limit", {"json": {"token": "a." * 9000}}, 400, "malformed_token"),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "error"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_requests(world: World, kwargs: dict[str, Any], status: int, error: str) -> None:
    if "json" in kwargs and kwargs["json"].get("token") == "<valid>":
        kwargs = {"json": {**kwargs["json"], "token": world.github.mint()}}
    resp = world.app.test_client().post(RESOLVE, **kwargs)
    assert_error(resp, status, error)
    assert world.fetches() == 0


def test_body_and_header_with_different_tokens_are_refused(world: World) -> None:
    resp = world.app.test_client().post(
        RESOLVE, json={"token": world.github.mint()}, headers={"Authorization": f"Bearer {world.github.mint()}"}
    )
    assert_error(resp, 400, "malformed_token")


# --------------------------------------------------------------------------- replay


def test_same_token_twice(world: World) -> None:
    token = world.github.mint()
    assert world.post(token).status_code == 200
    assert_error(world.post(token), 401, "token_replayed")
    # Through the header it is the same token.
    resp = world.app.test_client().post(RESOLVE, headers={"Authorization": f"Bearer {token}"})
    assert_error(resp, 401, "token_replayed")
    # The tenant sees that its token was replayed, once: further replays
    # are counted and logged, not written to the change feed.
    entries = world.activity("acme")
    assert [(e["action"], e["details"].get("reason")) for e in entries] == [
        ("oidc.resolved", None),
        ("oidc.refused", "token_replayed"),
    ]


def test_a_replay_flood_writes_one_change_feed_entry_and_counts_every_replay(world: World) -> None:
    token = world.github.mint()
    assert world.post(token).status_code == 200
    for _ in range(50):
        assert_error(world.post(token), 401, "token_replayed")
    with world.runtime.session() as s:
        feed = [a for a in store.list_activity(s, limit=1000) if a.action.startswith("oidc.")]
    assert [a.action for a in feed] == ["oidc.resolved", "oidc.refused"]
    assert int(world.redis.get(REPLAYS_COUNTER)) == 50
    metrics = world.app.test_client().get("/metrics").get_data(as_text=True)
    assert "orgsync_oidc_replays_total 50.0" in metrics
    # Another token's replay is its own first one.
    other = world.github.mint()
    assert world.post(other).status_code == 200
    assert_error(world.post(other), 401, "token_replayed")
    assert [e["action"] for e in world.activity("acme")] == ["oidc.resolved", "oidc.refused"] * 2


# --------------------------------------------------------------------------- instances

# (settings that put two instances' issuers in one list, by hand; the issuer
# of the synced instance; the other instance's issuer; provider)
TWO_INSTANCES: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("gitlab.com-synced", {"oidc_gitlab_issuers": (GITLAB_ISSUER, SELF_MANAGED_GITLAB)},
     GITLAB_ISSUER, SELF_MANAGED_GITLAB, "gitlab"),
    ("self-managed-synced", {"gitlab_url": SELF_MANAGED_GITLAB,
                             "oidc_gitlab_issuers": (GITLAB_ISSUER, SELF_MANAGED_GITLAB)},
     SELF_MANAGED_GITLAB, GITLAB_ISSUER, "gitlab"),
    ("github.com-synced", {"oidc_github_issuers": (GITHUB_ISSUER, GHES_ISSUER)},
     GITHUB_ISSUER, GHES_ISSUER, "github"),
    ("enterprise-slug-is-github.com", {"oidc_github_issuers": (ENTERPRISE_SLUG_ISSUER, GHES_ISSUER)},
     ENTERPRISE_SLUG_ISSUER, GHES_ISSUER, "github"),
    ("ghes-synced", {"github_api_url": "https://ghe.example.com/api/v3",
                     "oidc_github_issuers": (GITHUB_ISSUER, GHES_ISSUER)},
     GHES_ISSUER, GITHUB_ISSUER, "github"),
]


@pytest.mark.parametrize(
    ("settings", "ours", "theirs", "provider"), [c[1:] for c in TWO_INSTANCES], ids=[c[0] for c in TWO_INSTANCES]
)
def test_ids_of_another_instance_never_resolve(
    tmp_path: Any, fake_redis: Any, rsps: responses.RequestsMock,
    settings: dict[str, Any], ours: str, theirs: str, provider: str,
) -> None:
    """Two issuers sign tokens naming the same numeric owner id; only the
    one of the instance whose ids the store holds resolves it, even when
    Settings (built by hand, bypassing load_settings) lists both."""
    world = _make_world(tmp_path, fake_redis, rsps, **settings)
    label = "acme" if provider == "github" else "gitlab-acme"
    # The world already serves gitlab.com's and github.com's keys.
    standing = {GITLAB_ISSUER: world.gitlab, GITHUB_ISSUER: world.github}
    good = standing.get(ours) or FakeIssuer(rsps, ours, provider)
    bad = standing.get(theirs) or FakeIssuer(rsps, theirs, provider)
    same_owner = {"repository_owner_id": "9919"} if provider == "github" else {"namespace_id": "72"}

    assert_error(world.post(bad.mint(**same_owner)), 401, "invalid_token", "wrong_issuer")
    assert (bad.discovery_fetches, bad.jwks_fetches) == (0, 0)
    assert world.activity(label) == []

    resp = world.post(good.mint(**same_owner))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["workspace"]["id"] == world.ws[label]


# --------------------------------------------------------------------------- failures of ours


def test_database_error_is_503_and_releases_the_jti(world: World) -> None:
    token = world.github.mint()
    with world.runtime.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE activity RENAME TO activity_away")
    resp = world.post(token)
    assert_error(resp, 503, "unavailable")
    assert resp.headers["Retry-After"].isdigit()
    with world.runtime.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE activity_away RENAME TO activity")
    # The CI's retry of the same token is no replay: our failure released it.
    resp = world.post(token)
    assert resp.status_code == 200, resp.get_json()
    assert_error(world.post(token), 401, "token_replayed")


def test_same_jti_in_a_different_token_is_replayed(world: World) -> None:
    jti = uuid.uuid4().hex
    assert world.post(world.github.mint(jti=jti)).status_code == 200
    assert_error(world.post(world.github.mint(jti=jti, exp=_now(600))), 401, "token_replayed")


def test_jti_is_remembered_until_exp_plus_leeway(world: World) -> None:
    exp = _now(100)
    token = world.github.mint(exp=exp)
    assert world.post(token).status_code == 200
    [key] = [k for k in world.redis.scan_iter("orgsync:oidc:jti:*")]
    assert 100 <= world.redis.ttl(key) <= 131


def test_same_token_twice_at_once(world: World) -> None:
    token = world.github.mint()
    # Warm the key cache so that the racers meet at the replay guard.
    assert world.post(world.github.mint()).status_code == 200
    racers = 8
    barrier = threading.Barrier(racers)
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def race() -> None:
        client = world.app.test_client()
        barrier.wait()
        resp = client.post(RESOLVE, json={"token": token})
        with lock:
            results.append((resp.status_code, resp.get_json()))

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [401] * (racers - 1), results
    assert all(body["error"] == "token_replayed" for status, body in results if status == 401)


# --------------------------------------------------------------------------- secrecy


def test_token_never_logged_nor_in_activity(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ok = world.github.mint()
    refused = world.github.mint(repository_owner="globex", repository_owner_id="5555")
    bad_aud = world.github.mint(aud="sigstore")
    unknown = world.github.mint(repository_owner_id="424242")
    forged = world.github.mint(signing_key=FakeIssuer.new_key(kid=world.github.key.kid))
    for token in (ok, ok, refused, bad_aud, unknown, forged):
        world.post(token)

    with world.runtime.session() as session:
        entries = [serialize.activity(store.activity_view(a)) for a in store.list_activity(session, limit=10_000)]
    dumped = json.dumps(entries)
    for token in (ok, refused, bad_aud, unknown, forged):
        signature = token.split(".")[2]
        assert token not in caplog.text
        assert signature not in caplog.text
        assert signature not in dumped
    assert any(e["action"] == "oidc.refused" for e in entries)
