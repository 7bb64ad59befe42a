"""sync.orgs.full_sync: the full-sync rules of SPEC section 6, against the
FakeProvider. Asserted through the stored roster, the activity log, the
recorded sync runs and the provider calls."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from models import store
from sync.errors import AuthBroken, ProviderError, RateLimited, TransientProviderError
from sync.members import member_reads
from sync.orgs import full_sync
from tests.sync.unit.conftest import GH_INSTALLATION, Org, make_ctx

RESET = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def sync(org: Org, *, force: bool = False) -> None:
    full_sync(org.ctx, org.workspace_id, trigger="test", force=force)


def seeded(org: Org, uids: range) -> Org:
    """The provider has these members and the store has synced them."""
    org.fake.add_members(org.org_id, uids)
    sync(org)
    org.fake.calls.clear()
    org.mark()
    return org


def test_first_sync_adds_every_member_with_their_role(any_org: Org) -> None:
    any_org.fake.add_member(any_org.org_id, 1, "ann", "admin")
    any_org.fake.add_member(any_org.org_id, 2, "bob")
    sync(any_org)
    assert any_org.roster() == {1: ("ann", "admin"), 2: ("bob", "member")}
    assert any_org.actions("member.") == ["member.added", "member.added"]
    run = any_org.last_run()
    assert (run.kind, run.result, run.added, run.removed, run.changed) == ("full", "ok", 2, 0, 0)
    assert run.api_calls == any_org.fake.api_calls


def test_a_member_without_access_is_not_added(any_org: Org) -> None:
    any_org.fake.add_member(any_org.org_id, 1, "pending", None)
    sync(any_org)
    assert any_org.roster() == {}
    assert any_org.last_run().result == "ok"


def test_a_departure_is_confirmed_by_one_membership_read_then_removed(any_org: Org) -> None:
    seeded(any_org, range(1, 4))
    any_org.fake.remove_member(any_org.org_id, 2)
    sync(any_org)
    assert set(any_org.roster()) == {1, 3}
    reads = any_org.fake.calls_to("get_member")
    assert [c.args[1:] for c in reads] == [(2, "user2")]
    removed = any_org.activity("member.removed")
    assert [a.details["provider_user_id"] for a in removed] == [2]
    assert any_org.last_run().details["removal_check"]["method"] == "member_reads"


def test_a_member_missing_from_the_listing_but_still_a_member_is_kept(any_org: Org) -> None:
    seeded(any_org, range(1, 4))
    any_org.fake.hide_from_listing(any_org.org_id, 2)
    sync(any_org)
    assert set(any_org.roster()) == {1, 2, 3}
    assert any_org.actions("member.") == []
    assert any_org.last_run().details["removal_check"]["still_members"] == 1


def test_a_removal_hinted_by_the_batch_needs_no_membership_read(any_org: Org) -> None:
    seeded(any_org, range(1, 4))
    any_org.fake.remove_member(any_org.org_id, 3)
    full_sync(any_org.ctx, any_org.workspace_id, trigger="test", hinted_absent=frozenset({3}))
    assert set(any_org.roster()) == {1, 2}
    assert any_org.fake.calls_to("get_member") == []


def test_role_changes_and_new_logins_are_applied_in_place(any_org: Org) -> None:
    seeded(any_org, range(1, 4))
    any_org.fake.set_role(any_org.org_id, 1, "admin")
    any_org.fake.rename_user(2, "bobby")
    sync(any_org)
    assert any_org.roster() == {1: ("user1", "admin"), 2: ("bobby", "member"), 3: ("user3", "member")}
    (change,) = any_org.activity("member.")
    assert (change.action, change.details["from"], change.details["to"]) == ("member.role_changed", "member",
                                                                              "admin")
    run = any_org.last_run()
    assert (run.added, run.removed, run.changed, run.details["login_changes"]) == (0, 0, 1, 1)


def test_mass_removal_is_held_with_nothing_applied_and_no_reads_spent(any_org: Org) -> None:
    seeded(any_org, range(1, 11))
    for uid in range(1, 7):
        any_org.fake.remove_member(any_org.org_id, uid)
    any_org.fake.add_member(any_org.org_id, 50, "newcomer")
    any_org.fake.set_role(any_org.org_id, 10, "admin")
    sync(any_org)
    assert any_org.roster() == {uid: (f"user{uid}", "member") for uid in range(1, 11)}
    assert any_org.actions() == ["sync.held"]
    run = any_org.last_run()
    assert run.result == "held"
    assert (run.details["would_remove"], run.details["would_add"], run.details["would_change"]) == (6, 1, 1)
    assert any_org.fake.calls_to("get_member") == []


def test_a_forced_sync_applies_what_the_guard_held(any_org: Org) -> None:
    seeded(any_org, range(1, 11))
    for uid in range(1, 7):
        any_org.fake.remove_member(any_org.org_id, uid)
    sync(any_org)
    sync(any_org, force=True)
    assert set(any_org.roster()) == set(range(7, 11))
    runs = any_org.runs()
    assert [(r.result, r.forced, r.removed) for r in runs[-2:]] == [("held", False, 0), ("ok", True, 6)]
    assert len(any_org.fake.calls_to("get_member")) == 6  # each removal confirmed, forced or not


def test_the_guard_follows_the_configured_fraction(any_org: Org) -> None:
    seeded(any_org, range(1, 11))
    any_org.ctx = make_ctx(any_org.ctx.session_factory, any_org.fake, max_removal_fraction=0.1)
    for uid in (1, 2):
        any_org.fake.remove_member(any_org.org_id, uid)
    sync(any_org)
    assert (any_org.last_run().result, len(any_org.roster())) == ("held", 10)


def test_the_guard_leaves_a_small_roster_alone(any_org: Org) -> None:
    seeded(any_org, range(1, 10))
    for uid in range(1, 9):
        any_org.fake.remove_member(any_org.org_id, uid)
    sync(any_org)
    assert set(any_org.roster()) == {9}
    assert any_org.last_run().result == "ok"


def test_many_removals_are_confirmed_by_a_second_listing(any_org: Org) -> None:
    seeded(any_org, range(1, 251))
    for uid in range(1, 102):
        any_org.fake.remove_member(any_org.org_id, uid)
    sync(any_org)
    assert len(any_org.roster()) == 149
    assert len(any_org.fake.calls_to("iter_roster")) == 2
    assert any_org.fake.calls_to("get_member") == []
    assert any_org.last_run().details["removal_check"]["method"] == "second_listing"


def test_an_org_rename_follows_the_login(any_org: Org) -> None:
    seeded(any_org, range(1, 3))
    any_org.fake.rename_org(any_org.org_id, "acme-renamed")
    sync(any_org)
    ws = any_org.workspace()
    assert ws.provider_org_login == "acme-renamed"
    assert any_org.actions("workspace.") == ["workspace.renamed"]
    assert any_org.last_run().details["renamed"] == {"from": "acme", "to": "acme-renamed"}
    assert set(any_org.roster()) == {1, 2}


@pytest.mark.parametrize("error", [TransientProviderError("502"), RateLimited(RESET)],
                         ids=["transient", "rate_limited"])
def test_a_listing_that_stops_part_way_applies_nothing_and_is_raised(any_org: Org, error: Exception) -> None:
    any_org.fake.per_page = 2
    seeded(any_org, range(1, 4))
    any_org.fake.remove_member(any_org.org_id, 1)
    any_org.fake.add_member(any_org.org_id, 9, "new", "admin")
    any_org.fake.fail("iter_roster", error, page=2)
    with pytest.raises(type(error)):
        sync(any_org)
    assert set(any_org.roster()) == {1, 2, 3}
    assert any_org.actions("member.") == []
    run = any_org.last_run()
    assert run.result == ("rate_limited" if isinstance(error, RateLimited) else "failed")
    assert run.details["pages_read"] == 1 and run.details["stage"] == "roster"


def test_a_rate_limit_records_when_to_try_again(any_org: Org) -> None:
    any_org.fake.fail("get_org", RateLimited(RESET, secondary=True))
    with pytest.raises(RateLimited) as raised:
        sync(any_org)
    assert raised.value.reset_at == RESET
    run = any_org.last_run()
    assert (run.result, run.details["reset_at"], run.details["secondary"]) == (
        "rate_limited", RESET.isoformat(), True)
    assert any_org.fake.calls_to("iter_roster") == []


def test_a_failed_confirmation_read_applies_nothing(any_org: Org) -> None:
    seeded(any_org, range(1, 4))
    any_org.fake.remove_member(any_org.org_id, 1)
    any_org.fake.add_member(any_org.org_id, 9)
    any_org.fake.fail("get_member", TransientProviderError("timeout"))
    with pytest.raises(TransientProviderError):
        sync(any_org)
    assert set(any_org.roster()) == {1, 2, 3}
    assert any_org.last_run().details["stage"] == "confirm_removals"


def test_a_permanent_provider_error_is_recorded_on_the_run_and_not_raised(any_org: Org) -> None:
    seeded(any_org, range(1, 3))
    any_org.fake.add_member(any_org.org_id, 9)
    any_org.fake.fail("iter_roster", ProviderError("GitHub answered 422"))
    sync(any_org)
    run = any_org.last_run()
    assert (run.result, run.error, run.details["error_type"]) == ("failed", "GitHub answered 422",
                                                                  "ProviderError")
    assert set(any_org.roster()) == {1, 2}
    assert any_org.workspace().link_status == "ok"


def test_an_org_gone_from_our_sight_marks_the_link_broken_and_keeps_the_roster(any_org: Org) -> None:
    seeded(any_org, range(1, 3))
    any_org.fake.delete_org(any_org.org_id)
    sync(any_org)
    assert any_org.last_run().result == "auth_broken"
    assert any_org.workspace().link_status == "broken"
    assert set(any_org.roster()) == {1, 2}
    assert any_org.actions("member.") == []


def test_an_uninstalled_app_is_auth_broken_and_the_next_good_sync_mends_the_link(gh: Org) -> None:
    seeded(gh, range(1, 3))
    gh.fake.uninstall(GH_INSTALLATION)
    sync(gh)
    assert (gh.last_run().result, gh.workspace().link_status) == ("auth_broken", "broken")
    assert gh.last_run().details["error_type"] == AuthBroken.__name__
    gh.fake.install(GH_INSTALLATION, gh.org_id, "acme")
    sync(gh)
    assert (gh.last_run().result, gh.workspace().link_status) == ("ok", "ok")


def test_an_unchanged_github_org_is_answered_from_the_etag_cache(gh: Org) -> None:
    gh.fake.per_page = 5
    seeded(gh, range(1, 13))
    sync(gh)
    run = gh.last_run()
    # The org read, then admins (1 page) and members (3 pages), every page a 304.
    assert (run.api_calls, run.not_modified) == (5, 4)
    assert set(gh.roster()) == set(range(1, 13))


def test_a_disconnected_workspace_is_skipped_without_asking_the_provider(any_org: Org) -> None:
    with any_org.ctx.session() as s:
        store.disconnect(s, store.get_workspace(s, any_org.workspace_id), actor="test")
    any_org.fake.add_member(any_org.org_id, 1)
    sync(any_org)
    assert any_org.last_run().result == "skipped"
    assert any_org.fake.calls == []
    assert any_org.roster() == {}


def test_a_github_org_without_a_known_installation_asks_for_it_before_skipping(gh: Org) -> None:
    with gh.ctx.session() as s:
        ws = store.create_provider_workspace(s, "github", 4242, "late", actor="test")
        late_id = ws.id
    gh.fake.add_org(4242, "late", installation_id=88)
    gh.fake.add_member(4242, 1, "ann")
    full_sync(gh.ctx, late_id, trigger="test")
    with gh.ctx.session() as s:
        assert store.get_workspace(s, late_id).installation_id == 88
        assert set(store.roster(s, late_id)) == {1}
    assert len(gh.fake.calls_to("get_org_installation")) == 1


def billing_manager(gh: Org, uid: int = 900) -> None:
    """A billing manager in the store (login sync or a member read puts them
    there); GitHub's member listings never include one."""
    gh.fake.add_member(gh.org_id, uid, "biller", "billing")
    member_reads(gh.ctx, gh.workspace_id, [(uid, "biller")], trigger="test")
    assert gh.roster()[uid] == ("biller", "billing")


def test_a_billing_manager_missing_from_the_listing_is_kept_by_a_membership_read(gh: Org) -> None:
    seeded(gh, range(1, 4))
    billing_manager(gh)
    sync(gh)
    assert gh.roster()[900] == ("biller", "billing")
    assert gh.last_run().details["removal_check"]["still_members"] == 1


def test_a_billing_manager_survives_removals_confirmed_by_a_second_listing(gh: Org) -> None:
    # Found by this tier: a second listing cannot see a billing manager either,
    # so every billing entry was removed once more than 100 members left.
    seeded(gh, range(1, 251))
    billing_manager(gh)
    for uid in range(1, 102):
        gh.fake.remove_member(gh.org_id, uid)
    sync(gh)
    check = gh.last_run().details["removal_check"]
    assert check["method"] == "second_listing+member_reads"
    assert check["still_members"] == 1
    assert gh.roster()[900] == ("biller", "billing")
    assert not set(range(1, 102)) & set(gh.roster())
    assert len(gh.fake.calls_to("get_member")) == 2  # the billing_manager() seed's read, then the check's


def test_a_billing_manager_who_left_is_removed_by_the_membership_read(gh: Org) -> None:
    seeded(gh, range(1, 4))
    billing_manager(gh)
    gh.fake.remove_member(gh.org_id, 900)
    sync(gh)
    assert 900 not in gh.roster()
    assert gh.last_run().removed == 1


def test_billing_managers_do_not_trip_the_mass_removal_guard(gh: Org) -> None:
    # Found by this tier: billing managers counted as planned removals before
    # anyone read them, so an org of mostly billing managers was held on every sync.
    seeded(gh, range(1, 5))
    for uid in range(900, 906):
        billing_manager(gh, uid)
    sync(gh)  # nothing changed on GitHub
    assert gh.last_run().result == "ok"
    assert set(range(900, 906)) <= set(gh.roster())


def test_hinted_departures_are_removed_when_a_second_listing_confirms_the_rest(gh: Org) -> None:
    # The hinted ones (a webhook said "left" and the listing agrees) were
    # dropped from the confirmed set when a second listing checked the others.
    seeded(gh, range(1, 251))
    for uid in range(1, 103):
        gh.fake.remove_member(gh.org_id, uid)
    full_sync(gh.ctx, gh.workspace_id, trigger="test", hinted_absent=frozenset({1}))
    check = gh.last_run().details["removal_check"]
    assert (check["method"], check["hinted"], check["candidates"]) == ("second_listing", 1, 102)
    assert not set(range(1, 103)) & set(gh.roster())
    assert "removals_kept_unconfirmed" not in gh.last_run().details
