"""Full and targeted org syncs against the fake provider server (real HTTP on
loopback), on SQLite and PostgreSQL.

Assertions are what a user or operator sees: the stored roster, activity
entries, sync-run records and the requests the fake provider received.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from demo.fakes.gitlab_server import DEFAULT_TOKEN
from demo.fakes.server import FakeProviderServer
from models import store
from models.config import Settings
from models.store import RunResult
from models.tables import Activity, HttpCacheEntry, RosterEntry, SyncRun, Workspace
from sync.context import SyncContext, build_sync_context
from sync.errors import RateLimited, TransientProviderError
from sync.orgs import adopt_installation, full_sync, member_sync, rename_workspace

APP_ID = "4242"
GH_ORG, GH_INSTALLATION = 9001, 77
GL_GROUP = 500
LEVEL = {"admin": 40, "member": 30}


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync must never sleep (rate limits are the job layer's business)."""

    def refuse(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s")

    monkeypatch.setattr(time, "sleep", refuse)


def make_ctx(
    session_factory: sessionmaker[Session], server: FakeProviderServer, app_key: str, **overrides: Any
) -> SyncContext:
    settings = Settings(
        github_api_url=server.github_api_url,
        github_app_id=APP_ID,
        github_app_private_key=app_key,
        gitlab_url=server.gitlab_url,
        gitlab_token=DEFAULT_TOKEN,
        **overrides,
    )
    # The production factory, pointed at the fake server.
    return build_sync_context(settings, session_factory)


@pytest.fixture
def ctx(session_factory: sessionmaker[Session], server: FakeProviderServer, app_key: str) -> SyncContext:
    return make_ctx(session_factory, server, app_key)


@dataclass
class Org:
    """One org on the fake server plus its workspace, for either provider."""

    provider: str
    server: FakeProviderServer
    ctx: SyncContext
    workspace_id: str = ""

    @property
    def org_id(self) -> int:
        return GH_ORG if self.provider == "github" else GL_GROUP

    def setup(self, login: str = "acme", owner_uid: int | None = None) -> Org:
        if self.provider == "github":
            self.server.github.add_org(GH_ORG, login, installation_id=GH_INSTALLATION)
        else:
            self.server.gitlab.add_group(GL_GROUP, login)
        with self.ctx.session() as s:
            owner = None
            if owner_uid is not None:
                owner, _ = store.get_or_create_user_for_identity(
                    s, self.provider, owner_uid, f"user{owner_uid}", actor="test"
                )
            ws = store.create_provider_workspace(
                s, self.provider, self.org_id, login, actor="test", owner=owner,
                installation_id=GH_INSTALLATION if self.provider == "github" else None,
            )
            self.workspace_id = ws.id
        return self

    def add(self, uid: int, role: str = "member", login: str | None = None) -> None:
        login = login or f"user{uid}"
        if self.provider == "github":
            self.server.github.add_member(GH_ORG, uid, login, role)  # type: ignore[arg-type]
        else:
            self.server.gitlab.add_member(GL_GROUP, uid, login, LEVEL[role])

    def add_many(self, uids: range, role: str = "member") -> None:
        if self.provider == "github":
            self.server.github.add_members(GH_ORG, ((u, f"user{u}", role) for u in uids))  # type: ignore[misc]
        else:
            self.server.gitlab.add_members(GL_GROUP, ((u, f"user{u}", LEVEL[role]) for u in uids))

    def remove(self, uid: int) -> None:
        if self.provider == "github":
            self.server.github.remove_member(GH_ORG, uid)
        else:
            self.server.gitlab.remove_member(GL_GROUP, uid)

    def set_role(self, uid: int, role: str) -> None:
        if self.provider == "github":
            self.server.github.set_role(GH_ORG, uid, role)  # type: ignore[arg-type]
        else:
            self.server.gitlab.set_access_level(GL_GROUP, uid, LEVEL[role])

    def rename_org(self, new: str) -> None:
        if self.provider == "github":
            self.server.github.rename_org(GH_ORG, new)
        else:
            self.server.gitlab.rename_group(GL_GROUP, new)

    def rename_user(self, uid: int, new: str) -> None:
        if self.provider == "github":
            self.server.github.rename_user(uid, new)
        else:
            self.server.gitlab.rename_user(uid, new)

    def fail_roster_page(self, page: int) -> None:
        """Page ``page`` of the (member) roster listing answers 500."""
        if self.provider == "github":
            self.server.github.fail_page("member", page, 500, times=None)
        else:
            self.server.gitlab.fail_page(GL_GROUP, page, 500)

    def rate_limit(self, kind: str) -> None:
        if self.provider == "github":
            if kind == "primary":
                self.server.github.rate_limit("primary", reset=int(time.time()) + 1800,
                                              path_contains="/members", times=None)
            else:
                self.server.github.rate_limit("secondary", retry_after=90, path_contains="/members",
                                              times=None)
        elif kind == "primary":
            self.server.gitlab.rate_limit(None, reset_at=int(time.time()) + 1800,
                                          path_contains="/members")
        else:
            self.server.gitlab.rate_limit(None, retry_after=90, path_contains="/members")

    def break_credentials(self) -> None:
        if self.provider == "github":
            self.server.github.revoke_installation(GH_INSTALLATION)
        else:
            self.server.gitlab.revoke_token(DEFAULT_TOKEN)

    def roster_requests(self) -> int:
        if self.provider == "github":
            return sum(
                1 for r in self.server.github.requests if r.path.endswith("/members")
            )
        return self.server.gitlab.roster_requests(GL_GROUP)

    def request_count(self) -> int:
        if self.provider == "github":
            return self.server.github.request_count
        return self.server.gitlab.request_count

    def reset_log(self) -> None:
        self.server.github.reset_log()
        self.server.gitlab.reset_log()

    # ---- store views

    def roster(self) -> dict[int, tuple[str, str]]:
        with self.ctx.session() as s:
            rows = s.execute(
                select(RosterEntry.provider_user_id, RosterEntry.login, RosterEntry.role).where(
                    RosterEntry.workspace_id == self.workspace_id
                )
            )
            return {uid: (login, role) for uid, login, role in rows}

    def workspace(self) -> Workspace:
        with self.ctx.session() as s:
            return store.get_workspace(s, self.workspace_id)

    def actions(self) -> list[str]:
        with self.ctx.session() as s:
            return list(
                s.scalars(
                    select(Activity.action)
                    .where(Activity.workspace_id == self.workspace_id)
                    .order_by(Activity.seq)
                )
            )

    def runs(self) -> list[SyncRun]:
        with self.ctx.session() as s:
            return list(
                s.scalars(select(SyncRun).where(SyncRun.workspace_id == self.workspace_id)
                          .order_by(SyncRun.id))
            )


PROVIDERS = ["github", "gitlab"]


@pytest.fixture(params=PROVIDERS)
def org(request: pytest.FixtureRequest, server: FakeProviderServer, ctx: SyncContext,
        no_sleep: None) -> Org:
    return Org(request.param, server, ctx).setup()


def sync(org: Org, **kw: Any) -> RunResult:
    return full_sync(org.ctx, org.workspace_id, trigger="test", **kw)


# --------------------------------------------------------------------------- basics


def test_adds_removals_and_role_changes_land_with_activity(org: Org) -> None:
    org.add(1, "admin")
    org.add(2)
    org.add(3)
    first = sync(org)
    assert first.result == "ok"
    assert (first.added, first.removed, first.changed) == (3, 0, 0)
    assert org.roster() == {1: ("user1", "admin"), 2: ("user2", "member"), 3: ("user3", "member")}

    org.remove(3)
    org.set_role(2, "admin")
    org.add(4)
    second = sync(org)
    assert (second.result, second.added, second.removed, second.changed) == ("ok", 1, 1, 1)
    assert org.roster() == {1: ("user1", "admin"), 2: ("user2", "admin"), 4: ("user4", "member")}

    actions = org.actions()
    assert actions.count("member.added") == 4
    assert actions.count("member.removed") == 1
    assert actions.count("member.role_changed") == 1
    assert actions.count("sync.finished") == 2
    with org.ctx.session() as s:
        entry = s.scalars(select(Activity).where(Activity.action == "member.role_changed")).one()
        assert entry.actor == f"sync:{second.id}"
        assert entry.details == {"provider_user_id": 2, "login": "user2", "from": "member", "to": "admin"}
        # No account for user 2 here: the subject is the provider id (SPEC section 3).
        assert entry.subject == f"{org.provider}:2"
    run = org.runs()[-1]
    assert run.kind == "full" and run.trigger == "test" and run.finished_at is not None
    assert org.workspace().last_full_sync_at is not None


def _counter_updates(fn: Any) -> tuple[Any, int]:
    """fn's result and how many activity sequence allocations it made."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    seen: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE COUNTERS"):
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", on_execute)
    try:
        return fn(), len(seen)
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)


def _entries(org: Org, after: int) -> list[tuple[int, str, str]]:
    with org.ctx.session() as s:
        return [(a.seq, a.action, a.actor) for a in s.scalars(
            select(Activity).where(Activity.workspace_id == org.workspace_id, Activity.seq > after)
            .order_by(Activity.seq))]


def test_a_syncs_changes_and_its_finish_are_logged_together(org: Org) -> None:
    """Additions, full sync or member sync: the change entries and the run's
    own entry take one sequence allocation, in order, changes first."""
    from models.activity import latest_seq

    with org.ctx.session() as s:
        before = latest_seq(s)
    org.add_many(range(1, 4))
    run, allocations = _counter_updates(lambda: sync(org))
    assert run.added == 3 and allocations == 1
    entries = _entries(org, before)
    assert [a for _, a, _ in entries] == ["member.added"] * 3 + ["sync.finished"]
    assert [seq for seq, _, _ in entries] == list(range(entries[0][0], entries[0][0] + 4))
    assert {actor for _, _, actor in entries} == {f"sync:{run.id}"}

    before = entries[-1][0]
    org.add(9, "admin")
    run, allocations = _counter_updates(
        lambda: member_sync(org.ctx, org.workspace_id, 9, "user9", trigger="webhook:d1"))
    assert run.added == 1 and allocations == 1
    assert [a for _, a, _ in _entries(org, before)] == ["member.added", "sync.finished"]


def test_removals_are_logged_before_the_ownership_they_move_and_the_finish(
    server: FakeProviderServer, ctx: SyncContext, no_sleep: None
) -> None:
    from models.activity import latest_seq

    org = Org("github", server, ctx).setup(login="order-github", owner_uid=1)
    org.add(1, "admin")
    org.add(30, "admin")
    with ctx.session() as s:
        store.get_or_create_user_for_identity(s, "github", 30, "user30", actor="test")
    sync(org)
    with ctx.session() as s:
        before = latest_seq(s)
    org.remove(1)
    org.add(40)
    sync(org)
    actions = [a for _, a, _ in _entries(org, before)]
    assert actions == ["member.added", "member.removed", "ownership.changed", "sync.finished"], actions


def test_failure_on_page_2_of_3_removes_nothing_and_records_why(org: Org) -> None:
    org.add_many(range(1, 251))
    sync(org)
    before = org.roster()
    assert len(before) == 250
    org.remove(10)
    org.remove(200)
    org.add(999)
    org.fail_roster_page(2)
    with pytest.raises(TransientProviderError):
        sync(org)
    assert org.roster() == before  # no removal, and (our choice) no partial adds either
    run = org.runs()[-1]
    assert run.result == "failed"
    assert "500" in (run.error or "")
    assert run.details is not None and run.details["pages_read"] >= 1
    assert run.details["error_type"] == "TransientProviderError"
    assert org.actions()[-1] == "sync.finished"

    org.server.github.clear_faults()
    org.server.gitlab.clear_faults()
    healed = sync(org)
    assert (healed.result, healed.added, healed.removed) == ("ok", 1, 2)


def test_mass_removal_guard_holds_then_force_applies(org: Org) -> None:
    org.add_many(range(1, 21))
    sync(org)
    for uid in range(1, 16):  # 15 of 20 = 75% > 50%
        org.remove(uid)
    org.add(100)
    held = sync(org)
    assert held.result == "held"
    assert (held.added, held.removed, held.changed) == (0, 0, 0)
    assert held.details["would_remove"] == 15 and held.details["would_add"] == 1
    assert "would remove 15 of 20" in held.error
    assert len(org.roster()) == 20  # nothing applied at all
    assert org.actions()[-1] == "sync.held"
    with org.ctx.session() as s:
        ws = s.get(Workspace, org.workspace_id)
        assert ws is not None
        last = store.last_sync_run(s, ws)
        assert last is not None and last.result == "held"  # what status shows

    forced = sync(org, force=True)
    assert (forced.result, forced.forced, forced.removed, forced.added) == ("ok", True, 15, 1)
    assert sorted(org.roster()) == [16, 17, 18, 19, 20, 100]


def test_removal_within_the_fraction_is_not_held(org: Org) -> None:
    org.add_many(range(1, 21))
    sync(org)
    for uid in range(1, 11):  # exactly 50%
        org.remove(uid)
    assert sync(org).removed == 10


@pytest.mark.parametrize("kind", ["primary", "secondary"])
def test_rate_limit_records_run_reraises_and_removes_nothing(org: Org, kind: str) -> None:
    org.add_many(range(1, 31))
    sync(org)
    for uid in range(1, 6):
        org.remove(uid)
    org.rate_limit(kind)
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        sync(org)
    assert time.monotonic() - started < 30  # and the no_sleep fixture forbids any sleep
    assert caught.value.secondary is (kind == "secondary")
    assert len(org.roster()) == 30
    run = org.runs()[-1]
    assert run.result == "rate_limited"
    assert run.details is not None
    assert run.details["reset_at"] == caught.value.reset_at.isoformat()
    assert run.details["secondary"] is (kind == "secondary")


def test_broken_credentials_mark_the_link_and_keep_the_roster(org: Org) -> None:
    org.add_many(range(1, 6))
    sync(org)
    org.break_credentials()
    result = sync(org)  # permanent: returned, not raised
    assert result.result == "auth_broken"
    assert len(org.roster()) == 5
    ws = org.workspace()
    assert ws.link_status == "broken" and ws.link_error
    assert "workspace.link_changed" in org.actions()


def test_link_heals_after_a_good_sync(org: Org) -> None:
    org.add(1)
    with org.ctx.session() as s:
        ws = store.get_workspace(s, org.workspace_id)
        store.mark_link(s, ws, "broken", "was broken", actor="test")
    assert sync(org).result == "ok"
    assert org.workspace().link_status == "ok"


def test_org_rename_is_followed_and_the_id_kept(org: Org) -> None:
    org.add(1)
    sync(org)
    org.rename_org("acme-two")
    result = sync(org)
    ws = org.workspace()
    assert ws.id == org.workspace_id
    assert ws.provider_org_login == "acme-two" and ws.name == "acme-two"
    assert result.details["renamed"] == {"from": "acme", "to": "acme-two"}
    assert "workspace.renamed" in org.actions()
    assert org.roster() == {1: ("user1", "member")}


def test_member_login_change_keeps_access(org: Org) -> None:
    org.add(7)
    with org.ctx.session() as s:
        store.get_or_create_user_for_identity(s, org.provider, 7, "user7", actor="test")
    sync(org)
    org.rename_user(7, "seven")
    result = sync(org)
    assert (result.added, result.removed, result.changed) == (0, 0, 0)
    assert result.details["login_changes"] == 1
    assert org.roster() == {7: ("seven", "member")}
    with org.ctx.session() as s:
        ident = store.get_identity(s, org.provider, 7)
        assert ident is not None
        ws = store.get_workspace(s, org.workspace_id)
        assert store.role_in(s, ws, ident.user) == "member"


def test_owner_leaving_hands_ownership_to_longest_standing_admin_with_account(
    server: FakeProviderServer, ctx: SyncContext, no_sleep: None, request: pytest.FixtureRequest
) -> None:
    for provider in PROVIDERS:
        org = Org(provider, server, ctx).setup(login=f"own-{provider}", owner_uid=1)
        org.add(1, "admin")  # the owner
        org.add(5, "admin")  # earliest admin, but no account
        org.add(30, "admin")  # admin with an account, in the roster first
        org.add(40)  # member with an account: not eligible
        with ctx.session() as s:
            for uid in (30, 40, 20):
                store.get_or_create_user_for_identity(s, provider, uid, f"user{uid}", actor="test")
        sync(org)
        org.add(20, "admin")  # account, lower id, but joined later
        sync(org)
        with ctx.session() as s:
            ws = store.get_workspace(s, org.workspace_id)
            owner_ident = store.get_identity(s, provider, 1)
            assert owner_ident is not None and ws.owner_id == owner_ident.user_id
            # The owner's roster role is kept; their workspace role is owner.
            assert org.roster()[1] == ("user1", "admin")
            assert store.role_in(s, ws, owner_ident.user) == "owner"
        org.remove(1)
        sync(org)
        with ctx.session() as s:
            ws = store.get_workspace(s, org.workspace_id)
            heir = store.get_identity(s, provider, 30)
            assert heir is not None and ws.owner_id == heir.user_id, provider
            assert ws.billing_user_id == heir.user_id
        assert "ownership.changed" in org.actions()


# --------------------------------------------------------------------------- API budget and ETags


@pytest.mark.parametrize("provider", PROVIDERS)
def test_api_budget_for_250_members(
    provider: str, server: FakeProviderServer, ctx: SyncContext, no_sleep: None
) -> None:
    n = 250
    org = Org(provider, server, ctx).setup()
    org.add_many(range(1, 6), "admin")
    org.add_many(range(6, n + 1))
    org.reset_log()
    result = sync(org)
    assert result.added == n
    pages = math.ceil(n / 100)
    if provider == "github":
        # Admins and members are listed separately (the list payload carries
        # no role): 1 admin page + 3 member pages; plus the installation token
        # exchange and the org read (rename check).
        assert org.roster_requests() == pages + 1
        assert org.request_count() == pages + 1 + 2
    else:
        # GitLab: 3 member pages plus the group read.
        assert org.roster_requests() == pages
        assert org.request_count() == pages + 1
    assert result.api_calls == org.request_count()


def test_unchanged_github_resync_is_answered_with_304s(
    server: FakeProviderServer, ctx: SyncContext, no_sleep: None
) -> None:
    org = Org("github", server, ctx).setup()
    org.add_many(range(1, 6), "admin")
    org.add_many(range(6, 251))
    first = sync(org)
    assert first.not_modified == 0
    org.reset_log()
    second = sync(org)
    roster_pages = 4
    assert second.result == "ok"
    assert (second.added, second.removed, second.changed) == (0, 0, 0)
    assert second.not_modified == roster_pages
    assert server.github.count("/members", status=304) == roster_pages
    # Pages plus the org read: the installation token minted by the first sync
    # is reused from the process's token cache.
    assert second.api_calls == server.github.request_count == roster_pages + 1
    assert len(org.roster()) == 250

    # A change on the last page: earlier pages still 304, the change lands.
    org.remove(250)
    third = sync(org)
    assert (third.removed, third.added) == (1, 0)
    assert third.not_modified == roster_pages - 1
    with ctx.session() as s:
        cached = s.scalars(
            select(HttpCacheEntry.url).where(HttpCacheEntry.workspace_id == org.workspace_id)
        ).all()
    assert len(cached) == roster_pages


# --------------------------------------------------------------------------- skipped


@pytest.mark.parametrize("status", ["disconnected", "suspended"])
def test_disconnected_or_suspended_workspace_is_not_synced(org: Org, status: str) -> None:
    org.add(1)
    with org.ctx.session() as s:
        ws = store.get_workspace(s, org.workspace_id)
        if status == "disconnected":
            store.disconnect(s, ws, actor="test")
        else:
            store.suspend(s, ws, actor="test")
    org.reset_log()
    result = sync(org)
    assert result.result == "skipped" and result.details == {"reason": status}
    assert org.request_count() == 0
    assert org.roster() == {}


def test_github_workspace_without_installation_is_not_fully_synced(
    server: FakeProviderServer, ctx: SyncContext
) -> None:
    server.github.add_org(GH_ORG, "acme")
    with ctx.session() as s:
        ws = store.create_provider_workspace(s, "github", GH_ORG, "acme", actor="test")
        assert ws.link_status == "no_installation"
        ws_id = ws.id
    result = full_sync(ctx, ws_id, trigger="cron")
    assert result.result == "skipped"
    assert result.details == {"reason": "no_installation"}
    assert "log in" in result.error
    # Asked GitHub before skipping: the org's installation (404), then the
    # org by id to rule out a stale login. Nothing else.
    assert server.github.count("/installation") == 1
    assert server.github.request_count == 2
    with ctx.session() as s:
        assert store.get_workspace(s, ws_id).installation_checked_at is not None


# --------------------------------------------------------------------------- member sync, webhooks


def test_member_sync_adds_updates_and_removes_one_entry(org: Org) -> None:
    org.add_many(range(1, 4))
    sync(org)
    org.add(9, "admin")
    org.remove(2)  # not re-read by the targeted sync of member 9: stays
    added = member_sync(org.ctx, org.workspace_id, 9, "user9", trigger="webhook:d1")
    assert (added.kind, added.result, added.added) == ("member", "ok", 1)
    assert org.roster() == {1: ("user1", "member"), 2: ("user2", "member"), 3: ("user3", "member"),
                            9: ("user9", "admin")}
    org.set_role(9, "member")
    changed = member_sync(org.ctx, org.workspace_id, 9, None, trigger="webhook:d2")
    assert changed.changed == 1 and org.roster()[9] == ("user9", "member")
    removed = member_sync(org.ctx, org.workspace_id, 2, "user2", trigger="webhook:d3")
    assert removed.removed == 1 and 2 not in org.roster()
    with org.ctx.session() as s:
        actors = set(s.scalars(select(Activity.actor).where(Activity.action == "member.removed")))
    assert actors == {f"sync:{removed.id}"}


def test_member_sync_rate_limited_is_recorded_and_reraised(org: Org) -> None:
    org.add(1)
    sync(org)
    org.remove(1)
    org.rate_limit("primary") if org.provider == "gitlab" else org.server.github.rate_limit(
        "primary", path_contains="/memberships", times=None
    )
    with pytest.raises(RateLimited):
        member_sync(org.ctx, org.workspace_id, 1, "user1", trigger="webhook:x")
    assert 1 in org.roster()
    assert org.runs()[-1].result == "rate_limited"


def test_rename_workspace_reads_the_org_by_id(org: Org) -> None:
    org.rename_org("acme-renamed")
    # The hint is ignored when the provider can be read: the provider is the truth.
    out = rename_workspace(org.ctx, org.workspace_id, trigger="webhook:r1", new_login="bogus")
    assert out.provider_org_login == "acme-renamed" and out.id == org.workspace_id


def test_adopt_unknown_installation_creates_workspace_without_syncing_inline(
    server: FakeProviderServer, ctx: SyncContext, no_sleep: None
) -> None:
    server.github.add_org(4444, "newco", installation_id=88)
    server.github.add_member(4444, 61, "installer", "admin")
    server.github.add_member(4444, 62, "dev")
    result = adopt_installation(ctx, 88, 4444, "newco", 61, trigger="webhook:inst-1")
    assert result.adopted is True and result.changed is True
    # The full sync is the caller's to queue (per-org serialisation): none ran here.
    assert server.github.request_count == 0
    with ctx.session() as s:
        ws = store.get_provider_workspace(s, "github", 4444)
        assert ws is not None
        assert ws.installation_id == 88 and ws.link_status == "ok" and ws.name == "newco"
        # The installer has no account yet: they become owner at first login.
        assert ws.owner_id is None and ws.pending_owner_provider_user_id == 61
        user, _ = store.get_or_create_user_for_identity(s, "github", 61, "installer", actor="test")
        s.flush()
        s.refresh(ws)
        assert ws.owner_id == user.id
    synced = full_sync(ctx, result.workspace_id, trigger="test")
    assert (synced.result, synced.added) == ("ok", 2)

    # Same installation again (a redelivered event): no second workspace.
    again = adopt_installation(ctx, 88, 4444, "newco", 61, trigger="webhook:inst-2")
    assert again.adopted is False and again.changed is False
    assert again.workspace_id == result.workspace_id
