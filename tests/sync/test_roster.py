"""The pure planner: stored roster + provider listing -> plan. Table-driven."""
from __future__ import annotations

from datetime import date

import pytest

from models.store import StoredMember
from sync.providers.base import ProviderMember
from sync.roles import github_role, gitlab_role
from sync.roster import Plan, RoleChange, plan, plan_member, removal_held

S = StoredMember


def P(uid: int, login: str, role: str | None) -> ProviderMember:
    return ProviderMember(uid, login, role)  # type: ignore[arg-type]


CASES = [
    pytest.param({}, [], True, Plan(), id="empty"),
    pytest.param(
        {},
        [P(1, "ann", "admin"), P(2, "bob", "member")],
        True,
        Plan(adds=(S(1, "ann", "admin"), S(2, "bob", "member"))),
        id="adds",
    ),
    pytest.param(
        {1: S(1, "ann", "admin"), 2: S(2, "bob", "member")},
        [P(1, "ann", "admin")],
        True,
        Plan(removals=(2,)),
        id="removal",
    ),
    pytest.param(
        {1: S(1, "ann", "member")},
        [P(1, "ann", "admin")],
        True,
        Plan(role_changes=(RoleChange(S(1, "ann", "admin"), "member"),)),
        id="promotion",
    ),
    pytest.param(
        {1: S(1, "ann", "admin")},
        [P(1, "ann", "billing")],
        True,
        Plan(role_changes=(RoleChange(S(1, "ann", "billing"), "admin"),)),
        id="demotion-to-billing",
    ),
    pytest.param(
        # GitHub pending invitation / GitLab minimal access or expired: the
        # adapter reports role None, which gives no access.
        {},
        [P(1, "ann", github_role("member", "pending")), P(2, "bob", gitlab_role(5))],
        True,
        Plan(),
        id="pending-and-minimal-not-added",
    ),
    pytest.param(
        {1: S(1, "ann", "member")},
        [P(1, "ann", gitlab_role(30, "2020-01-01", today=date(2024, 1, 1)))],
        True,
        Plan(removals=(1,)),
        id="expired-removed",
    ),
    pytest.param(
        {1: S(1, "ann", "member")},
        [P(1, "ann", gitlab_role(5))],
        True,
        Plan(removals=(1,)),
        id="minimal-access-removed",
    ),
    pytest.param(
        {1: S(1, "ann", "member"), 2: S(2, "bob", "member")},
        [P(1, "ann", "member"), P(3, "cy", "admin")],
        False,
        Plan(adds=(S(3, "cy", "admin"),), complete=False, unconfirmed=1),
        id="incomplete-no-removals",
    ),
    pytest.param(
        {1: S(1, "ann", "member")},
        [P(1, "ann", None)],
        False,
        Plan(complete=False, unconfirmed=1),
        id="incomplete-no-access-not-removed",
    ),
    pytest.param(
        {1: S(1, "ann", "member")},
        [P(1, "ann-renamed", "member")],
        True,
        Plan(login_changes=(S(1, "ann-renamed", "member"),)),
        id="login-change-keeps-entry",
    ),
    pytest.param(
        {1: S(1, "ann", "member")},
        [P(1, "ann2", "admin")],
        True,
        Plan(
            role_changes=(RoleChange(S(1, "ann2", "admin"), "member"),),
            login_changes=(S(1, "ann2", "admin"),),
        ),
        id="login-and-role-change",
    ),
    pytest.param(
        # The owner's roster entry is planned like anyone's: the roster keeps
        # the provider's role; "owner" is the workspace's view (store.role_in).
        {1: S(1, "owner", "member")},
        [P(1, "owner", "member")],
        True,
        Plan(),
        id="owner-roster-role-kept",
    ),
    pytest.param(
        # GitHub lists admins and members separately: a member promoted mid-walk
        # appears twice; the higher role wins and there is one entry.
        {},
        [P(1, "ann", "admin"), P(1, "ann", "member")],
        True,
        Plan(adds=(S(1, "ann", "admin"),)),
        id="duplicate-higher-role-wins",
    ),
    pytest.param(
        {1: S(1, "a", "member"), 2: S(2, "b", "admin")},
        [P(2, "b", "admin"), P(1, "a", "member")],
        True,
        Plan(),
        id="unchanged",
    ),
]


@pytest.mark.parametrize(("stored", "listing", "complete", "expected"), CASES)
def test_plan(
    stored: dict[int, StoredMember], listing: list[ProviderMember], complete: bool, expected: Plan
) -> None:
    assert plan(stored, listing, complete=complete) == expected


def test_plan_streams_an_iterator() -> None:
    """The listing may be a generator (pages streamed from the adapter)."""
    stored = {i: S(i, f"u{i}", "member") for i in range(0, 1000, 2)}
    listing = (P(i, f"u{i}", "member") for i in range(1000))
    result = plan(stored, listing, complete=True)
    assert len(result.adds) == 500 and not result.removals and result.seen == 1000


@pytest.mark.parametrize(
    ("stored_role", "current", "expected"),
    [
        (None, P(7, "x", "member"), Plan(adds=(S(7, "x", "member"),))),
        ("member", None, Plan(removals=(7,))),
        ("member", P(7, "x", None), Plan(removals=(7,))),  # now pending / minimal
        ("member", P(7, "x", "admin"), Plan(role_changes=(RoleChange(S(7, "x", "admin"), "member"),))),
        (None, None, Plan()),
        # An answer about somebody else is not an answer about this member.
        (None, P(8, "y", "member"), Plan()),
    ],
)
def test_plan_member(stored_role: str | None, current: ProviderMember | None, expected: Plan) -> None:
    stored = S(7, "x", stored_role) if stored_role else None
    assert plan_member(stored, 7, current) == expected


@pytest.mark.parametrize(
    ("stored", "removals", "fraction", "held"),
    [
        (9, 9, 0.5, False),  # small rosters are never held
        (10, 5, 0.5, False),  # exactly the fraction is allowed
        (10, 6, 0.5, True),
        (100, 0, 0.5, False),
        (100, 11, 0.1, True),
        (100, 100, 1.0, False),  # a fraction of 1 disables the guard
        (0, 0, 0.5, False),
    ],
)
def test_removal_guard(stored: int, removals: int, fraction: float, held: bool) -> None:
    assert removal_held(stored, removals, fraction) is held
