"""The roster planner: stored roster + provider roster in, a plan out.

Pure: no database session, HTTP client, Flask or RQ. Members are keyed by
the provider's immutable numeric user id; logins are labels that may change.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from models.store import StoredMember
from sync.providers.base import ProviderMember
from sync.roles import outranks

# Rosters smaller than this are never held: removing 3 of 4 members is normal
# churn in a tiny org, not a sign of a broken listing.
GUARD_MIN_ROSTER = 10


@dataclass(frozen=True, slots=True)
class RoleChange:
    member: StoredMember  # the new state (login as the provider reports it now)
    old_role: str


@dataclass(frozen=True, slots=True)
class Plan:
    adds: tuple[StoredMember, ...] = ()
    removals: tuple[int, ...] = ()
    role_changes: tuple[RoleChange, ...] = ()
    login_changes: tuple[StoredMember, ...] = ()
    complete: bool = True
    # Stored members absent from an incomplete listing: not removed, only counted.
    unconfirmed: int = 0
    seen: int = field(default=0, compare=False)

    @property
    def empty(self) -> bool:
        return not (self.adds or self.removals or self.role_changes or self.login_changes)


def plan(
    stored: Mapping[int, StoredMember],
    provider: Iterable[ProviderMember],
    *,
    complete: bool,
) -> Plan:
    """Compare the stored roster with the provider's listing.

    Members whose provider role gives no access (GitHub pending, GitLab minimal
    access or expired) count as absent. Removals are planned only when
    ``complete`` says the whole listing was read: a member missing from a
    listing that stopped half way is unknown, not gone.
    """
    best: dict[int, ProviderMember] = {}
    for m in provider:
        if m.role is None:
            continue
        held = best.get(m.provider_user_id)
        if held is None or outranks(m.role, held.role):  # the higher role wins (sync.roles)
            best[m.provider_user_id] = m

    adds: list[StoredMember] = []
    role_changes: list[RoleChange] = []
    login_changes: list[StoredMember] = []
    for uid, m in best.items():
        role = m.role
        assert role is not None  # filtered above
        new = StoredMember(uid, m.login, role)
        old = stored.get(uid)
        if old is None:
            adds.append(new)
            continue
        if old.role != role:
            role_changes.append(RoleChange(new, old.role))
        if m.login and old.login != m.login:
            login_changes.append(new)

    absent = [uid for uid in stored if uid not in best]
    removals = tuple(sorted(absent)) if complete else ()
    return Plan(
        adds=tuple(sorted(adds, key=lambda s: s.provider_user_id)),
        removals=removals,
        role_changes=tuple(sorted(role_changes, key=lambda c: c.member.provider_user_id)),
        login_changes=tuple(sorted(login_changes, key=lambda s: s.provider_user_id)),
        complete=complete,
        unconfirmed=0 if complete else len(absent),
        seen=len(best),
    )


def plan_member(
    stored: StoredMember | None, provider_user_id: int, current: ProviderMember | None
) -> Plan:
    """The plan for one member re-read on its own (a targeted sync).

    The single answer is complete for that member, so "not a member" (None, or
    a membership that gives no access) removes just that entry.
    """
    stored_map = {provider_user_id: stored} if stored is not None else {}
    listing = [current] if current is not None and current.provider_user_id == provider_user_id else []
    return plan(stored_map, listing, complete=True)


def removal_held(stored_count: int, removals: int, max_fraction: float) -> bool:
    """The mass-removal guard (SPEC 6): a sync that would remove more than
    ``max_fraction`` of a roster of 10 or more is held for an operator.

    A listing that suddenly comes back near-empty (wrong org, lost
    visibility, a provider bug) must not strip everyone's access at once.
    """
    if stored_count < GUARD_MIN_ROSTER or removals == 0:
        return False
    return removals / stored_count > max_fraction
