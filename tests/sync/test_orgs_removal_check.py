# ruff: noqa: F811  (pytest fixtures imported from test_orgs are parameters here)
"""A member missing from a listing is re-checked before removal.

Both providers paginate member lists by offset; a member can fall between two
pages when someone leaves mid-walk. The provider below wraps the real adapter
(real HTTP to the fake server) and drops chosen members from listings, as
that race would; ``get_member`` still answers with the provider's truth.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from sync import orgs
from sync.errors import TransientProviderError
from sync.orgs import full_sync
from sync.providers.base import PageCache, Provider, ProviderOrg, RosterPage
from tests.sync.test_orgs import Org, ctx, no_sleep, org  # noqa: F401


class ListingDropsMembers:
    """Wraps a real adapter; its listings lose the given members."""

    def __init__(self, inner: Provider, dropped: set[int], *, drop_in_second_listing: bool = True) -> None:
        self._inner = inner
        self.dropped = dropped
        self.listings = 0
        self.drop_in_second_listing = drop_in_second_listing

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def iter_roster(self, org: ProviderOrg, cache: PageCache | None = None) -> Iterator[RosterPage]:
        self.listings += 1
        drop = self.listings == 1 or self.drop_in_second_listing
        for page in self._inner.iter_roster(org, cache):
            if drop:
                page = RosterPage([m for m in page.members if m.provider_user_id not in self.dropped],
                                  page.not_modified, page.url)
            yield page


def _wrap(org: Org, dropped: set[int], **kw: Any) -> list[ListingDropsMembers]:
    made: list[ListingDropsMembers] = []
    real = org.ctx.provider_for

    def provider_for(*args: Any, **kwargs: Any) -> Provider:
        wrapper = ListingDropsMembers(real(*args, **kwargs), dropped, **kw)
        made.append(wrapper)
        return wrapper  # type: ignore[return-value]

    org.ctx = replace(org.ctx, provider_for=provider_for)
    return made


def test_member_missing_from_listing_but_still_a_member_is_kept(org: Org) -> None:
    org.add_many(range(1, 31))
    assert full_sync(org.ctx, org.workspace_id, trigger="t").added == 30
    org.remove(30)  # really left
    _wrap(org, {7})  # fell between two pages
    run = full_sync(org.ctx, org.workspace_id, trigger="t")
    assert run.result == "ok" and run.removed == 1
    assert 7 in org.roster() and 30 not in org.roster()
    assert run.details["removal_check"] == {"method": "member_reads", "candidates": 2, "hinted": 0, "still_members": 1}


def test_many_candidates_are_checked_with_a_second_listing(org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orgs, "RECHECK_ONE_BY_ONE", 2)
    org.add_many(range(1, 31))
    full_sync(org.ctx, org.workspace_id, trigger="t")
    for uid in (28, 29, 30):
        org.remove(uid)
    made = _wrap(org, {5}, drop_in_second_listing=False)
    run = full_sync(org.ctx, org.workspace_id, trigger="t")
    assert made[0].listings == 2
    assert run.removed == 3 and 5 in org.roster()
    assert run.details["removal_check"]["method"] == "second_listing"


def test_a_failed_recheck_applies_nothing(org: Org) -> None:
    org.add_many(range(1, 21))
    full_sync(org.ctx, org.workspace_id, trigger="t")
    org.remove(20)
    org.add(99)
    made = _wrap(org, set())

    def broken_get_member(*args: Any, **kwargs: Any) -> Any:
        raise TransientProviderError("502 from the provider")

    real_factory = org.ctx.provider_for

    def provider_for(*args: Any, **kwargs: Any) -> Provider:
        p = real_factory(*args, **kwargs)
        p.get_member = broken_get_member  # type: ignore[method-assign]
        return p

    org.ctx = replace(org.ctx, provider_for=provider_for)
    with pytest.raises(TransientProviderError):
        full_sync(org.ctx, org.workspace_id, trigger="t")
    roster = org.roster()
    assert 20 in roster and 99 not in roster
    assert org.runs()[-1].result == "failed"
    assert org.runs()[-1].details["stage"] == "confirm_removals"
    assert made  # the wrapped factory was used


def test_unchanged_org_costs_no_extra_requests(org: Org) -> None:
    org.add_many(range(1, 21))
    full_sync(org.ctx, org.workspace_id, trigger="t")
    org.reset_log()
    run = full_sync(org.ctx, org.workspace_id, trigger="t")
    assert run.removed == 0 and "removal_check" not in run.details
    assert not any("/memberships/" in r.path or "/members/all/" in r.path
                   for r in [*org.server.github.requests, *org.server.gitlab.requests])
