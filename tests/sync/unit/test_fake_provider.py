"""The FakeProvider keeps the adapters' contract (sync/providers/base.py):
what the unit tier's other tests rely on."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sync.errors import AuthBroken, InvalidUserToken, NotFound, ProviderError, RateLimited
from sync.providers.base import CachedInstallations, CachedPage, Provider, ProviderOrg
from tests.fakes.provider import DictCache, FakeProvider

ORG = ProviderOrg("github", 1, "acme", installation_id=10)
GROUP = ProviderOrg("gitlab", 2, "grp")


def github(per_page: int = 100) -> FakeProvider:
    fake = FakeProvider("github", per_page=per_page)
    fake.add_org(1, "acme", installation_id=10)
    return fake


def test_is_a_provider() -> None:
    fake: Provider = FakeProvider("gitlab")
    assert isinstance(fake, Provider)


def test_github_roster_lists_admins_then_members_a_page_at_a_time_without_pending() -> None:
    fake = github(per_page=2)
    fake.add_member(1, 5, "eve", "admin")
    fake.add_members(1, range(10, 13))
    fake.add_member(1, 20, "pending", None)
    pages = list(fake.iter_roster(ORG))
    assert [[m.provider_user_id for m in p.members] for p in pages] == [[5], [10, 11], [12]]
    assert [m.role for p in pages for m in p.members] == ["admin", "member", "member", "member"]
    assert fake.api_calls == 3 and len(fake.calls_to("iter_roster")) == 1


def test_gitlab_roster_lists_members_without_access_and_reads_one_page_when_empty() -> None:
    fake = FakeProvider("gitlab")
    fake.add_org(2, "grp")
    assert [p.members for p in fake.iter_roster(GROUP)] == [[]]
    fake.add_member(2, 7, "min", None)
    fake.add_member(2, 8, "adm", "admin")
    (page,) = fake.iter_roster(GROUP)
    assert [(m.provider_user_id, m.role, m.raw_role) for m in page.members] == [(7, None, "5"), (8, "admin", "40")]
    assert fake.api_calls == 2


def test_conditional_walk_answers_unchanged_pages_from_the_cache() -> None:
    fake = github(per_page=2)
    fake.add_members(1, range(10, 14))
    cache = DictCache[CachedPage]()
    first = [m for p in fake.iter_roster(ORG, cache) for m in p.members]
    fake.set_role(1, 13, "admin")  # changes the admin page and the second member page
    pages = list(fake.iter_roster(ORG, cache))
    assert [p.not_modified for p in pages] == [False, True, False]
    assert fake.not_modified == 1
    assert {m.provider_user_id for p in pages for m in p.members} == {m.provider_user_id for m in first}


def test_a_failure_fires_once_on_its_page_after_the_earlier_pages() -> None:
    fake = github(per_page=1)
    fake.add_members(1, range(10, 13))
    fake.fail("iter_roster", RateLimited(datetime(2030, 1, 1, tzinfo=UTC)), page=3)
    seen: list[int] = []
    with pytest.raises(RateLimited):
        for page in fake.iter_roster(ORG):
            seen.extend(m.provider_user_id for m in page.members)
    assert seen == [10]  # page 1: admins (none), page 2: member 10
    assert fake.api_calls == 3  # the failed request counts
    assert [m.provider_user_id for p in fake.iter_roster(ORG) for m in p.members] == [10, 11, 12]


def test_member_reads_answer_by_id_and_need_the_installation() -> None:
    fake = github()
    fake.add_member(1, 5, "eve", "admin")
    fake.add_member(1, 6, "pat", None)
    fake.add_user(7, "stranger")
    assert fake.get_member(ORG, 5, "stale-login") is not None
    pending = fake.get_member(ORG, 6, None)
    assert pending is not None and pending.role is None
    assert fake.get_member(ORG, 7, "stranger") is None
    fake.delete_user(5)
    assert fake.get_member(ORG, 5, "eve") is None
    fake.set_suspended(10)
    with pytest.raises(AuthBroken):
        fake.get_member(ORG, 6, None)
    with pytest.raises(AuthBroken):
        fake.get_member(ProviderOrg("github", 1, "acme"), 6, None)


def test_orgs_users_and_installations() -> None:
    fake = github()
    fake.install(11, 3, "someone", account_type="User")
    fake.rename_org(1, "acme-2")
    assert fake.get_org(1).login == "acme-2"
    installation = fake.get_org_installation(ORG)
    assert installation is not None and installation.installation_id == 10 and installation.is_org
    assert [i.is_org for i in fake.list_installations()] == [True, False]
    fake.delete_org(1)
    with pytest.raises(NotFound):
        fake.get_org(1)
    assert fake.get_org_installation(ORG) is None
    assert fake.get_user(99) is None
    with pytest.raises(ProviderError):
        FakeProvider("gitlab").get_org_installation(GROUP)
    assert FakeProvider("gitlab").list_installations() == []


def test_installation_listing_is_paged_and_conditional() -> None:
    fake = FakeProvider("github", per_page=2)
    for i in range(3):
        fake.install(100 + i, i, f"org{i}")
    cache = DictCache[CachedInstallations]()
    assert [i.installation_id for i in fake.list_installations(cache)] == [100, 101, 102]
    assert [i.installation_id for i in fake.list_installations(cache)] == [100, 101, 102]
    assert (fake.api_calls, fake.not_modified) == (4, 2)


def test_tokens() -> None:
    fake = github()
    fake.add_org(2, "other")
    fake.add_member(1, 5, "eve", "admin")
    fake.add_member(2, 5, "eve", None)
    fake.add_token("tok", 5)
    assert fake.get_token_user("tok").login == "eve"
    assert [(t.org.login, t.role) for t in fake.iter_token_orgs("tok")] == [("acme", "admin")]
    with pytest.raises(InvalidUserToken):
        fake.get_token_user("nope")
