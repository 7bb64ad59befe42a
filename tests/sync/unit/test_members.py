"""sync.members.member_reads: each answer is complete for its member only."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from models import store
from sync.errors import ProviderError, RateLimited, TransientProviderError
from sync.members import member_reads
from sync.orgs import full_sync
from tests.sync.unit.conftest import Org


def reads(org: Org, *hints: tuple[int, str | None]) -> None:
    member_reads(org.ctx, org.workspace_id, list(hints), trigger="test:batch")


@pytest.fixture
def team(any_org: Org) -> Org:
    """Members 1-3 on the provider and in the store."""
    any_org.fake.add_members(any_org.org_id, range(1, 4))
    full_sync(any_org.ctx, any_org.workspace_id, trigger="test")
    any_org.fake.calls.clear()
    any_org.mark()
    return any_org


def test_not_a_member_removes_exactly_that_member(team: Org) -> None:
    team.fake.remove_member(team.org_id, 2)
    team.fake.remove_member(team.org_id, 3)  # gone too, but nobody asked about 3
    reads(team, (2, "user2"))
    assert set(team.roster()) == {1, 3}
    assert [(c.method, c.args[1]) for c in team.fake.calls] == [("get_member", 2)]
    run = team.last_run()
    assert (run.kind, run.result, run.removed, run.trigger) == ("member", "ok", 1, "test:batch")
    assert run.details["member"] is False and run.details["provider_user_ids"] == [2]


def test_a_new_member_is_added_and_nobody_else(team: Org) -> None:
    team.fake.add_member(team.org_id, 7, "gina", "admin")
    team.fake.add_member(team.org_id, 8, "hal")  # not hinted: stays out
    team.fake.set_role(team.org_id, 1, "admin")  # not hinted: unchanged
    reads(team, (7, "gina"))
    assert team.roster() == {1: ("user1", "member"), 2: ("user2", "member"), 3: ("user3", "member"),
                             7: ("gina", "admin")}
    assert team.actions("member.") == ["member.added"]


def test_several_answers_apply_together_in_one_run(team: Org) -> None:
    team.fake.remove_member(team.org_id, 1)
    team.fake.set_role(team.org_id, 2, "admin")
    team.fake.add_member(team.org_id, 9, "ivy")
    reads(team, (1, "user1"), (2, "user2"), (9, "ivy"), (3, "user3"))
    assert team.roster() == {2: ("user2", "admin"), 3: ("user3", "member"), 9: ("ivy", "member")}
    assert [c.args[1] for c in team.fake.calls_to("get_member")] == [1, 2, 9, 3]
    (run,) = [r for r in team.runs() if r.kind == "member"]
    assert (run.added, run.removed, run.changed, run.details["members"]) == (1, 1, 1, 4)


def test_a_membership_without_access_counts_as_not_a_member(team: Org) -> None:
    team.fake.set_role(team.org_id, 3, None)  # GitHub: back to pending; GitLab: minimal access
    reads(team, (3, "user3"))
    assert set(team.roster()) == {1, 2}


def test_a_hint_without_a_login_is_read_with_the_stored_login(team: Org) -> None:
    reads(team, (2, None))
    (call,) = team.fake.calls_to("get_member")
    assert call.args[1:] == (2, "user2")
    assert team.actions("member.") == []


@pytest.mark.parametrize("error", [TransientProviderError("503"),
                                   RateLimited(datetime(2030, 1, 1, tzinfo=UTC))],
                         ids=["transient", "rate_limited"])
def test_an_error_part_way_applies_no_answer_and_is_raised(team: Org, error: Exception) -> None:
    team.fake.remove_member(team.org_id, 1)
    team.fake.fail("get_member", error, after=1)  # the second read, once 1 was answered
    with pytest.raises(type(error)):
        member_reads(team.ctx, team.workspace_id, [(1, "user1"), (2, "user2")], trigger="t")
    assert set(team.roster()) == {1, 2, 3}
    run = team.last_run()
    assert run.result == ("rate_limited" if isinstance(error, RateLimited) else "failed")


def test_a_permanent_error_is_recorded_on_the_run_and_returned(team: Org) -> None:
    team.fake.remove_member(team.org_id, 1)
    team.fake.fail("get_member", ProviderError("GitLab: object without a numeric id"))
    reads(team, (1, "user1"))
    run = team.last_run()
    assert (run.result, run.details["stage"]) == ("failed", "member")
    assert set(team.roster()) == {1, 2, 3}


def test_a_suspended_workspace_reads_nobody(team: Org) -> None:
    with team.ctx.session() as s:
        store.suspend(s, store.get_workspace(s, team.workspace_id), actor="test")
    team.fake.remove_member(team.org_id, 1)
    reads(team, (1, "user1"))
    assert team.last_run().result == "skipped"
    assert team.fake.calls == []
    assert set(team.roster()) == {1, 2, 3}
