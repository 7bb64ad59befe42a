"""GitHub adapter: replayed HTTP (responses) and end to end against FakeGitHub.

The replayed tests pin the exact requests the adapter makes: a rate limit or
a 5xx must cost exactly one request (PyGithub's own retry would sleep and
repeat it), and the installation token exchange is counted like any call.
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from responses import matchers

from demo.fakes.github_server import FakeGitHub
from sync.errors import (
    AuthBroken,
    InvalidUserToken,
    NotFound,
    ProviderError,
    RateLimited,
    TransientProviderError,
)
from sync.providers.base import CachedPage, Provider, ProviderMember, ProviderOrg, RosterPage
from sync.providers.github import GitHubProvider
from tests.conftest import CORPUS as SHARED_CORPUS
from tests.fakes.provider import DictCache

API = "https://api.github.com"
# PyGithub sends every request to an explicit :443, so that is what the
# replayed requests look like.
WIRE = "https://api.github.com:443"
APP_ID = "4242"
INSTALLATION = 77
ORG = ProviderOrg(provider="github", org_id=9001, login="acme", installation_id=INSTALLATION)
CORPUS = SHARED_CORPUS / "api"


# --------------------------------------------------------------- fixtures


@pytest.fixture
def gh_no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any sleep (PyGithub's rate-limit wait, retry backoff, throttle) fails the test."""

    def refuse(seconds: float) -> None:
        raise AssertionError(f"adapter slept {seconds} s")

    monkeypatch.setattr(time, "sleep", refuse)


@pytest.fixture
def gh_http(gh_no_sleep: None) -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def gh_provider(app_key_pair: tuple[str, str]) -> GitHubProvider:
    return GitHubProvider(API, APP_ID, app_key_pair[0], installation_id=INSTALLATION)


def token_exchange(rsps: responses.RequestsMock, status: int = 201, token: str = "ghs_test") -> None:
    expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body: dict[str, Any] = (
        {"token": token, "expires_at": expires, "permissions": {"members": "read"}}
        if status == 201
        else {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
    )
    rsps.post(f"{WIRE}/app/installations/{INSTALLATION}/access_tokens", json=body, status=status)


def users(*ids: int, prefix: str = "u") -> list[dict[str, Any]]:
    return [{"login": f"{prefix}{i}", "id": i, "type": "User", "site_admin": False} for i in ids]


def members_url(role: str, page: int | None = None) -> str:
    page_part = f"&page={page}" if page else ""
    return f"{WIRE}/orgs/acme/members?per_page=100&role={role}{page_part}"


def link_next(page: int, role: str = "member") -> dict[str, str]:
    # GitHub's Link URLs name the org by id and carry no port.
    url = f"{API}/organizations/9001/members?per_page=100&role={role}&page={page}"
    return {"Link": f'<{url}>; rel="next"'}


def membership(login: str, user_id: int, role: str = "member", state: str = "active") -> dict[str, Any]:
    return {
        "url": f"{API}/orgs/acme/memberships/{login}",
        "state": state,
        "role": role,
        "organization": {"login": "acme", "id": 9001},
        "user": {"login": login, "id": user_id},
    }


NOT_FOUND = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}


# ------------------------------------------------------- replayed: roster


def test_is_a_provider(gh_provider: GitHubProvider) -> None:
    assert isinstance(gh_provider, Provider)
    assert gh_provider.name == "github"
    assert "ghs_" not in repr(gh_provider) and "PRIVATE" not in repr(gh_provider)


def test_roster_pages_follow_link_and_map_roles(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider, app_key_pair: tuple[str, str]
) -> None:
    token_exchange(gh_http)
    gh_http.get(members_url("admin"), json=users(1, 2), headers={"ETag": 'W/"a1"'})
    gh_http.get(members_url("member"), json=users(*range(10, 110)), headers=link_next(2))
    gh_http.get(
        f"{WIRE}/organizations/9001/members?page=2&per_page=100&role=member",
        json=users(*range(110, 210)),
        headers=link_next(3),
    )
    gh_http.get(f"{WIRE}/organizations/9001/members?page=3&per_page=100&role=member", json=users(210, 211))

    pages = list(gh_provider.iter_roster(ORG))

    assert [len(p.members) for p in pages] == [2, 100, 100, 2]
    assert {m.role for m in pages[0].members} == {"admin"}
    assert {m.role for p in pages[1:] for m in p.members} == {"member"}
    assert pages[0].members[0] == ProviderMember(1, "u1", "admin", "admin")
    assert not any(p.not_modified for p in pages)
    assert gh_provider.api_calls == 5 == len(gh_http.calls)  # 1 token exchange + 4 pages
    assert gh_provider.not_modified == 0

    exchange = gh_http.calls[0].request
    body = exchange.body if isinstance(exchange.body, (str, bytes)) else b"{}"
    assert json.loads(body) == {"permissions": {"members": "read"}}
    scheme, _, app_jwt = str(exchange.headers["Authorization"]).partition(" ")
    assert scheme == "Bearer"
    claims = jwt.decode(app_jwt, app_key_pair[1], algorithms=["RS256"])
    assert claims["iss"] == APP_ID
    for call in gh_http.calls[1:]:
        assert call.request.headers["Authorization"] == "token ghs_test"
        assert "If-None-Match" not in call.request.headers


def test_roster_conditional_requests_use_and_fill_the_cache(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    cache = DictCache[CachedPage]()
    admin_key = f"{API}/orgs/acme/members?per_page=100&role=admin"
    member_key = f"{API}/orgs/acme/members?per_page=100&role=member"
    cached_admins = [ProviderMember(1, "u1", "admin", "admin")]
    cache.put(admin_key, CachedPage('W/"adm"', cached_admins))
    token_exchange(gh_http)
    gh_http.get(
        members_url("admin"),
        status=304,
        match=[matchers.header_matcher({"If-None-Match": 'W/"adm"'})],
    )
    gh_http.get(members_url("member"), json=users(5, 6), headers={"ETag": 'W/"mem"'})

    pages = list(gh_provider.iter_roster(ORG, cache))

    assert pages[0] == RosterPage(members=cached_admins, not_modified=True, url=admin_key)
    assert pages[1].members == [ProviderMember(5, "u5", "member", "member"), ProviderMember(6, "u6", "member", "member")]
    assert not pages[1].not_modified
    assert cache.pages[member_key].etag == 'W/"mem"'
    assert cache.pages[member_key].members == pages[1].members
    assert gh_provider.not_modified == 1
    assert gh_provider.api_calls == 3 == len(gh_http.calls)


def test_roster_304_without_link_continues_after_a_full_cached_page(
    gh_http: responses.RequestsMock, app_key_pair: tuple[str, str]
) -> None:
    """GitHub need not repeat Link on a 304: a full cached page means 'ask for the next'."""
    provider = GitHubProvider(API, APP_ID, app_key_pair[0], installation_id=INSTALLATION, per_page=2)
    cache = DictCache[CachedPage]()
    first = f"{API}/orgs/acme/members?per_page=2&role=admin"
    cache.put(first, CachedPage('"p1"', [ProviderMember(1, "a", "admin"), ProviderMember(2, "b", "admin")]))
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/orgs/acme/members?per_page=2&role=admin", status=304)
    gh_http.get(f"{WIRE}/orgs/acme/members?page=2&per_page=2&role=admin", json=users(3))
    gh_http.get(f"{WIRE}/orgs/acme/members?per_page=2&role=member", json=[])

    pages = list(provider.iter_roster(ORG, cache))

    assert [[m.provider_user_id for m in p.members] for p in pages] == [[1, 2], [3], []]
    assert provider.not_modified == 1


def test_roster_5xx_on_page_two_raises_after_page_one(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    token_exchange(gh_http)
    gh_http.get(members_url("admin"), json=users(1), headers=link_next(2, "admin"))
    gh_http.get(
        f"{WIRE}/organizations/9001/members?page=2&per_page=100&role=admin",
        json={"message": "Server Error"},
        status=502,
    )
    roster = gh_provider.iter_roster(ORG)
    assert [m.provider_user_id for m in next(roster).members] == [1]
    with pytest.raises(TransientProviderError):
        next(roster)
    assert len(gh_http.calls) == 3  # no retry of the 502


def test_roster_refuses_a_link_to_another_host(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    """The installation token rides along on Link URLs: never follow one off our API."""
    token_exchange(gh_http)
    gh_http.get(
        members_url("admin"),
        json=users(1),
        headers={"Link": '<https://evil.example/steal?page=2>; rel="next"'},
    )
    roster = gh_provider.iter_roster(ORG)
    next(roster)
    with pytest.raises(ProviderError):
        next(roster)
    assert len(gh_http.calls) == 2


def test_roster_without_installation_is_auth_broken(app_key_pair: tuple[str, str]) -> None:
    provider = GitHubProvider(API, APP_ID, app_key_pair[0])
    with pytest.raises(AuthBroken):
        next(provider.iter_roster(ProviderOrg("github", 1, "acme")))
    assert provider.api_calls == 0


# ------------------------------------------------------- replayed: members


def test_get_member_active_admin(gh_http: responses.RequestsMock, gh_provider: GitHubProvider) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/orgs/acme/memberships/octocat", json=membership("octocat", 1, "admin"))
    assert gh_provider.get_member(ORG, 1, "octocat") == ProviderMember(1, "octocat", "admin", "admin")
    assert gh_provider.api_calls == 2


def test_get_member_pending_gives_no_access(gh_http: responses.RequestsMock, gh_provider: GitHubProvider) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/orgs/acme/memberships/octocat", json=membership("octocat", 1, "admin", "pending"))
    member = gh_provider.get_member(ORG, 1, "octocat")
    assert member is not None and member.role is None
    assert member.raw_role == "pending:admin"


def test_get_member_404_is_none_after_checking_labels_by_id(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/orgs/acme/memberships/octocat", json=NOT_FOUND, status=404)
    gh_http.get(f"{WIRE}/user/1", json={"login": "octocat", "id": 1})
    gh_http.get(f"{WIRE}/organizations/9001", json={"login": "acme", "id": 9001})
    assert gh_provider.get_member(ORG, 1, "octocat") is None
    assert len(gh_http.calls) == 4  # no second membership read: labels were current


def test_get_member_retries_once_with_the_renamed_login(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    """A stale login must not read as 'not a member' (that would remove them)."""
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/orgs/acme/memberships/oldname", json=NOT_FOUND, status=404)
    gh_http.get(f"{WIRE}/user/1", json={"login": "newname", "id": 1})
    gh_http.get(f"{WIRE}/organizations/9001", json={"login": "acme", "id": 9001})
    gh_http.get(f"{WIRE}/orgs/acme/memberships/newname", json=membership("newname", 1))
    assert gh_provider.get_member(ORG, 1, "oldname") == ProviderMember(1, "newname", "member", "member")
    assert len(gh_http.calls) == 5


def test_get_member_login_now_held_by_someone_else(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    """The old login was taken by another account: identity is the numeric id."""
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/orgs/acme/memberships/oldname", json=membership("oldname", 666, "admin"))
    gh_http.get(f"{WIRE}/user/1", json={"login": "newname", "id": 1})
    gh_http.get(f"{WIRE}/organizations/9001", json={"login": "acme", "id": 9001})
    gh_http.get(f"{WIRE}/orgs/acme/memberships/newname", json=NOT_FOUND, status=404)
    assert gh_provider.get_member(ORG, 1, "oldname") is None


def test_get_member_follows_a_renamed_org(gh_http: responses.RequestsMock, gh_provider: GitHubProvider) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/orgs/acme/memberships/octocat", json=NOT_FOUND, status=404)
    gh_http.get(f"{WIRE}/user/1", json={"login": "octocat", "id": 1})
    gh_http.get(f"{WIRE}/organizations/9001", json={"login": "acme-inc", "id": 9001})
    gh_http.get(f"{WIRE}/orgs/acme-inc/memberships/octocat", json=membership("octocat", 1))
    member = gh_provider.get_member(ORG, 1, "octocat")
    assert member is not None and member.role == "member"


def test_get_member_of_a_deleted_org_is_not_found_not_none(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/orgs/acme/memberships/octocat", json=NOT_FOUND, status=404)
    gh_http.get(f"{WIRE}/user/1", json={"login": "octocat", "id": 1})
    gh_http.get(f"{WIRE}/organizations/9001", json=NOT_FOUND, status=404)
    with pytest.raises(NotFound):
        gh_provider.get_member(ORG, 1, "octocat")


def test_get_member_of_a_deleted_account_is_none(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/orgs/acme/memberships/ghost", json=NOT_FOUND, status=404)
    gh_http.get(f"{WIRE}/user/1", json=NOT_FOUND, status=404)
    assert gh_provider.get_member(ORG, 1, "ghost") is None


def test_get_member_without_login_resolves_it_by_id(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/user/1", json={"login": "octocat", "id": 1})
    gh_http.get(f"{WIRE}/orgs/acme/memberships/octocat", json=membership("octocat", 1))
    member = gh_provider.get_member(ORG, 1, None)
    assert member is not None and member.login == "octocat"


# ------------------------------------------------------- replayed: errors


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "Bad credentials"), (403, "Resource not accessible by integration")],
)
def test_installation_call_rejected_is_auth_broken(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider, status: int, message: str
) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/organizations/9001", json={"message": message}, status=status)
    with pytest.raises(AuthBroken):
        gh_provider.get_org(9001)
    assert len(gh_http.calls) == 2  # a freshly minted token is not retried


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "A JSON web token could not be decoded"),
        (403, "This installation has been suspended"),
        (404, "Not Found"),
        (422, "The permissions requested are not granted to this installation."),
    ],
)
def test_failed_token_exchange_is_auth_broken(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider, status: int, message: str
) -> None:
    gh_http.post(
        f"{WIRE}/app/installations/{INSTALLATION}/access_tokens", json={"message": message}, status=status
    )
    with pytest.raises(AuthBroken):
        list(gh_provider.iter_roster(ORG))
    assert gh_provider.api_calls == 1 == len(gh_http.calls)


def test_401_with_a_cached_token_re_exchanges_once(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    """A token that stops working mid-life: a new exchange tells 'uninstalled' apart."""
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/organizations/9001", json={"login": "acme", "id": 9001})
    gh_http.get(f"{WIRE}/organizations/9001", json={"message": "Bad credentials"}, status=401)
    gh_http.post(f"{WIRE}/app/installations/{INSTALLATION}/access_tokens", json=NOT_FOUND, status=404)
    assert gh_provider.get_org(9001).login == "acme"
    with pytest.raises(AuthBroken):
        gh_provider.get_org(9001)
    assert gh_provider.api_calls == 4 == len(gh_http.calls)


@pytest.mark.parametrize("status", [403, 429])
def test_primary_rate_limit_carries_the_reset_time(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider, status: int
) -> None:
    token_exchange(gh_http)
    gh_http.get(
        members_url("admin"),
        json={"message": "API rate limit exceeded for installation ID 77."},
        status=status,
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000", "X-RateLimit-Reset": "1900000000"},
    )
    with pytest.raises(RateLimited) as caught:
        list(gh_provider.iter_roster(ORG))
    assert caught.value.secondary is False
    assert caught.value.reset_at == datetime.fromtimestamp(1900000000, tz=UTC)
    assert len(gh_http.calls) == 2  # no retry, no wait


SECONDARY_MESSAGE = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."


@pytest.mark.parametrize(
    ("status", "message", "retry_after", "wait"),
    [
        (403, SECONDARY_MESSAGE, "30", 30),
        (429, "Too many requests", "120", 120),
        (403, SECONDARY_MESSAGE, None, 60),
        (429, "Too many requests", None, 60),
    ],
)
def test_secondary_rate_limit_waits_retry_after_or_a_minute(
    gh_http: responses.RequestsMock,
    gh_provider: GitHubProvider,
    status: int,
    message: str,
    retry_after: str | None,
    wait: int,
) -> None:
    token_exchange(gh_http)
    headers = {"X-RateLimit-Remaining": "4000"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    gh_http.get(f"{WIRE}/orgs/acme/memberships/octocat", json={"message": message}, status=status, headers=headers)
    before = datetime.now(UTC)
    with pytest.raises(RateLimited) as caught:
        gh_provider.get_member(ORG, 1, "octocat")
    after = datetime.now(UTC)
    assert caught.value.secondary is True
    assert before + timedelta(seconds=wait) <= caught.value.reset_at <= after + timedelta(seconds=wait)
    assert len(gh_http.calls) == 2


def test_rate_limited_token_exchange_is_not_auth_broken(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    gh_http.post(
        f"{WIRE}/app/installations/{INSTALLATION}/access_tokens",
        json={"message": SECONDARY_MESSAGE},
        status=403,
        headers={"Retry-After": "10"},
    )
    with pytest.raises(RateLimited):
        gh_provider.get_org(9001)


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 500, "json": {"message": "Server Error"}},
        {"status": 502, "body": "<html>Bad gateway</html>"},
        {"status": 503, "json": {"message": "Service Unavailable"}},
        {"status": 408, "json": {"message": "Request Timeout"}},
        {"body": requests.exceptions.ConnectionError("refused")},
        {"body": requests.exceptions.ReadTimeout("slow")},
        {"status": 200, "body": "<html>captive portal</html>"},
    ],
)
def test_server_errors_and_network_failures_are_transient(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider, answer: dict[str, Any]
) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/organizations/9001", **answer)
    with pytest.raises(TransientProviderError):
        gh_provider.get_org(9001)
    assert len(gh_http.calls) == 2  # exactly one attempt: retries belong to the job


def test_malformed_answers_are_provider_errors_not_crashes(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/organizations/9001", json={"unexpected": True})
    gh_http.get(members_url("admin"), json=[{"login": "no-id"}])
    with pytest.raises(ProviderError):
        gh_provider.get_org(9001)
    with pytest.raises(ProviderError):
        list(gh_provider.iter_roster(ORG))


def test_get_org_and_not_found(gh_http: responses.RequestsMock, gh_provider: GitHubProvider) -> None:
    token_exchange(gh_http)
    gh_http.get(f"{WIRE}/organizations/9001", json={"login": "acme", "id": 9001, "name": "Acme Inc"})
    gh_http.get(f"{WIRE}/organizations/404", json=NOT_FOUND, status=404)
    assert gh_provider.get_org(9001) == ProviderOrg("github", 9001, "acme", "Acme Inc", INSTALLATION)
    with pytest.raises(NotFound):
        gh_provider.get_org(404)
    assert gh_provider.api_calls == 3  # the token is exchanged once and reused


def test_find_installation(gh_http: responses.RequestsMock, gh_provider: GitHubProvider) -> None:
    gh_http.get(f"{WIRE}/orgs/acme/installation", json={"id": 31337, "target_type": "Organization",
                                                         "account": {"id": 7, "login": "acme"}})
    gh_http.get(f"{WIRE}/orgs/nobody/installation", json=NOT_FOUND, status=404)
    assert gh_provider.find_installation("acme") == 31337
    assert gh_provider.find_installation("nobody") is None
    for call in gh_http.calls:
        assert str(call.request.headers["Authorization"]).startswith("Bearer ey")


def test_bad_app_key_is_auth_broken_without_quoting_it() -> None:
    provider = GitHubProvider(API, APP_ID, "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n", installation_id=1)
    with pytest.raises(AuthBroken) as caught:
        provider.find_installation("acme")
    assert "not a key" not in str(caught.value)


# -------------------------------------------------- replayed: user token


def test_token_user_and_orgs(gh_http: responses.RequestsMock, gh_provider: GitHubProvider) -> None:
    auth = [matchers.header_matcher({"Authorization": "token gho_user"})]
    gh_http.get(f"{WIRE}/user", json={"login": "octocat", "id": 1}, match=auth)
    gh_http.get(
        f"{WIRE}/user/memberships/orgs?per_page=100&state=active",
        json=[
            {"state": "active", "role": "admin", "organization": {"login": "acme", "id": 9001}},
            {"state": "active", "role": "billing_manager", "organization": {"login": "pay", "id": 9002}},
        ],
        headers={"Link": f'<{API}/user/memberships/orgs?per_page=100&state=active&page=2>; rel="next"'},
        match=auth,
    )
    gh_http.get(
        f"{WIRE}/user/memberships/orgs?page=2&per_page=100&state=active",
        json=[{"state": "pending", "role": "member", "organization": {"login": "inv", "id": 9003}}],
        match=auth,
    )
    user = gh_provider.get_token_user("gho_user")
    orgs = list(gh_provider.iter_token_orgs("gho_user"))
    assert (user.provider_user_id, user.login) == (1, "octocat")
    assert [(o.org.org_id, o.org.login, o.role) for o in orgs] == [
        (9001, "acme", "admin"),
        (9002, "pay", "billing"),
        (9003, "inv", None),
    ]
    assert gh_provider.api_calls == 3 == len(gh_http.calls)  # no app token for user calls


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_user_token(gh_http: responses.RequestsMock, gh_provider: GitHubProvider, status: int) -> None:
    gh_http.get(f"{WIRE}/user", json={"message": "Bad credentials"}, status=status)
    with pytest.raises(InvalidUserToken) as caught:
        gh_provider.get_token_user("gho_secret_value")
    assert "gho_secret_value" not in str(caught.value)
    assert "gho_secret_value" not in repr(vars(gh_provider))


# ----------------------------------------------- end to end: fake server


@pytest.fixture
def gh_fake(app_key_pair: tuple[str, str]) -> FakeGitHub:
    fake = FakeGitHub(app_id=APP_ID, app_public_key=app_key_pair[1])
    fake.add_org(9001, "acme", installation_id=INSTALLATION, name="Acme Inc")
    fake.add_members(9001, ((i, f"admin{i}", "admin") for i in range(1, 11)))
    fake.add_members(9001, ((i, f"user{i}", "member") for i in range(100, 340)))
    return fake


class _SwitchableGitHub:
    """Lets one loopback server (module scope) serve each test's own FakeGitHub:
    stopping a werkzeug server waits out its 0.5 s poll, per test otherwise."""

    def __init__(self) -> None:
        self.current = FakeGitHub()

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.current.wsgi(environ, start_response)


@pytest.fixture(scope="module")
def gh_switch() -> Iterator[tuple[_SwitchableGitHub, str]]:
    """The fake GitHub over loopback HTTP, mounted at /gh as the shared server does."""
    switch = _SwitchableGitHub()
    try:
        from demo.fakes.server import FakeProviderServer
    except ImportError:  # the shared server also needs the GitLab fake
        FakeProviderServer = None  # type: ignore[assignment,misc]
    if FakeProviderServer is not None:
        with FakeProviderServer(github=switch) as server:  # type: ignore[arg-type]
            yield switch, server.github_api_url
        return
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response

    fallback = Response('{"message": "Not Found"}', status=404, content_type="application/json")
    httpd = make_server("127.0.0.1", 0, DispatcherMiddleware(fallback, {"/gh": switch.wsgi}), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield switch, f"http://127.0.0.1:{httpd.server_port}/gh"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def gh_server_url(gh_fake: FakeGitHub, gh_switch: tuple[_SwitchableGitHub, str]) -> str:
    switch, url = gh_switch
    switch.current = gh_fake
    return url


@pytest.fixture
def gh_live(gh_server_url: str, app_key_pair: tuple[str, str]) -> GitHubProvider:
    return GitHubProvider(gh_server_url, APP_ID, app_key_pair[0], installation_id=INSTALLATION)


def roster_of(pages: list[RosterPage]) -> dict[int, ProviderMember]:
    return {m.provider_user_id: m for p in pages for m in p.members}


def test_e2e_roster_costs_one_request_per_page_then_all_304(
    gh_live: GitHubProvider, gh_fake: FakeGitHub
) -> None:
    cache = DictCache[CachedPage]()
    pages = list(gh_live.iter_roster(ORG, cache))

    roster = roster_of(pages)
    assert len(roster) == 250
    assert {m.role for m in roster.values() if m.provider_user_id <= 10} == {"admin"}
    assert {m.role for m in roster.values() if m.provider_user_id >= 100} == {"member"}
    roster_requests = math.ceil(10 / 100) + math.ceil(240 / 100)
    assert gh_fake.count("/members") == roster_requests == len(pages)
    assert roster_requests <= math.ceil(250 / 100) + 1  # + the admin listing
    assert gh_live.api_calls == roster_requests + 1  # + the token exchange
    assert gh_fake.count("/access_tokens") == 1

    again = list(gh_live.iter_roster(ORG, cache))

    assert all(p.not_modified for p in again)
    assert gh_live.not_modified == len(again) == roster_requests
    assert roster_of(again) == roster
    assert gh_fake.count("/members", status=304) == roster_requests
    assert gh_live.api_calls == 2 * roster_requests + 1  # the token is reused


def test_e2e_a_change_refetches_only_the_changed_page(gh_live: GitHubProvider, gh_fake: FakeGitHub) -> None:
    cache = DictCache[CachedPage]()
    list(gh_live.iter_roster(ORG, cache))
    gh_fake.add_member(9001, 999, "newcomer")  # sorts last: only the last member page changes

    pages = list(gh_live.iter_roster(ORG, cache))

    assert [p.not_modified for p in pages] == [True, True, True, False]
    assert 999 in roster_of(pages)


def test_e2e_500_on_page_two_after_page_one(gh_live: GitHubProvider, gh_fake: FakeGitHub) -> None:
    gh_fake.fail_page("member", page=2, status=500)
    seen: list[RosterPage] = []
    with pytest.raises(TransientProviderError):
        seen.extend(gh_live.iter_roster(ORG))
    assert [len(p.members) for p in seen] == [10, 100]  # admins, member page 1
    assert gh_fake.count("/members", status=500) == 1


def test_e2e_rate_limits(gh_live: GitHubProvider, gh_fake: FakeGitHub) -> None:
    gh_fake.rate_limit("primary", reset=1900000000, path_contains="/members")
    with pytest.raises(RateLimited) as primary:
        list(gh_live.iter_roster(ORG))
    assert primary.value.reset_at == datetime.fromtimestamp(1900000000, tz=UTC)
    assert not primary.value.secondary

    gh_fake.rate_limit("secondary", retry_after=90, status=429)
    with pytest.raises(RateLimited) as secondary:
        gh_live.get_org(9001)
    assert secondary.value.secondary
    assert secondary.value.reset_at >= datetime.now(UTC) + timedelta(seconds=80)


def test_e2e_members_and_renames(gh_live: GitHubProvider, gh_fake: FakeGitHub) -> None:
    gh_fake.add_member(9001, 500, "invitee", role="admin", state="pending")
    gh_fake.rename_user(100, "user100-renamed")

    renamed = gh_live.get_member(ORG, 100, "user100")
    pending = gh_live.get_member(ORG, 500, "invitee")
    gh_fake.remove_member(9001, 101)
    removed = gh_live.get_member(ORG, 101, "user101")

    assert renamed == ProviderMember(100, "user100-renamed", "member", "member")
    assert pending is not None and pending.role is None
    assert removed is None
    assert gh_live.get_org(9001) == ProviderOrg("github", 9001, "acme", "Acme Inc", INSTALLATION)
    assert gh_live.find_installation("acme") == INSTALLATION
    assert gh_live.find_installation("nope") is None


def test_e2e_revoked_installation_is_auth_broken(
    gh_live: GitHubProvider, gh_fake: FakeGitHub, gh_server_url: str, app_key_pair: tuple[str, str]
) -> None:
    gh_live.get_org(9001)
    gh_fake.revoke_installation(INSTALLATION)
    with pytest.raises(AuthBroken):
        gh_live.get_org(9001)  # the held token now 401s, and the re-exchange 404s
    fresh = GitHubProvider(gh_server_url, APP_ID, app_key_pair[0], installation_id=INSTALLATION)
    with pytest.raises(AuthBroken):
        list(fresh.iter_roster(ORG))


def test_e2e_a_jwt_from_the_wrong_key_is_refused(gh_server_url: str, gh_fake: FakeGitHub) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    provider = GitHubProvider(gh_server_url, APP_ID, pem, installation_id=INSTALLATION)
    with pytest.raises(AuthBroken):
        provider.get_org(9001)
    assert gh_fake.count("/access_tokens", status=401) == 1


def test_e2e_user_token(gh_live: GitHubProvider, gh_fake: FakeGitHub) -> None:
    gh_fake.add_org(9002, "other")
    gh_fake.add_member(9002, 100, "user100", role="admin")
    gh_fake.add_org(9003, "invited")
    gh_fake.add_member(9003, 100, "user100", state="pending")
    gh_fake.add_user_token("gho_live", 100, "user100")

    user = gh_live.get_token_user("gho_live")
    orgs = {o.org.login: o.role for o in gh_live.iter_token_orgs("gho_live")}

    assert (user.provider_user_id, user.login) == (100, "user100")
    assert orgs == {"acme": "member", "other": "admin"}  # state=active only
    with pytest.raises(InvalidUserToken):
        gh_live.get_token_user("gho_unknown")


def test_e2e_large_org_paginates_without_loading_everything(
    gh_server_url: str, gh_fake: FakeGitHub, app_key_pair: tuple[str, str]
) -> None:
    gh_fake.add_org(7, "big", installation_id=8)
    gh_fake.add_members(7, ((i, f"m{i}", "member") for i in range(1, 1001)))
    provider = GitHubProvider(gh_server_url, APP_ID, app_key_pair[0], installation_id=8)
    big = ProviderOrg("github", 7, "big", installation_id=8)
    total = sum(len(p.members) for p in provider.iter_roster(big))
    assert total == 1000
    assert gh_fake.count("/organizations/7/members") + gh_fake.count("/orgs/big/members") == 1 + 10


# ----------------------------------------------------- fake answer shapes


@pytest.mark.parametrize(
    ("corpus_file", "path", "auth"),
    [
        ("github.GET_orgs_org_members.docs.json", "/orgs/acme/members?per_page=1", "installation"),
        ("github.GET_orgs_org_memberships_username.docs.json", "/orgs/acme/memberships/admin1", "installation"),
        ("github.GET_user_memberships_orgs.docs.json", "/user/memberships/orgs", "user"),
        # The full org answer has dozens of owner-only settings; the simple shape
        # plus name is what anyone reads.
        ("github.GET_user_orgs.docs.json", "/orgs/acme", "installation"),
        ("github.GET_user_orgs.docs.json", "/organizations/9001", "installation"),
        ("github.GET_app_installations.docs.json", "/orgs/acme/installation", "jwt"),
    ],
)
def test_fake_answers_have_the_corpus_field_names(
    gh_fake: FakeGitHub, app_key_pair: tuple[str, str], corpus_file: str, path: str, auth: str
) -> None:
    source = CORPUS / corpus_file
    if not source.is_file():
        pytest.skip(f"corpus not found at {source}")
    example = json.loads(source.read_text())
    example = example[0] if isinstance(example, list) else example
    from werkzeug.test import Client

    client = Client(gh_fake.wsgi)
    gh_fake.add_user_token("gho_shape", 1, "admin1")
    if auth == "installation":
        minted = client.post(
            f"/app/installations/{INSTALLATION}/access_tokens",
            headers={"Authorization": f"Bearer {jwt.encode(app_claims(), app_key_pair[0], 'RS256')}"},
        )
        header = f"token {minted.get_json()['token']}"
    elif auth == "jwt":
        header = f"Bearer {jwt.encode(app_claims(), app_key_pair[0], 'RS256')}"
    else:
        header = "token gho_shape"
    answer = client.get(path, headers={"Authorization": header})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    data = answer.get_json()
    data = data[0] if isinstance(data, list) else data
    missing = set(example) - set(data)
    assert not missing, f"fake answer lacks {sorted(missing)}"


def app_claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iat": now - 60, "exp": now + 300, "iss": APP_ID}


# -------------------------------------------------- replayed: installations (app JWT)


def _inst(inst_id: int, org_id: int, login: str, **extra: Any) -> dict[str, Any]:
    return {"id": inst_id, "target_type": "Organization", "target_id": org_id,
            "account": {"id": org_id, "login": login, "type": "Organization"}, "suspended_at": None, **extra}


def test_org_installation_is_re_asked_under_the_orgs_current_login(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    # Stored login "old" is stale: GitHub 404s it; the org, read by id, is now "new".
    gh_http.get(f"{WIRE}/orgs/old/installation", json=NOT_FOUND, status=404)
    gh_http.get(f"{WIRE}/organizations/7", json={"id": 7, "login": "new"})
    gh_http.get(f"{WIRE}/orgs/new/installation", json=_inst(31, 7, "new"))
    found = gh_provider.get_org_installation(ProviderOrg("github", 7, "old"))
    assert found is not None and (found.installation_id, found.account_login, found.is_org) == (31, "new", True)


@pytest.mark.parametrize(("org_answer", "expected"), [
    ({"status": 404, "json": NOT_FOUND}, None),  # the org is gone
    ({"status": 200, "json": {"id": 7, "login": "acme"}}, None),  # same login: really not installed
])
def test_org_installation_none_only_after_the_org_is_checked(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider, org_answer: dict[str, Any], expected: Any
) -> None:
    gh_http.get(f"{WIRE}/orgs/acme/installation", json=NOT_FOUND, status=404)
    gh_http.get(f"{WIRE}/organizations/7", **org_answer)
    assert gh_provider.get_org_installation(ProviderOrg("github", 7, "acme")) is expected


def test_an_installation_of_another_account_under_our_login_is_not_ours(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    # Our org was renamed and its old login re-taken by another org with the app.
    gh_http.get(f"{WIRE}/orgs/acme/installation", json=_inst(99, 8, "acme"))
    gh_http.get(f"{WIRE}/organizations/7", json={"id": 7, "login": "acme-renamed"})
    gh_http.get(f"{WIRE}/orgs/acme-renamed/installation", json=NOT_FOUND, status=404)
    assert gh_provider.get_org_installation(ProviderOrg("github", 7, "acme")) is None


def test_list_installations_pages_and_revalidates(
    gh_http: responses.RequestsMock, gh_provider: GitHubProvider
) -> None:
    from sync.providers.base import CachedInstallations

    class Cache:
        def __init__(self) -> None:
            self.pages: dict[str, CachedInstallations] = {}

        def get(self, url: str) -> CachedInstallations | None:
            return self.pages.get(url)

        def put(self, url: str, page: CachedInstallations) -> None:
            self.pages[url] = page

    first = f"{API}/app/installations?per_page=100"
    second = f"{API}/app/installations?per_page=100&page=2"
    gh_http.get(f"{WIRE}/app/installations?per_page=100", json=[_inst(1, 10, "a")],
                headers={"ETag": 'W/"p1"', "Link": f'<{second}>; rel="next"'})
    gh_http.get(f"{WIRE}/app/installations?per_page=100&page=2",
                json=[_inst(2, 20, "b", suspended_at="2024-01-01T00:00:00Z")], headers={"ETag": 'W/"p2"'})
    cache = Cache()
    listed = gh_provider.list_installations(cache)
    assert [(i.installation_id, i.suspended) for i in listed] == [(1, False), (2, True)]
    assert set(cache.pages) == {first, second}
    gh_http.reset()
    gh_http.get(f"{WIRE}/app/installations?per_page=100", status=304,
                headers={"ETag": 'W/"p1"', "Link": f'<{second}>; rel="next"'},
                match=[matchers.header_matcher({"If-None-Match": 'W/"p1"'})])
    gh_http.get(f"{WIRE}/app/installations?per_page=100&page=2", status=304, headers={"ETag": 'W/"p2"'},
                match=[matchers.header_matcher({"If-None-Match": 'W/"p2"'})])
    before = gh_provider.not_modified
    assert gh_provider.list_installations(cache) == listed
    assert gh_provider.not_modified - before == 2


def test_e2e_the_app_jwt_is_signed_once_for_many_installations(
    gh_server_url: str, gh_fake: FakeGitHub, app_key_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from github import Auth

    from sync.providers import github_auth

    signed: list[str] = []
    real = Auth.AppAuth.create_jwt

    def counting(self: Auth.AppAuth, *args: Any, **kwargs: Any) -> str:
        token = real(self, *args, **kwargs)
        signed.append(token)
        return token

    monkeypatch.setattr(Auth.AppAuth, "create_jwt", counting)
    for n in range(3):
        gh_fake.add_org(7000 + n, f"org{n}", installation_id=70 + n)
        provider = GitHubProvider(gh_server_url, APP_ID, app_key_pair[0], installation_id=70 + n)
        assert provider.get_org(7000 + n).login == f"org{n}"
    assert len(signed) == 1  # three exchanges, one RSA signature
    assert gh_fake.count("/access_tokens", status=201) == 3

    monkeypatch.setattr(github_auth, "APP_JWT_REUSE", 0.0)  # the reuse window has passed
    gh_fake.add_org(7009, "org9", installation_id=79)
    GitHubProvider(gh_server_url, APP_ID, app_key_pair[0], installation_id=79).get_org(7009)
    GitHubProvider(gh_server_url, APP_ID, app_key_pair[0], installation_id=79)  # token cached: no exchange
    assert len(signed) == 2


def test_one_keep_alive_connection_serves_every_installation_and_the_app(
    app_key_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two orgs on two installations, read by two adapters (one per sync, as
    the jobs build them), token exchanges included: one TCP connection from
    this thread, reused by every request (the fake keeps connections alive,
    as GitHub does). A Requester per token used to open one per installation,
    two with the exchange. Each request still carries its own token."""
    import urllib3.util.connection as u3

    from demo.fakes.server import FakeProviderServer
    from sync.providers import github_auth

    github_auth.clear_token_cache()
    fake = FakeGitHub(app_id=APP_ID, app_public_key=app_key_pair[1])
    fake.add_org(9001, "acme", installation_id=71)
    fake.add_org(9002, "globex", installation_id=72)
    fake.add_members(9001, [(1, "ann", "admin")])
    fake.add_members(9002, [(2, "bob", "member")])
    opened: list[Any] = []
    real = u3.create_connection

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(u3, "create_connection", counting)
    with FakeProviderServer(github=fake, keep_alive=True) as server:
        # A URL no other test uses: this thread's shared Requester is new.
        url = server.github_api_url + "/"
        rosters = {}
        for org_id, login, installation in ((9001, "acme", 71), (9002, "globex", 72)):
            provider = GitHubProvider(url, APP_ID, app_key_pair[0], installation_id=installation)
            org = provider.get_org(org_id)
            rosters[login] = roster_of(list(provider.iter_roster(org)))
            provider.close()
    assert set(rosters["acme"]) == {1} and set(rosters["globex"]) == {2}
    assert fake.count("/access_tokens") == 2  # one exchange per installation
    assert fake.request_count >= 8
    assert len(opened) == 1, opened


def test_a_thread_keeps_a_bounded_number_of_shared_requesters() -> None:
    """One shared Requester per API URL and thread, reused; past
    MAX_CARRIERS_PER_THREAD URLs the oldest is dropped (and closed)."""
    from sync.providers import github_http

    def transport(i: int) -> github_http.GitHubTransport:
        return github_http.GitHubTransport(f"http://bounded-{i}.invalid/api", timeout=5, per_page=100,
                                           on_send=lambda: None)

    first = transport(0)._requester()
    assert transport(0)._requester() is first  # one per URL, shared by every transport
    for i in range(1, github_http.MAX_CARRIERS_PER_THREAD + 1):
        transport(i)._requester()
    kept = github_http._carriers.by_key
    assert len(kept) <= github_http.MAX_CARRIERS_PER_THREAD
    assert transport(0)._requester() is not first  # the oldest was dropped
