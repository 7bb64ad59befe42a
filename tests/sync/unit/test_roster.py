"""sync.roster.plan over provider walks (the table of single cases is
tests/sync/test_roster.py): what a walk of the FakeProvider plans against
the stored roster."""
from __future__ import annotations

from models import store
from models.store import StoredMember
from sync.orgs import full_sync
from sync.providers.base import ProviderMember
from sync.roster import plan
from tests.sync.unit.conftest import Org


def walk(org: Org) -> list[ProviderMember]:
    return [m for page in org.fake.iter_roster(org.provider_org()) for m in page.members]


def stored(org: Org) -> dict[int, StoredMember]:
    with org.ctx.session() as s:
        return store.roster(s, org.workspace_id)


def test_a_walk_of_the_synced_org_plans_nothing(any_org: Org) -> None:
    any_org.fake.per_page = 3
    any_org.fake.add_members(any_org.org_id, range(1, 8))
    any_org.fake.set_role(any_org.org_id, 4, "admin")
    any_org.fake.add_member(any_org.org_id, 20, "pending", None)
    full_sync(any_org.ctx, any_org.workspace_id, trigger="test")
    result = plan(stored(any_org), walk(any_org), complete=True)
    assert result.empty and result.seen == 7


def test_a_walk_plans_adds_removals_and_role_changes_sorted_by_id(any_org: Org) -> None:
    any_org.fake.add_members(any_org.org_id, range(1, 6))
    full_sync(any_org.ctx, any_org.workspace_id, trigger="test")
    for uid in (4, 2):
        any_org.fake.remove_member(any_org.org_id, uid)
    any_org.fake.add_member(any_org.org_id, 9, "zed", "admin")
    any_org.fake.add_member(any_org.org_id, 7, "amy")
    any_org.fake.set_role(any_org.org_id, 5, "admin")
    result = plan(stored(any_org), walk(any_org), complete=True)
    assert [m.provider_user_id for m in result.adds] == [7, 9]
    assert result.removals == (2, 4)
    assert [(c.member.provider_user_id, c.old_role, c.member.role) for c in result.role_changes] == [
        (5, "member", "admin")]


def test_a_member_promoted_between_the_github_role_pages_is_missing_from_the_walk(gh: Org) -> None:
    """Why a full sync confirms removals: GitHub lists admins, then members;
    a promotion in between hides the member from both listings."""
    gh.fake.add_members(gh.org_id, range(1, 4))
    full_sync(gh.ctx, gh.workspace_id, trigger="test")
    pages = gh.fake.iter_roster(gh.provider_org())
    listing = list(next(pages).members)  # the admin page: nobody yet
    gh.fake.set_role(gh.org_id, 2, "admin")
    listing += [m for page in pages for m in page.members]
    assert plan(stored(gh), listing, complete=True).removals == (2,)


def test_an_incomplete_walk_plans_no_removal(any_org: Org) -> None:
    any_org.fake.per_page = 2
    any_org.fake.add_members(any_org.org_id, range(1, 6))
    full_sync(any_org.ctx, any_org.workspace_id, trigger="test")
    any_org.fake.add_member(any_org.org_id, 9)
    first = walk(any_org)[:2] + [ProviderMember(9, "user9", "member")]
    result = plan(stored(any_org), first, complete=False)
    assert (result.removals, result.unconfirmed) == ((), 3)
    assert [m.provider_user_id for m in result.adds] == [9]
