"""GitLabProvider: replayed HTTP (``responses``) and end to end against FakeGitLab.

Every test asserts the exact number of requests: the API budget (SPEC 6) is a
user-visible promise, and a silent python-gitlab retry or sleep would show up
here as an extra call.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from demo.fakes.gitlab_server import DEFAULT_TOKEN, FakeGitLab
from demo.fakes.server import FakeProviderServer
from sync.errors import (
    AuthBroken,
    InvalidUserToken,
    NotFound,
    ProviderError,
    RateLimited,
    TransientProviderError,
)
from sync.providers.base import (
    AccessRole,
    Provider,
    ProviderMember,
    ProviderOrg,
    ProviderUser,
    TokenOrg,
)
from sync.providers.gitlab import GitLabProvider, NotAGroup

BASE = "https://gitlab.test"
API = f"{BASE}/api/v4"
TOKEN = "glpat-service-token"
USER_TOKEN = "oauth-user-token-123"
ACME = ProviderOrg(provider="gitlab", org_id=7, login="acme")
MEMBERS = f"{API}/groups/7/members/all"


def member_json(user_id: int, access_level: int = 30, **extra: Any) -> dict[str, Any]:
    """A row shaped like shared/corpus/api/gitlab.GET_groups_id_members_all.json."""
    row: dict[str, Any] = {
        "id": user_id,
        "username": f"user{user_id}",
        "name": f"User {user_id}",
        "state": "active",
        "avatar_url": "https://www.gravatar.com/avatar/x?s=80&d=identicon",
        "web_url": f"{BASE}/user{user_id}",
        "created_at": "2012-09-22T14:13:35Z",
        "expires_at": None,
        "access_level": access_level,
        "group_saml_identity": None,
    }
    row.update(extra)
    return row


def group_json(group_id: int, full_path: str, parent_id: int | None = None) -> dict[str, Any]:
    path = full_path.rsplit("/", 1)[-1]
    return {
        "id": group_id,
        "name": path.title(),
        "path": path,
        "full_name": path.title(),
        "full_path": full_path,
        "parent_id": parent_id,
        "visibility": "private",
        "web_url": f"{BASE}/groups/{full_path}",
        "created_at": "2020-01-15T12:36:29.590Z",
    }


def namespace_json(
    ns_id: int, full_path: str, kind: str = "group", parent_id: int | None = None
) -> dict[str, Any]:
    return {
        "id": ns_id,
        "name": full_path.rsplit("/", 1)[-1],
        "path": full_path.rsplit("/", 1)[-1],
        "kind": kind,
        "full_path": full_path,
        "parent_id": parent_id,
        "avatar_url": None,
        "web_url": f"{BASE}/{full_path}",
    }


def page_headers(
    page: int, next_page: int | None, total: int, per_page: int = 100
) -> dict[str, str]:
    headers = {
        "X-Page": str(page),
        "X-Per-Page": str(per_page),
        "X-Next-Page": "" if next_page is None else str(next_page),
        "X-Prev-Page": "" if page == 1 else str(page - 1),
        "X-Total": str(total),
        "X-Total-Pages": str(-(-total // per_page)),
    }
    if next_page is not None:
        headers["Link"] = f'<{MEMBERS}?page={next_page}&per_page={per_page}>; rel="next"'
    return headers


@pytest.fixture
def provider() -> GitLabProvider:
    return GitLabProvider(BASE, TOKEN)


def add_roster_page(
    rsps: responses.RequestsMock,
    page: int,
    ids: range,
    next_page: int | None,
    total: int,
    status: int = 200,
) -> None:
    rsps.get(
        MEMBERS,
        json=[member_json(i) for i in ids],
        status=status,
        headers=page_headers(page, next_page, total),
        match=[matchers.query_param_matcher({"page": str(page), "per_page": "100"})],
    )


# -- replayed HTTP ----------------------------------------------------------


def test_implements_the_provider_protocol(provider: GitLabProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name == "gitlab"
    assert (provider.api_calls, provider.not_modified) == (0, 0)


def test_roster_streams_three_pages(rsps: responses.RequestsMock, provider: GitLabProvider) -> None:
    add_roster_page(rsps, 1, range(1, 101), 2, 250)
    add_roster_page(rsps, 2, range(101, 201), 3, 250)
    add_roster_page(rsps, 3, range(201, 251), None, 250)

    pages = provider.iter_roster(ACME)
    first = next(pages)
    # Streaming: the second page is not fetched before the first is consumed.
    assert len(rsps.calls) == 1
    rest = list(pages)

    members = [m for page in [first, *rest] for m in page.members]
    assert [len(p.members) for p in [first, *rest]] == [100, 100, 50]
    assert [m.provider_user_id for m in members] == list(range(1, 251))
    assert members[0] == ProviderMember(1, "user1", "member", "30")
    assert len(rsps.calls) == 3
    assert provider.api_calls == 3
    assert all(c.request.headers["PRIVATE-TOKEN"] == TOKEN for c in rsps.calls)
    assert all(not p.not_modified for p in [first, *rest])


def test_roster_of_exactly_one_full_page_costs_one_request(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    add_roster_page(rsps, 1, range(1, 101), None, 100)
    assert sum(len(p.members) for p in provider.iter_roster(ACME)) == 100
    assert len(rsps.calls) == 1


def test_roster_without_pagination_headers_reads_until_a_short_page(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    # A proxy that strips X-Next-Page and Link must not truncate the roster:
    # a truncated roster would remove everyone on the unread pages.
    for page, ids in ((1, range(1, 101)), (2, range(101, 131))):
        rsps.get(
            MEMBERS,
            json=[member_json(i) for i in ids],
            match=[matchers.query_param_matcher({"page": str(page), "per_page": "100"})],
        )
    assert sum(len(p.members) for p in provider.iter_roster(ACME)) == 130
    assert len(rsps.calls) == 2


@pytest.mark.parametrize(
    ("row", "role"),
    [
        (member_json(1, 50), "admin"),
        (member_json(1, 40), "admin"),
        (member_json(1, 30), "member"),
        (member_json(1, 20), "member"),
        (member_json(1, 15), "member"),
        (member_json(1, 10), "member"),
        (member_json(1, 5), None),  # Minimal access
        (member_json(1, 40, expires_at=(date.today() - timedelta(days=1)).isoformat()), None),
        (member_json(1, 40, expires_at=date.today().isoformat()), None),
        (member_json(1, 40, expires_at=(date.today() + timedelta(days=3)).isoformat()), "admin"),
        (member_json(1, 30, expires_at="2012-10-22T14:13:35Z"), None),  # older docs' shape
        (member_json(1, 30, state="awaiting"), None),
        (member_json(1, 50, state="blocked"), None),
        (member_json(1, 30, membership_state="awaiting"), None),
        (member_json(1, 30, membership_state="active"), "member"),
    ],
)
def test_access_level_mapping(
    rsps: responses.RequestsMock,
    provider: GitLabProvider,
    row: dict[str, Any],
    role: AccessRole | None,
) -> None:
    rsps.get(f"{MEMBERS}/1", json=row)
    member = provider.get_member(ACME, 1, "user1")
    assert member == ProviderMember(1, "user1", role, str(row["access_level"]))
    assert len(rsps.calls) == 1


def test_roster_maps_every_row(rsps: responses.RequestsMock, provider: GitLabProvider) -> None:
    rows = [
        member_json(1, 50),
        member_json(2, 5),
        member_json(3, 30, state="awaiting"),
        member_json(4, 30, expires_at="2001-01-01"),
    ]
    rsps.get(MEMBERS, json=rows, headers=page_headers(1, None, 4))
    [page] = list(provider.iter_roster(ACME))
    assert [(m.provider_user_id, m.role, m.raw_role) for m in page.members] == [
        (1, "admin", "50"),
        (2, None, "5"),
        (3, None, "30"),
        (4, None, "30"),
    ]


def test_get_member_of_a_non_member_is_none(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    rsps.get(f"{MEMBERS}/99", json={"message": "404 Not found"}, status=404)
    assert provider.get_member(ACME, 99, "ghost") is None
    assert len(rsps.calls) == 1


def test_get_org(rsps: responses.RequestsMock, provider: GitLabProvider) -> None:
    rsps.get(
        f"{API}/groups/7",
        json=group_json(7, "acme"),
        match=[matchers.query_param_matcher({"with_projects": "false"})],
    )
    assert provider.get_org(7) == ProviderOrg("gitlab", 7, "acme", "Acme")
    assert len(rsps.calls) == 1


def test_get_org_not_found(rsps: responses.RequestsMock, provider: GitLabProvider) -> None:
    rsps.get(f"{API}/groups/7", json={"message": "404 Group Not Found"}, status=404)
    with pytest.raises(NotFound):
        provider.get_org(7)
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_our_token_rejected_is_auth_broken(
    rsps: responses.RequestsMock, provider: GitLabProvider, status: int
) -> None:
    rsps.get(f"{API}/groups/7", json={"message": f"{status} Unauthorized"}, status=status)
    rsps.get(MEMBERS, json={"message": f"{status} Unauthorized"}, status=status)
    with pytest.raises(AuthBroken):
        provider.get_org(7)
    with pytest.raises(AuthBroken):
        list(provider.iter_roster(ACME))
    assert len(rsps.calls) == 2


def test_primary_rate_limit_gives_the_reset_time(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    reset = int(datetime.now(UTC).timestamp()) + 120
    rsps.get(
        MEMBERS,
        json={"message": "Retry later"},
        status=429,
        headers={
            "RateLimit-Limit": "2000",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(reset),
            "Retry-After": "120",
        },
    )
    with pytest.raises(RateLimited) as info:
        list(provider.iter_roster(ACME))
    assert info.value.reset_at == datetime.fromtimestamp(reset, tz=UTC)
    assert info.value.secondary is False
    # No retry and no sleep inside python-gitlab: exactly one request.
    assert len(rsps.calls) == 1


def test_rate_limit_with_only_retry_after_is_secondary(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    rsps.get(
        f"{API}/groups/7",
        json={"message": "Retry later"},
        status=429,
        headers={"Retry-After": "30"},
    )
    before = datetime.now(UTC)
    with pytest.raises(RateLimited) as info:
        provider.get_org(7)
    after = datetime.now(UTC)
    assert info.value.secondary is True
    assert before + timedelta(seconds=30) <= info.value.reset_at <= after + timedelta(seconds=30)
    assert len(rsps.calls) == 1


def test_rate_limit_without_headers_waits_at_least_a_minute(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    rsps.get(f"{MEMBERS}/3", json={"message": "Retry later"}, status=429)
    before = datetime.now(UTC)
    with pytest.raises(RateLimited) as info:
        provider.get_member(ACME, 3, "user3")
    assert info.value.secondary is True
    assert info.value.reset_at >= before + timedelta(seconds=60)
    assert len(rsps.calls) == 1


# 408: the request timed out on the way; like a 5xx, worth another try later.
@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_server_errors_and_timeouts_are_transient_and_not_retried(
    rsps: responses.RequestsMock, provider: GitLabProvider, status: int
) -> None:
    rsps.get(f"{API}/groups/7", json={"message": "boom"}, status=status)
    with pytest.raises(TransientProviderError):
        provider.get_org(7)
    assert len(rsps.calls) == 1


@pytest.mark.parametrize(
    "exc",
    [
        requests.ConnectionError("refused"),
        requests.ReadTimeout("slow"),
        requests.ConnectTimeout("slow"),
    ],
)
def test_network_failures_are_transient(
    rsps: responses.RequestsMock, provider: GitLabProvider, exc: Exception
) -> None:
    rsps.get(f"{API}/groups/7", body=exc)
    with pytest.raises(TransientProviderError):
        provider.get_org(7)
    assert len(rsps.calls) == 1
    assert provider.api_calls == 1


def test_failure_on_page_two_comes_after_page_one(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    add_roster_page(rsps, 1, range(1, 101), 2, 250)
    rsps.get(
        MEMBERS,
        json={"message": "500 Internal Server Error"},
        status=500,
        match=[matchers.query_param_matcher({"page": "2", "per_page": "100"})],
    )
    pages = provider.iter_roster(ACME)
    assert len(next(pages).members) == 100
    with pytest.raises(TransientProviderError):
        next(pages)
    assert len(rsps.calls) == 2


def test_redirect_is_not_followed(rsps: responses.RequestsMock, provider: GitLabProvider) -> None:
    # requests would re-send PRIVATE-TOKEN to the redirect's host.
    rsps.get(f"{API}/groups/7", status=302, headers={"Location": "https://evil.test/x"})
    rsps.get("https://evil.test/x", json=group_json(7, "acme"))
    with pytest.raises(ProviderError):
        provider.get_org(7)
    assert [c.request.url for c in rsps.calls] == [f"{API}/groups/7?with_projects=false"]


def test_top_level_group_walks_parents_by_id(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    rsps.get(f"{API}/namespaces/30", json=namespace_json(30, "acme/web/frontend", parent_id=20))
    rsps.get(f"{API}/namespaces/20", json=namespace_json(20, "acme/web", parent_id=7))
    rsps.get(f"{API}/namespaces/7", json=namespace_json(7, "acme"))
    org = provider.get_top_level_group(30)
    assert (org.org_id, org.login, org.provider) == (7, "acme", "gitlab")
    assert [c.request.url for c in rsps.calls] == [
        f"{API}/namespaces/30",
        f"{API}/namespaces/20",
        f"{API}/namespaces/7",
    ]


def test_top_level_group_of_a_root_group_is_itself(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    rsps.get(f"{API}/namespaces/7", json=namespace_json(7, "acme"))
    assert provider.get_top_level_group(7).org_id == 7
    assert len(rsps.calls) == 1


def test_personal_namespace_is_not_a_tenant_group(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    rsps.get(f"{API}/namespaces/55", json=namespace_json(55, "alice", kind="user"))
    with pytest.raises(NotAGroup) as info:
        provider.get_top_level_group(55)
    assert isinstance(info.value, NotFound)
    assert len(rsps.calls) == 1


def test_unknown_namespace_is_not_found(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    rsps.get(f"{API}/namespaces/56", json={"message": "404 Namespace Not Found"}, status=404)
    with pytest.raises(NotFound):
        provider.get_top_level_group(56)
    assert len(rsps.calls) == 1


def test_parent_cycle_is_refused(rsps: responses.RequestsMock, provider: GitLabProvider) -> None:
    rsps.get(f"{API}/namespaces/1", json=namespace_json(1, "a/b", parent_id=2))
    rsps.get(f"{API}/namespaces/2", json=namespace_json(2, "a", parent_id=1))
    with pytest.raises(ProviderError):
        provider.get_top_level_group(1)
    assert len(rsps.calls) == 2


def _groups_query(level: int, page: int = 1) -> list[Any]:
    return [
        matchers.query_param_matcher(
            {
                "top_level_only": "true",
                "min_access_level": str(level),
                "page": str(page),
                "per_page": "100",
            }
        )
    ]


def test_token_orgs_with_admin_and_member_roles(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    rsps.get(
        f"{API}/groups",
        json=[group_json(7, "acme")],
        match=_groups_query(40),
        headers={"X-Next-Page": ""},
    )
    rsps.get(
        f"{API}/groups",
        json=[group_json(7, "acme"), group_json(8, "beta")],
        match=_groups_query(10),
        headers={"X-Next-Page": "2"},
    )
    rsps.get(
        f"{API}/groups",
        json=[group_json(9, "gamma")],
        match=_groups_query(10, page=2),
        headers={"X-Next-Page": ""},
    )

    orgs = list(provider.iter_token_orgs(USER_TOKEN))

    assert orgs == [
        TokenOrg(ProviderOrg("gitlab", 7, "acme", "Acme"), "admin"),
        TokenOrg(ProviderOrg("gitlab", 8, "beta", "Beta"), "member"),
        TokenOrg(ProviderOrg("gitlab", 9, "gamma", "Gamma"), "member"),
    ]
    assert len(rsps.calls) == 3
    for call in rsps.calls:
        assert call.request.headers["Authorization"] == f"Bearer {USER_TOKEN}"
        assert "PRIVATE-TOKEN" not in call.request.headers
    assert provider.api_calls == 3


def test_token_user(rsps: responses.RequestsMock, provider: GitLabProvider) -> None:
    rsps.get(
        f"{API}/user", json={"id": 42, "username": "alice", "name": "Alice", "state": "active"}
    )
    assert provider.get_token_user(USER_TOKEN) == ProviderUser(42, "alice")
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {USER_TOKEN}"
    assert "PRIVATE-TOKEN" not in rsps.calls[0].request.headers
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_user_token(
    rsps: responses.RequestsMock, provider: GitLabProvider, status: int
) -> None:
    rsps.get(f"{API}/user", json={"message": "401 Unauthorized"}, status=status)
    rsps.get(f"{API}/groups", json={"message": "401 Unauthorized"}, status=status)
    with pytest.raises(InvalidUserToken) as info:
        provider.get_token_user(USER_TOKEN)
    assert USER_TOKEN not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None
    with pytest.raises(InvalidUserToken):
        list(provider.iter_token_orgs(USER_TOKEN))
    assert len(rsps.calls) == 2


def test_user_token_failure_of_the_provider_is_transient(
    rsps: responses.RequestsMock, provider: GitLabProvider
) -> None:
    rsps.get(f"{API}/user", json={"message": "502 Bad Gateway"}, status=502)
    with pytest.raises(TransientProviderError):
        provider.get_token_user(USER_TOKEN)
    assert len(rsps.calls) == 1


# -- end to end against FakeGitLab over loopback ---------------------------------


@pytest.fixture
def fake(server: FakeProviderServer) -> FakeGitLab:
    fake = server.gitlab
    fake.add_group(10, "acme", name="Acme Inc")
    fake.add_group(11, "platform", parent_id=10)
    fake.add_group(12, "ci", parent_id=11)
    return fake


@pytest.fixture
def live(server: FakeProviderServer, fake: FakeGitLab) -> GitLabProvider:
    return GitLabProvider(server.gitlab_url, DEFAULT_TOKEN)


def test_e2e_roster_of_250_costs_three_roster_requests(
    fake: FakeGitLab, live: GitLabProvider
) -> None:
    fake.add_members(10, ((i, f"user{i}", 30) for i in range(1, 251)))
    fake.set_access_level(10, 1, 50)
    fake.add_member(10, 251, "minimal", access_level=5)

    org = live.get_org(10)
    assert org == ProviderOrg("gitlab", 10, "acme", "Acme Inc")
    members = [m for page in live.iter_roster(org) for m in page.members]

    assert len(members) == 251
    assert len({m.provider_user_id for m in members}) == 251
    roles = {m.provider_user_id: m.role for m in members}
    assert (roles[1], roles[2], roles[251]) == ("admin", "member", None)
    assert fake.roster_requests(10) == 3  # ceil(251 / 100)
    assert fake.request_count == 4  # + get_org
    assert live.api_calls == 4


def test_e2e_roster_above_gitlabs_count_limit(fake: FakeGitLab, live: GitLabProvider) -> None:
    # Above 10,000 rows GitLab drops X-Total and rel="last"; paging must not care.
    fake.add_members(10, ((i, f"user{i}", 30) for i in range(1, 10_051)))
    total = sum(len(p.members) for p in live.iter_roster(ProviderOrg("gitlab", 10, "acme")))
    assert total == 10_050
    assert fake.roster_requests(10) == 101


def test_e2e_server_error_on_page_two(fake: FakeGitLab, live: GitLabProvider) -> None:
    fake.add_members(10, ((i, f"user{i}", 30) for i in range(1, 251)))
    fake.fail_page(10, 2, status=500)
    pages = live.iter_roster(ProviderOrg("gitlab", 10, "acme"))
    first = next(pages)
    assert [m.provider_user_id for m in first.members] == list(range(1, 101))
    with pytest.raises(TransientProviderError):
        next(pages)
    assert fake.roster_requests(10) == 2
    assert [r.status for r in fake.requests] == [200, 500]


def test_e2e_rate_limited(fake: FakeGitLab, live: GitLabProvider) -> None:
    reset = int(datetime.now(UTC).timestamp()) + 300
    fake.rate_limit(reset_at=reset, retry_after=300)
    with pytest.raises(RateLimited) as info:
        live.get_org(10)
    assert info.value.reset_at == datetime.fromtimestamp(reset, tz=UTC)
    assert not info.value.secondary
    assert live.get_org(10).org_id == 10  # the limit was for one request
    assert fake.request_count == 2


def test_e2e_subgroup_resolves_to_root_by_id(fake: FakeGitLab, live: GitLabProvider) -> None:
    # The root is renamed and an attacker takes over its old path: a CI token
    # from acme's subgroup must still resolve to group 10, not to the new "acme".
    fake.rename_group(10, "acme-corp")
    fake.add_group(99, "acme", name="Not Acme")
    org = live.get_top_level_group(12)
    assert (org.org_id, org.login) == (10, "acme-corp")
    assert [r.path for r in fake.requests] == [
        "/api/v4/namespaces/12",
        "/api/v4/namespaces/11",
        "/api/v4/namespaces/10",
    ]


def test_e2e_personal_namespace(fake: FakeGitLab, live: GitLabProvider) -> None:
    fake.add_user(500, "alice", namespace_id=600)
    with pytest.raises(NotAGroup):
        live.get_top_level_group(600)
    with pytest.raises(NotFound):
        live.get_top_level_group(601)


def test_e2e_member_changes(fake: FakeGitLab, live: GitLabProvider) -> None:
    fake.add_member(10, 1, "alice", access_level=30)
    assert live.get_member(ACME_LIVE, 1, "alice") == ProviderMember(1, "alice", "member", "30")
    fake.set_access_level(10, 1, 40)
    fake.rename_user(1, "alice2")
    assert live.get_member(ACME_LIVE, 1, None) == ProviderMember(1, "alice2", "admin", "40")
    fake.set_member_state(10, 1, "awaiting")
    assert live.get_member(ACME_LIVE, 1, None) == ProviderMember(1, "alice2", None, "40")
    fake.remove_member(10, 1)
    assert live.get_member(ACME_LIVE, 1, None) is None
    assert live.api_calls == 4


def test_e2e_deleted_group_and_revoked_token(fake: FakeGitLab, live: GitLabProvider) -> None:
    fake.delete_group(10)
    with pytest.raises(NotFound):
        live.get_org(11)  # subgroups go with their root
    fake.revoke_token(DEFAULT_TOKEN)
    with pytest.raises(AuthBroken):
        live.get_org(10)


def test_e2e_token_orgs_and_user(fake: FakeGitLab, live: GitLabProvider) -> None:
    fake.add_group(20, "beta")
    fake.add_group(30, "gamma")
    fake.add_group(40, "delta")
    fake.add_group(50, "eps")
    fake.add_user_token("user-oauth", 1, "alice")
    fake.add_member(10, 1, access_level=50)
    fake.add_member(20, 1, access_level=30)
    fake.add_member(30, 1, access_level=5)  # minimal access: not listed
    fake.add_member(40, 1, access_level=40, expires_at="2001-01-01")  # expired: not listed
    fake.add_member(11, 1, access_level=50)  # subgroup: not a top-level group
    fake.add_member(50, 2, "bob", access_level=50)  # someone else's group

    assert live.get_token_user("user-oauth") == ProviderUser(1, "alice")
    orgs = {t.org.org_id: t.role for t in live.iter_token_orgs("user-oauth")}
    assert orgs == {10: "admin", 20: "member"}
    assert live.api_calls == 3

    fake.revoke_token("user-oauth")
    with pytest.raises(InvalidUserToken):
        live.get_token_user("user-oauth")


ACME_LIVE = ProviderOrg("gitlab", 10, "acme")


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, {"id": 41, "username": "js", "state": "active"}, ProviderUser(41, "js")),
    (200, {"id": 41, "username": "js", "state": "blocked"}, ProviderUser(41, "js")),  # blocked is not deleted
    (404, {"message": "404 User Not Found"}, None),
])
def test_get_user_answers_none_only_for_a_deleted_account(
    rsps: responses.RequestsMock, provider: GitLabProvider, status: int, body: dict[str, Any],
    expected: ProviderUser | None,
) -> None:
    rsps.get(f"{API}/users/41", json=body, status=status)
    assert provider.get_user(41) == expected


def test_get_user_when_gitlab_is_down_is_transient(rsps: responses.RequestsMock, provider: GitLabProvider) -> None:
    rsps.get(f"{API}/users/41", json={"message": "502"}, status=502)
    with pytest.raises(TransientProviderError):
        provider.get_user(41)


def test_gitlab_has_no_app_installations(provider: GitLabProvider) -> None:
    assert provider.list_installations() == []
    with pytest.raises(ProviderError):
        provider.get_org_installation(ProviderOrg("gitlab", 7, "acme"))
