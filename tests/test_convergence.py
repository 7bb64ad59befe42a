"""Convergence under load and faults: a hypothesis state machine.

Each example builds one or two orgs (GitHub orgs and/or GitLab top-level
groups) on the fake provider server, connects them as provider workspaces
(owner: an org admin with an account; first full sync), then takes random
steps:

- provider changes: members join (GitHub also as a pending invitation, GitLab
  also at minimal access or already expired), leave (one or several at once),
  change role, the org is renamed (possibly to a login another org just
  gave up), a user changes login (possibly to a login another user gave up),
  the owner leaves;
- the webhook each change makes, built from the providers' payloads in
  ``shared/corpus``, signed and posted through the Flask app's real
  endpoints, is LOST, posted once, REDELIVERED (same delivery id) or sent
  twice (two delivery ids); recorded deliveries are processed with
  ``sync.events.process_delivery`` in random order (REORDERED), sometimes
  under a provider fault (retried later), and sometimes processed again
  after they finished (a job run twice);
- full syncs: plain ones, ones with a provider fault (a roster page failing
  part way, primary and secondary rate limits, failing member re-reads), and
  ones during which the provider changes and a webhook is processed
  *between two roster pages* (a hook in the fake server), plus the full
  syncs that events asked for (a recording Enqueuer; a rule runs them).

Real adapters talk to the fake server over loopback HTTP with 3 members per
page, so small orgs have several roster pages and faults land mid-listing.

Checked after every step that syncs (see each rule): a sync that failed or
was rate limited removed nobody (and applied nothing); a sync removed no
member who was present at the provider throughout it; a plain sync that
finished ``ok`` left the store equal to the provider; a held sync applied
nothing and was held for a reason (roster of 10+, more than half removed).

Checked at the end of every example, after one scheduled full sync per
workspace (forced only when that run was held, after checking the hold):
the roster equals the provider's truth exactly (ids, roles, logins), the
workspace follows the org's login and name rule, the activity log replayed
from empty gives exactly the stored roster (each entry consistent with the
roster before it), every owner hand-over went to the longest-standing admin
with an account (else ownerless) and only when the owner had left, the owner
is a member, billing follows the owner; then every delivery still pending is
processed late and every queued sync run, and the store still equals the
provider.

Two depths: the default run does a quick pass (QUICK_EXAMPLES on SQLite and
on PostgreSQL); the `deep` marker (deselected by default, run by .ci/run)
does the bulk: 500 examples on SQLite (ORGSYNC_CONVERGENCE_EXAMPLES
overrides) and 100 on PostgreSQL. The counts run and what they exercised are
printed at the end of the module (-s or not).

Three bugs the machine found (a late GitLab user_rename relabelling with a
stale login; a GitHub member event read through an org login another org had
re-taken; a full sync re-applying its older listing over a newer member sync)
are fixed; the focused tests at the bottom keep them fixed.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import event, insert, select, update
from sqlalchemy.engine import Engine

from demo.fakes.github_server import FakeGitHub
from demo.fakes.gitlab_server import DEFAULT_TOKEN, FakeGitLab
from demo.fakes.server import FakeProviderServer
from models import store
from models.base import Base, make_engine
from models.config import Settings
from models.store import RunResult
from models.tables import (
    Activity,
    Counter,
    Delivery,
    Identity,
    RosterEntry,
    SyncRun,
    Workspace,
    utcnow,
)
from runtime.process import Runtime
from sync.context import SyncContext
from sync.errors import RateLimited, TransientProviderError
from sync.events import process_delivery
from sync.orgs import full_sync
from sync.providers.base import Provider
from sync.providers.github import GitHubProvider
from sync.providers.gitlab import GitLabProvider
from tests.app_world import APP_ID, GITHUB_SECRET, GITLAB_SECRET, World
from tests.conftest import need_corpus, need_postgres
from webhooks.app import create_app

# Small pages: a handful of members already spans several roster pages.
PER_PAGE = 3
USERS = range(1, 11)  # provider user ids, per provider
ORG_LOGINS = ("acme", "globex", "Acme", "initech", "u3")  # "u3": also a personal workspace name
GH_ORGS = ((9001, 701), (9002, 702))  # (org id, installation id)
GL_GROUPS = (500, 501)
GITLAB_LEVEL_NAMES = {50: "Owner", 40: "Maintainer", 30: "Developer", 20: "Reporter", 10: "Guest",
                      5: "Minimal Access"}
# How a member is granted access, per provider (see _grant_github/_grant_gitlab).
GRANTS = ("admin", "admin2", "member", "member2", "member3", "none", "expired")
MAX_REMOVAL_FRACTION = 0.5
SQLITE_EXAMPLES = int(os.environ.get("ORGSYNC_CONVERGENCE_EXAMPLES", "500"))
PG_EXAMPLES = 100
# About a second an example on SQLite on a 2-core machine: the quick pass
# keeps the default run short; the deep one is where bugs are found.
QUICK_EXAMPLES = 25


def depths(deep: int) -> list[Any]:
    return [pytest.param(QUICK_EXAMPLES, id="quick"), pytest.param(deep, id="deep", marks=pytest.mark.deep)]


# --------------------------------------------------------------------------- run-wide counters

EXAMPLES: dict[str, int] = {"sqlite": 0, "postgresql": 0}
STATS: dict[str, int] = {}


def _count(name: str, n: int = 1) -> None:
    STATS[name] = STATS.get(name, 0) + n


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    line = (
        f"convergence: {EXAMPLES['sqlite']} examples on SQLite, {EXAMPLES['postgresql']} on PostgreSQL; "
        + ", ".join(f"{k}={v}" for k, v in sorted(STATS.items()))
    )
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)
    else:  # pragma: no cover - pytest always has one unless -p no:terminal
        print(line, file=sys.stderr)


# --------------------------------------------------------------------------- provider truth helpers


def github_access(role: str, state: str) -> str | None:
    return role if state == "active" and role in ("admin", "member") else None


def gitlab_access(level: int, expires_at: str | None) -> str | None:
    if expires_at and date.fromisoformat(expires_at[:10]) <= date.today():
        return None
    if level >= 40:
        return "admin"
    if 10 <= level < 40:
        return "member"
    return None


def _grant_github(grant: str) -> tuple[str, str]:
    """(role, state) at GitHub."""
    if grant.startswith("admin"):
        return "admin", "active"
    if grant == "none":
        return "member", "pending"  # invited, not accepted: no access
    if grant == "expired":
        return "admin", "pending"
    return "member", "active"


def _grant_gitlab(grant: str) -> tuple[int, str | None]:
    """(access level, expires_at) at GitLab."""
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    return {
        "admin": (40, None), "admin2": (50, None), "member": (30, None), "member2": (20, None),
        "member3": (10, None), "none": (5, None), "expired": (30, yesterday),
    }[grant]


def name_candidates(login: str, provider: str, org_id: int) -> set[str]:
    """SPEC 3: login lowercased, else <login>-<provider>, else <login>-<provider>-<org id>."""
    base = login.lower()
    return {base, f"{base}-{provider}", f"{base}-{provider}-{org_id}"}


# --------------------------------------------------------------------------- the fake server, switchable


class Switchboard:
    """Mounted in FakeProviderServer in place of a fake: forwards to the
    current fake (replaced between examples) and runs a one-shot hook before
    the N-th request matching a predicate, in the server's request thread,
    while the syncing thread waits for that answer."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self.fake = factory()
        self._lock = threading.Lock()
        self._hook: tuple[Callable[[str, str], bool], list[int], Callable[[], None]] | None = None
        self.hook_errors: list[BaseException] = []
        self.hook_fired = False

    def reset(self) -> None:
        self.fake = self._factory()
        self.clear_hook()

    def set_hook(self, match: Callable[[str, str], bool], nth: int, action: Callable[[], None]) -> None:
        with self._lock:
            self._hook = (match, [nth], action)
            self.hook_fired = False

    def clear_hook(self) -> None:
        with self._lock:
            self._hook = None
            self.hook_errors = []
            self.hook_fired = False

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        action = None
        with self._lock:
            if self._hook is not None:
                match, left, act = self._hook
                if match(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")):
                    left[0] -= 1
                    if left[0] <= 0:
                        action, self._hook, self.hook_fired = act, None, True
        if action is not None:
            try:
                action()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                self.hook_errors.append(exc)
        return self.fake.wsgi(environ, start_response)


@dataclass
class Env:
    """One engine, one fake server, one app for a whole test run."""

    label: str
    engine: Engine
    github: Switchboard
    gitlab: Switchboard
    world: World
    settings: Settings
    redis: fakeredis.FakeRedis

    @property
    def gh(self) -> FakeGitHub:
        return self.github.fake  # type: ignore[no-any-return]

    @property
    def gl(self) -> FakeGitLab:
        return self.gitlab.fake  # type: ignore[no-any-return]

    def ctx(self) -> SyncContext:
        s = self.settings

        def provider_for(name: str, installation_id: int | None = None) -> Provider:
            # The production adapters, with small pages.
            if name == "github":
                return GitHubProvider(s.github_api_url, s.github_app_id, s.github_app_private_key,
                                      installation_id=installation_id, per_page=PER_PAGE)
            return GitLabProvider(s.gitlab_url, s.gitlab_token, per_page=PER_PAGE)

        return SyncContext(self.world.runtime.session_factory, s, provider_for)

    def reset(self) -> None:
        with self.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
            conn.execute(insert(Counter).values(name="activity", value=0))
        self.github.reset()
        self.gitlab.reset()
        self.redis.flushall()


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeProviderServer, Switchboard, Switchboard]]:
    github, gitlab = Switchboard(FakeGitHub), Switchboard(FakeGitLab)
    with FakeProviderServer(github=github, gitlab=gitlab) as server:  # type: ignore[arg-type]
        yield server, github, gitlab


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Thousands of syncs and deliveries: formatting their log lines would
    cost more than some of the work itself."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def _fast_sqlite(engine: Engine) -> None:
    # Durability is not under test; fsync per commit would dominate the run.
    def pragma(dbapi_connection: Any, _record: Any) -> None:
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        cur.close()

    event.listen(engine, "connect", pragma)


def build_env(label: str, url: str, server: tuple[FakeProviderServer, Switchboard, Switchboard],
              app_key: str) -> Env:
    srv, github, gitlab = server
    engine = make_engine(url)
    if url.startswith("sqlite"):
        _fast_sqlite(engine)
    Base.metadata.create_all(engine)
    settings = Settings(
        database_url=url,
        github_api_url=srv.github_api_url,
        github_app_id=APP_ID,
        github_app_private_key=app_key,
        github_webhook_secrets=(GITHUB_SECRET,),
        gitlab_url=srv.gitlab_url,
        gitlab_token=DEFAULT_TOKEN,
        gitlab_webhook_secrets=(GITLAB_SECRET,),
        max_removal_fraction=MAX_REMOVAL_FRACTION,
    )
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    runtime = Runtime(settings, redis_client=redis, engine=engine)
    app = create_app(runtime=runtime)
    world = World(app, app.test_client(), runtime, redis, srv)
    env = Env(label, engine, github, gitlab, world, settings, redis)
    env.reset()
    return env


# --------------------------------------------------------------------------- payloads (corpus shapes)


_TEMPLATES: dict[str, dict[str, Any]] = {}


def template(name: str) -> dict[str, Any]:
    if name not in _TEMPLATES:
        _TEMPLATES[name] = json.loads((need_corpus() / name).read_text())
    return copy.deepcopy(_TEMPLATES[name])


@dataclass
class OrgState:
    provider: str
    org_id: int
    installation_id: int | None
    login: str
    workspace_id: str = ""
    owner_user_id: str | None = None  # the connecting user


def gh_org_block(org: OrgState, payload: dict[str, Any]) -> None:
    payload["organization"]["id"] = org.org_id
    payload["organization"]["login"] = org.login
    payload["installation"] = {"id": org.installation_id, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="}


def gh_member_event(org: OrgState, action: str, uid: int, login: str, role: str, state: str) -> dict[str, Any]:
    name = {
        "member_added": "github/organization.member_added.with-installation.json",
        "member_removed": "github/organization.member_removed.ghes-35.json",
    }[action]
    payload = template(name)
    m = payload["membership"]
    m["user"]["id"], m["user"]["login"] = uid, login
    m["role"], m["state"] = role, state
    gh_org_block(org, payload)
    return payload


def gh_invited_event(org: OrgState, uid: int, login: str) -> dict[str, Any]:
    payload = template("github/organization.member_invited.json")
    payload["invitation"]["id"], payload["invitation"]["login"] = uid, login
    payload["user"] = {**payload.get("user", {}), "id": uid, "login": login}
    gh_org_block(org, payload)
    return payload


def gh_renamed_event(org: OrgState, old: str) -> dict[str, Any]:
    payload = template("github/organization.renamed.json")
    payload["changes"] = {"login": {"from": old}}
    gh_org_block(org, payload)
    return payload


def gl_member_event(org: OrgState, hook: str, event_name: str, uid: int, username: str, level: int,
                    expires_at: str | None) -> dict[str, Any]:
    prefix = "member_hook" if hook == "Member Hook" else "system_hook"
    payload = template(f"gitlab/{prefix}.{event_name}.json")
    payload.update({
        "event_name": event_name, "group_id": org.org_id, "group_path": org.login,
        "group_name": org.login, "user_id": uid, "user_username": username,
        "user_name": username, "group_access": GITLAB_LEVEL_NAMES[level],
    })
    if "expires_at" in payload or expires_at:
        payload["expires_at"] = f"{expires_at}T00:00:00Z" if expires_at else None
    return payload


def gl_group_rename_event(org: OrgState, old: str) -> dict[str, Any]:
    payload = template("gitlab/system_hook.group_rename.json")
    payload.update({"group_id": org.org_id, "name": org.login, "path": org.login,
                    "full_path": org.login, "old_path": old, "old_full_path": old})
    return payload


def gl_user_rename_event(uid: int, old: str, new: str) -> dict[str, Any]:
    payload = template("gitlab/system_hook.user_rename.json")
    payload.update({"user_id": uid, "username": new, "old_username": old, "name": new})
    return payload


@dataclass(frozen=True)
class Hook:
    """One webhook the provider sends after a change."""

    provider: str
    kind: str  # GitHub event / GitLab hook name
    payload: dict[str, Any]


class RecordingEnqueuer:
    """The Enqueuer of sync.events: remembers full-sync requests, coalesced
    per workspace (a second trigger joins the waiting one)."""

    def __init__(self) -> None:
        self.waiting: dict[str, list[str]] = {}

    def full_sync(self, workspace_id: str, trigger: str) -> None:
        self.waiting.setdefault(workspace_id, []).append(trigger)


# --------------------------------------------------------------------------- the machine


class Convergence(RuleBasedStateMachine):
    env: Env  # set by the test before running

    def __init__(self) -> None:
        super().__init__()
        self.env.reset()
        self.ctx = self.env.ctx()
        self.enqueuer = RecordingEnqueuer()
        self.orgs: list[OrgState] = []
        self.logins: dict[str, dict[int, str]] = {"github": {}, "gitlab": {}}
        self.accounts: dict[str, set[int]] = {"github": set(), "gitlab": set()}
        self.pending: list[str] = []  # recorded deliveries not yet finished
        self.finished: list[str] = []
        self.sent: list[tuple[Hook, str]] = []  # for redelivery
        self.hook_of: dict[str, Hook] = {}
        self.released: dict[str, list[str]] = {"github": [], "gitlab": []}  # org logins given up
        self.fresh = 0

    # ------------------------------------------------------------ setup

    @initialize(
        specs=st.lists(
            st.tuples(
                st.sampled_from(["github", "gitlab"]),
                st.dictionaries(st.sampled_from(list(USERS)), st.sampled_from(GRANTS),
                                min_size=2, max_size=10),
            ),
            min_size=1, max_size=2,
        ),
        accounts=st.sets(st.sampled_from(list(USERS))),
    )
    def setup(self, specs: list[tuple[str, dict[int, str]]], accounts: set[int]) -> None:
        EXAMPLES[self.env.label] += 1
        gh, gl = self.env.gh, self.env.gl
        for uid in USERS:
            gh.add_user(uid, f"u{uid}")
            gl.add_user(uid, f"u{uid}")
            self.logins["github"][uid] = self.logins["gitlab"][uid] = f"u{uid}"
        used: dict[str, int] = {"github": 0, "gitlab": 0}
        for provider, grants in specs:
            n = used[provider]
            used[provider] += 1
            # The connecting user: an admin of the org with an account.
            owner_uid = next(iter(grants))
            grants = {**grants, owner_uid: "admin"}
            if provider == "github":
                org_id, inst = GH_ORGS[n]
                org = OrgState("github", org_id, inst, ORG_LOGINS[n])
                gh.add_org(org_id, org.login, installation_id=inst)
            else:
                org = OrgState("gitlab", GL_GROUPS[n], None, ORG_LOGINS[n])
                gl.add_group(org.org_id, org.login)
            for uid, grant in grants.items():
                self._set_grant(org, uid, grant)
            self.accounts[provider] |= set(accounts) | {owner_uid}
            with self.ctx.session() as s:
                for p, uids in self.accounts.items():
                    for uid in uids:
                        store.get_or_create_user_for_identity(s, p, uid, self.logins[p][uid], actor="test")
                owner, _ = store.get_or_create_user_for_identity(s, provider, owner_uid, f"u{owner_uid}",
                                                                 actor="test")
                ws = store.create_provider_workspace(
                    s, provider, org.org_id, org.login, actor="test", owner=owner,
                    installation_id=org.installation_id,
                )
                org.workspace_id, org.owner_user_id = ws.id, owner.id
            self.orgs.append(org)
            first = full_sync(self.ctx, org.workspace_id, trigger="install")
            assert first.result == "ok", first
            assert self.roster(org) == self.truth(org)

    # ------------------------------------------------------------ provider model

    def _set_grant(self, org: OrgState, uid: int, grant: str) -> None:
        login = self.logins[org.provider][uid]
        if org.provider == "github":
            role, state = _grant_github(grant)
            self.env.gh.add_member(org.org_id, uid, login, role, state)  # type: ignore[arg-type]
        else:
            level, expires = _grant_gitlab(grant)
            if uid in self.env.gl.members[org.org_id]:
                self.env.gl.set_access_level(org.org_id, uid, level, expires)
            else:
                self.env.gl.add_member(org.org_id, uid, login, level, expires)

    def _membership(self, org: OrgState, uid: int) -> tuple[Any, ...] | None:
        """(role, state) at GitHub, (level, expires_at) at GitLab, or None."""
        if org.provider == "github":
            found = self.env.gh.members_of(org.org_id).get(uid)
            return (found[1], found[2]) if found else None
        m = self.env.gl.members[org.org_id].get(uid)
        return (m.access_level, m.expires_at) if m else None

    def truth(self, org: OrgState) -> dict[int, tuple[str, str]]:
        """The roster the provider's truth gives: {uid: (login, role)}."""
        out: dict[int, tuple[str, str]] = {}
        if org.provider == "github":
            for uid, (login, role, state) in self.env.gh.members_of(org.org_id).items():
                access = github_access(role, state)
                if access:
                    out[uid] = (login, access)
            return out
        gl = self.env.gl
        for uid, m in gl.members[org.org_id].items():
            access = gitlab_access(m.access_level, m.expires_at)
            if access and m.state == "active":
                out[uid] = (gl.users[uid].username, access)
        return out

    def provider_login(self, org: OrgState) -> str:
        if org.provider == "gitlab":
            return self.env.gl.full_path(org.org_id)
        return org.login

    # ------------------------------------------------------------ store views

    def roster(self, org: OrgState) -> dict[int, tuple[str, str]]:
        with self.ctx.session() as s:
            rows = s.execute(
                select(RosterEntry.provider_user_id, RosterEntry.login, RosterEntry.role)
                .where(RosterEntry.workspace_id == org.workspace_id)
            )
            return {int(uid): (login, role) for uid, login, role in rows}

    def workspace(self, org: OrgState) -> Workspace:
        with self.ctx.session() as s:
            return store.get_workspace(s, org.workspace_id)

    def member_activity(self, actor: str) -> list[Activity]:
        with self.ctx.session() as s:
            return list(s.scalars(
                select(Activity).where(Activity.actor == actor, Activity.action.like("member.%"))
            ))

    # ------------------------------------------------------------ webhooks

    def emit(self, hooks: list[Hook], fate: str) -> None:
        """What becomes of the provider's webhooks for one change."""
        if fate == "lost":
            _count("hooks_lost", len(hooks))
            return
        for hook in hooks:
            delivery = str(uuid.uuid4())
            self.post(hook, delivery)
            if fate == "redelivered":  # same delivery id: recorded once
                resp = self.post(hook, delivery, expect_new=False)
                assert resp["status"] == "duplicate", resp
                _count("hooks_redelivered")
            elif fate == "twice":  # a second delivery of the same news
                self.post(hook, str(uuid.uuid4()))
                _count("hooks_duplicated")

    def post(self, hook: Hook, delivery: str, *, expect_new: bool = True) -> dict[str, Any]:
        world = self.env.world
        if hook.provider == "github":
            resp = world.post_github(hook.kind, hook.payload, delivery=delivery)
        else:
            resp = world.post_gitlab(hook.kind, hook.payload, idempotency_key=delivery)
        body = resp.get_json()
        assert resp.status_code in (200, 202), (resp.status_code, body)
        if expect_new:
            assert resp.status_code == 202, body
            self.sent.append((hook, delivery))
            self.hook_of[delivery] = hook
            if body["status"] == "queued":
                self.pending.append(delivery)
                _count("hooks_recorded")
            else:
                _count("hooks_ignored_at_intake")
        return body  # type: ignore[no-any-return]

    # ------------------------------------------------------------ provider changes (each with its webhooks)

    def _org(self, i: int) -> OrgState:
        return self.orgs[i % len(self.orgs)]

    def change_grant(self, org: OrgState, uid: int, grant: str, hook_name: str) -> list[Hook]:
        before = self._membership(org, uid)
        if org.provider == "github" and before is not None and before[1] == "active" \
                and _grant_github(grant)[1] == "pending":
            grant = "member3"  # an active GitHub member cannot become a pending invitee again
        self._set_grant(org, uid, grant)
        login = self.logins[org.provider][uid]
        if org.provider == "github":
            role, state = _grant_github(grant)
            if before is None and state == "pending":
                return [Hook("github", "organization", gh_invited_event(org, uid, login))]
            if before is None or (before[1] == "pending" and state == "active"):
                # Joined, or accepted the invitation.
                return [Hook("github", "organization",
                             gh_member_event(org, "member_added", uid, login, role, state))]
            return []  # GitHub sends no webhook for a role change
        level, expires = _grant_gitlab(grant)
        name = "user_add_to_group" if before is None else "user_update_for_group"
        return [Hook("gitlab", hook_name, gl_member_event(org, hook_name, name, uid, login, level, expires))]

    def remove(self, org: OrgState, uid: int, hook_name: str) -> list[Hook]:
        before = self._membership(org, uid)
        if before is None:
            return []
        login = self.logins[org.provider][uid]
        if org.provider == "github":
            self.env.gh.remove_member(org.org_id, uid)
            return [Hook("github", "organization",
                         gh_member_event(org, "member_removed", uid, login, "unaffiliated", "inactive"))]
        self.env.gl.remove_member(org.org_id, uid)
        return [Hook("gitlab", hook_name, gl_member_event(org, hook_name, "user_remove_from_group", uid, login,
                                                          before[0], before[1]))]

    @rule(i=st.integers(0, 1), uid=st.sampled_from(list(USERS)), grant=st.sampled_from(GRANTS),
          fate=st.sampled_from(["lost", "once", "once", "redelivered", "twice"]),
          hook=st.sampled_from(["Member Hook", "System Hook"]))
    def grant(self, i: int, uid: int, grant: str, fate: str, hook: str) -> None:
        """A member joins, is invited, or changes role or access level."""
        org = self._org(i)
        self.emit(self.change_grant(org, uid, grant, hook), fate)

    @rule(i=st.integers(0, 1), pick=st.integers(0, 100), count=st.sampled_from([1, 1, 1, 2, 6]),
          fate=st.sampled_from(["lost", "once", "once", "redelivered", "twice"]),
          hook=st.sampled_from(["Member Hook", "System Hook"]))
    def leave(self, i: int, pick: int, count: int, fate: str, hook: str) -> None:
        """One or several members leave (several at once can trip the guard)."""
        org = self._org(i)
        present = sorted(u for u in USERS if self._membership(org, u) is not None) or sorted(USERS)
        for k in range(count):
            uid = present[(pick + k) % len(present)]
            self.emit(self.remove(org, uid, hook), fate)

    @precondition(lambda self: any(self._owner_membership(o) is not None for o in self.orgs))
    @rule(i=st.integers(0, 1), how=st.sampled_from(["removed", "removed", "minimal"]),
          fate=st.sampled_from(["lost", "once", "redelivered", "twice"]),
          hook=st.sampled_from(["Member Hook", "System Hook"]))
    def owner_leaves(self, i: int, how: str, fate: str, hook: str) -> None:
        """The current owner leaves the org (GitLab: or drops to minimal access)."""
        candidates = [o for o in self.orgs if self._owner_membership(o) is not None]
        org = candidates[i % len(candidates)]
        uid = self._owner_membership(org)
        assert uid is not None
        if how == "minimal" and org.provider == "gitlab":
            hooks = self.change_grant(org, uid, "none", hook)
        else:
            hooks = self.remove(org, uid, hook)
        _count("owner_left")
        self.emit(hooks, fate)

    def _owner_membership(self, org: OrgState) -> int | None:
        """The provider user id of the workspace's current owner, if they are an org member."""
        with self.ctx.session() as s:
            ws = s.get(Workspace, org.workspace_id)
            if ws is None or ws.owner_id is None:
                return None
            ident = s.scalar(select(Identity).where(Identity.user_id == ws.owner_id,
                                                    Identity.provider == org.provider))
            uid = int(ident.provider_user_id) if ident is not None else None
        return uid if uid is not None and uid in self.truth(org) else None

    @rule(i=st.integers(0, 1), new_login=st.sampled_from(ORG_LOGINS + (None, "recycled", "recycled")),
          fate=st.sampled_from(["lost", "once", "once", "redelivered", "twice"]))
    def rename_org(self, i: int, new_login: str | None, fate: str) -> None:
        """The org/group is renamed, possibly to a login another org just gave up."""
        org = self._org(i)
        taken = {o.login.lower() for o in self.orgs if o.provider == org.provider and o is not org}
        if new_login == "recycled":  # the login another org of this provider gave up last
            new_login = next((x for x in reversed(self.released[org.provider]) if x.lower() not in taken), None)
        if new_login is None or new_login.lower() in taken or new_login == org.login:
            self.fresh += 1
            new_login = f"{org.login.lower()}-{self.fresh}"
        old, org.login = org.login, new_login
        self.released[org.provider].append(old)
        if org.provider == "github":
            self.env.gh.rename_org(org.org_id, new_login)
            hooks = [Hook("github", "organization", gh_renamed_event(org, old))]
        else:
            self.env.gl.rename_group(org.org_id, new_login)
            hooks = [Hook("gitlab", "System Hook", gl_group_rename_event(org, old))]
        _count("org_renamed")
        self.emit(hooks, fate)

    @rule(provider=st.sampled_from(["github", "gitlab"]), uid=st.sampled_from(list(USERS)),
          new_login=st.sampled_from([None, None] + [f"u{u}" for u in USERS]),
          fate=st.sampled_from(["lost", "once", "redelivered", "twice"]))
    def rename_user(self, provider: str, uid: int, new_login: str | None, fate: str) -> None:
        """A user changes login, possibly to one another user gave up. GitHub
        sends no webhook for it; GitLab sends a user_rename system hook."""
        logins = self.logins[provider]
        old = logins[uid]
        if new_login is None or new_login.lower() in {v.lower() for v in logins.values()}:
            self.fresh += 1
            new_login = f"n{self.fresh}-{uid}"
        logins[uid] = new_login
        if provider == "github":
            self.env.gh.rename_user(uid, new_login)
            hooks: list[Hook] = []
        else:
            self.env.gl.rename_user(uid, new_login)
            hooks = [Hook("gitlab", "System Hook", gl_user_rename_event(uid, old, new_login))]
        _count("user_renamed")
        self.emit(hooks, fate)

    # ------------------------------------------------------------ delivery processing

    @precondition(lambda self: bool(self.pending))
    @rule(picks=st.lists(st.integers(0, 1000), min_size=1, max_size=3),
          fault=st.sampled_from([None, None, None, "rate_limit", "error"]))
    def deliver(self, picks: list[int], fault: str | None) -> None:
        """Process recorded deliveries picked at random (reordering),
        sometimes while the provider fails; a failed one is retried later."""
        for pick in picks:
            if self.pending:
                self.deliver_one(self.pending[pick % len(self.pending)], fault)

    def deliver_one(self, delivery: str, fault: str | None) -> None:
        if fault is not None:
            self._install_fault(fault, scope="all")
        before = {o.workspace_id: self.roster(o) for o in self.orgs}
        try:
            status = process_delivery(self.ctx, delivery, self.enqueuer)
        except (RateLimited, TransientProviderError):
            assert fault is not None, "only an injected fault makes a delivery fail"
            _count("deliveries_retried")
            status = None
        finally:
            self._clear_faults()
        if status is None:
            # Nothing of a failed delivery may be applied.
            for o in self.orgs:
                assert self.roster(o) == before[o.workspace_id], "a failed delivery changed a roster"
            return
        self.pending.remove(delivery)
        self.finished.append(delivery)
        _count(f"deliveries_{status}")
        if fault is None:
            assert status in ("processed", "ignored"), (status, self._delivery(delivery))
            self.check_delivery_outcome(delivery)
        for o in self.orgs:  # a delivery never removes someone still at the provider
            lost = set(before[o.workspace_id]) - set(self.roster(o))
            assert not lost & set(self.truth(o)), (lost, self.truth(o), self._delivery(delivery))

    @precondition(lambda self: bool(self.pending))
    @rule(pick=st.integers(0, 1000), fault=st.sampled_from([None, None, None, "rate_limit", "error"]),
          claim_limit=st.sampled_from([1, 2, 500]))
    def drain_lane(self, pick: int, fault: str | None, claim_limit: int) -> None:
        """The pipeline's way: drain every due delivery of one lane as a batch
        (hints merged, a listing when that is cheaper, owed full syncs run),
        sometimes while the provider fails; what fails is due again later."""
        from sync import batch

        delivery = self.pending[pick % len(self.pending)]
        with self.ctx.session() as s:
            row = s.get(Delivery, delivery)
            assert row is not None and row.org_key
            lane = row.org_key
            # Whatever a fault made due later is due now (time passes).
            s.execute(update(Delivery).where(Delivery.org_key == lane, Delivery.status.in_(
                ("received", "retrying", "deferred"))).values(due_at=utcnow()))
        if fault is not None:
            self._install_fault(fault, scope="all")
        before = {o.workspace_id: self.roster(o) for o in self.orgs}
        settle = batch.SETTLE
        batch.SETTLE = 0.0  # no burst to wait for: the rule runs in no time
        try:
            batch.Drain(self.ctx, lane, f"machine-{uuid.uuid4().hex[:8]}", clear_wake=lambda: None,
                        wake=lambda other: None, claim_limit=claim_limit).run()
        finally:
            batch.SETTLE = settle
            self._clear_faults()
        _count("lanes_drained")
        for d in list(self.pending):
            status = self._delivery(d)["status"]
            if status not in ("processed", "ignored", "failed"):
                continue
            self.pending.remove(d)
            self.finished.append(d)
            _count(f"deliveries_{status}_in_batch")
            if fault is None:
                assert status in ("processed", "ignored"), (status, self._delivery(d))
                self.check_delivery_outcome(d)
        for o in self.orgs:  # a batch never removes someone still at the provider
            lost = set(before[o.workspace_id]) - set(self.roster(o))
            assert not lost & set(self.truth(o)), (lost, self.truth(o))

    def check_delivery_outcome(self, delivery: str) -> None:
        """A processed delivery re-read the provider: what it names now
        matches the provider, whatever order it arrived in."""
        hook = self.hook_of[delivery]
        p = hook.payload
        if hook.provider == "gitlab" and p.get("event_name") == "user_rename":
            # The hook's username may be stale; processing re-reads GitLab,
            # whose current login the roster must show.
            renamed = int(p["user_id"])
            for o in self.orgs:
                if o.provider == "gitlab" and renamed in self.roster(o) and renamed in self.truth(o):
                    assert self.roster(o)[renamed][0] == self.truth(o)[renamed][0], (
                        renamed, self.roster(o)[renamed], self.truth(o)[renamed])
            return
        uid: int | None
        if hook.provider == "github":
            org = next(o for o in self.orgs if o.provider == "github" and o.org_id == p["organization"]["id"])
            uid = (p.get("membership") or {}).get("user", {}).get("id")
        else:
            org = next(o for o in self.orgs if o.provider == "gitlab" and o.org_id == p["group_id"])
            uid = p["user_id"] if str(p.get("event_name", "")).startswith("user_") else None
        if isinstance(uid, int) and p.get("action") != "member_invited":
            assert self.roster(org).get(uid) == self.truth(org).get(uid), (
                "after its delivery, member differs from the provider", uid, self.roster(org).get(uid),
                self.truth(org).get(uid), self._delivery(delivery))
        elif uid is None:  # a rename
            assert self.workspace(org).provider_org_login == self.provider_login(org), self._delivery(delivery)

    @precondition(lambda self: bool(self.finished))
    @rule(pick=st.integers(0, 1000))
    def job_runs_again(self, pick: int) -> None:
        """RQ ran a delivery job twice: the second run changes nothing."""
        delivery = self.finished[pick % len(self.finished)]
        with self.ctx.session() as s:
            seq = s.scalar(select(Activity.seq).order_by(Activity.seq.desc()).limit(1))
            was = s.get(Delivery, delivery)
            assert was is not None
            status_before = was.status
        if status_before not in ("processed", "ignored"):
            return  # failed for good: only an operator replays it
        status = process_delivery(self.ctx, delivery, self.enqueuer)
        assert status == status_before
        with self.ctx.session() as s:
            assert s.scalar(select(Activity.seq).order_by(Activity.seq.desc()).limit(1)) == seq

    @precondition(lambda self: bool(self.sent))
    @rule(pick=st.integers(0, 1000))
    def redeliver_later(self, pick: int) -> None:
        """GitHub/GitLab redeliver an old delivery (same id), long after."""
        hook, delivery = self.sent[pick % len(self.sent)]
        body = self.post(hook, delivery, expect_new=False)
        assert body["status"] == "duplicate", body

    def _delivery(self, delivery_id: str) -> dict[str, Any]:
        with self.ctx.session() as s:
            d = s.get(Delivery, delivery_id)
            assert d is not None
            return {"event": d.event, "action": d.action, "status": d.status, "error": d.error,
                    "outcome": d.outcome}

    # ------------------------------------------------------------ faults

    def _install_fault(self, fault: str, *, scope: str, org: OrgState | None = None, page: int = 1,
                       role: str = "member") -> None:
        gh, gl = self.env.gh, self.env.gl
        reset = int(time.time()) + 1800
        if fault == "rate_limit":
            gh.rate_limit("primary", reset=reset, times=None,
                          path_contains="/member" if scope == "all" else "/members")
            gl.rate_limit(None, reset_at=reset, path_contains="/members")
        elif fault == "secondary":
            gh.rate_limit("secondary", retry_after=90, times=None, path_contains="/members")
            gl.rate_limit(None, retry_after=90, path_contains="/members")
        elif fault == "error":
            gh.fail("/member", 502, times=None)
            gl.fail_next(502, path_contains="/members", times=None)
        elif fault == "page":
            assert org is not None
            if org.provider == "github":
                gh.fail_page(role, page, 500, times=None)
            else:
                gl.fail_page(org.org_id, page, 500)
        elif fault == "member_read":
            # Only the one-by-one re-reads of _confirm_removals.
            gh.fail("/memberships/", 500, times=None)
            if org is not None:
                gl.fail_next(500, path_contains=f"/groups/{org.org_id}/members/all/", times=None)
        else:  # pragma: no cover
            raise AssertionError(fault)

    def _clear_faults(self) -> None:
        self.env.gh.clear_faults()
        self.env.gl.clear_faults()

    # ------------------------------------------------------------ syncs

    def run_full_sync(self, org: OrgState, *, trigger: str, protected: set[int] | None,
                      expect_truth: bool, force: bool = False, concurrent: bool = False
                      ) -> RunResult | None:
        """Run one full sync and check what it may have done; None when it
        raised (rate limited, transient error). ``protected``: members present
        at the provider throughout, whom it must not remove. ``concurrent``:
        the roster may also change under it (a webhook processed meanwhile)."""
        before = self.roster(org)
        before_truth = self.truth(org)
        result: RunResult | None
        try:
            result = full_sync(self.ctx, org.workspace_id, trigger=trigger, force=force)
        except (RateLimited, TransientProviderError) as exc:
            result = None
            run = self._last_run(org)
            assert run.result in ("rate_limited", "failed"), run.result
            assert isinstance(exc, RateLimited) == (run.result == "rate_limited")
            _count(f"syncs_{run.result}")
        run = self._last_run(org)
        own = self.member_activity(f"sync:{run.id}")
        removed = {int((a.details or {})["provider_user_id"]) for a in own if a.action == "member.removed"}
        after = self.roster(org)
        if result is None or run.result in ("failed", "rate_limited", "auth_broken", "held"):
            # A sync that could not read everything, or was held, applies nothing.
            assert not own, (run.result, [(a.action, a.details) for a in own])
            if not concurrent:
                assert after == before, (run.result, before, after)
        if run.result == "held":
            _count("syncs_held")
            details = run.details or {}
            stored, would = int(details["stored"]), int(details["would_remove"])
            assert stored >= 10 and would / stored > MAX_REMOVAL_FRACTION, details
            if not concurrent:
                assert would == len(set(before) - set(before_truth)), (would, before, before_truth)
        if protected is not None:
            wrongly = removed & protected
            assert not wrongly, (
                f"sync {run.id} ({run.result}) removed {sorted(wrongly)}, present at the provider "
                f"throughout; details={run.details}"
            )
        if result is not None and run.result == "ok":
            _count("syncs_ok")
            if expect_truth:
                assert after == self.truth(org), (after, self.truth(org), run.details)
                ws = self.workspace(org)
                assert ws.provider_org_login == self.provider_login(org)
        return result

    def _last_run(self, org: OrgState) -> SyncRun:
        with self.ctx.session() as s:
            run = s.scalar(select(SyncRun).where(SyncRun.workspace_id == org.workspace_id,
                                                 SyncRun.kind == "full").order_by(SyncRun.id.desc()).limit(1))
            assert run is not None
            return run

    @rule(i=st.integers(0, 1), trigger=st.sampled_from(["schedule", "operator"]))
    def sync(self, i: int, trigger: str) -> None:
        org = self._org(i)
        self.run_full_sync(org, trigger=trigger, protected=set(self.truth(org)), expect_truth=True)

    @rule(i=st.integers(0, 1),
          fault=st.sampled_from(["page", "page", "rate_limit", "secondary", "member_read", "error"]),
          page=st.integers(1, 3), role=st.sampled_from(["admin", "member"]))
    def faulted_sync(self, i: int, fault: str, page: int, role: str) -> None:
        """A full sync while the provider fails part way or rate-limits."""
        org = self._org(i)
        self._install_fault(fault, scope="roster", org=org, page=page, role=role)
        try:
            self.run_full_sync(org, trigger="schedule", protected=set(self.truth(org)),
                               expect_truth=True)
        finally:
            self._clear_faults()
        _count("syncs_faulted")

    @rule(i=st.integers(0, 1), nth=st.integers(1, 4), uid=st.sampled_from(list(USERS)),
          change=st.sampled_from(["leave", "leave", "join", "role", "none"]),
          fate=st.sampled_from(["lost", "once", "once"]), process=st.booleans(),
          pick=st.integers(0, 1000), hook=st.sampled_from(["Member Hook", "System Hook"]))
    def interleaved_sync(self, i: int, nth: int, uid: int, change: str, fate: str, process: bool,
                         pick: int, hook: str) -> None:
        """A full sync during which, between two roster pages, a member
        changes at the provider and a recorded webhook is processed."""
        org = self._org(i)
        board = self.env.github if org.provider == "github" else self.env.gitlab
        start = set(self.truth(org))
        named: list[int] = []  # members re-read by a webhook processed mid-listing

        def during() -> None:
            if change == "leave":
                hooks = self.remove(org, uid, hook)
            elif change == "join":
                hooks = self.change_grant(org, uid, "member", hook)
            elif change == "role":
                hooks = self.change_grant(org, uid, "admin" if pick % 2 else "member2", hook)
            else:
                hooks = []
            self.emit(hooks, fate)
            if process and self.pending:
                delivery = self.pending[pick % len(self.pending)]
                status = process_delivery(self.ctx, delivery, self.enqueuer)
                assert status in ("processed", "ignored"), (status, self._delivery(delivery))
                p = self.hook_of[delivery].payload
                uid_named = (p.get("membership") or {}).get("user", {}).get("id") or (
                    p.get("user_id") if str(p.get("event_name", "")).endswith("_group") else None)
                org_named = (p.get("organization") or {}).get("id") or p.get("group_id")
                if isinstance(uid_named, int) and org_named == org.org_id and status == "processed":
                    named.append(uid_named)
                self.pending.remove(delivery)
                self.finished.append(delivery)
                _count("deliveries_mid_sync")

        def roster_page(path: str, query: str) -> bool:
            if org.provider == "github":
                return path.startswith("/orgs/") and path.endswith("/members")
            return path == f"/api/v4/groups/{org.org_id}/members/all"

        board.set_hook(roster_page, nth, during)
        try:
            self.run_full_sync(org, trigger="schedule", protected=None, expect_truth=False, concurrent=True)
        finally:
            fired, errors = board.hook_fired, list(board.hook_errors)
            board.clear_hook()
        if errors:
            raise errors[0]
        run = self._last_run(org)
        removed = {int((a.details or {})["provider_user_id"]) for a in self.member_activity(f"sync:{run.id}")
                   if a.action == "member.removed"}
        # One member changed (role, or leaving/joining): everyone present
        # before and after was present throughout.
        protected = start & set(self.truth(org))
        assert not removed & protected, (
            f"sync {run.id} removed {sorted(removed & protected)}, present at the provider throughout "
            f"(member {uid} changed mid-listing: {change}, hook fired: {fired}); details={run.details}"
        )
        if run.result == "ok":
            # The webhook read the provider after the sync's listing did: the
            # sync must not write the older answer over the newer one.
            roster, truth = self.roster(org), self.truth(org)
            rewritten = {int((a.details or {})["provider_user_id"]) for a in self.member_activity(f"sync:{run.id}")
                         if a.action in ("member.added", "member.role_changed")}
            for y in named:
                assert y not in rewritten or roster.get(y) == truth.get(y), (y, rewritten)
                assert roster.get(y) == truth.get(y), (
                    f"after sync {run.id}, member {y} re-read mid-listing by a webhook differs from the "
                    f"provider: store {roster.get(y)}, provider {truth.get(y)}; details={run.details}")
        if fired:
            _count("syncs_interleaved")
        elif run.result == "ok":  # nothing happened during it: a plain sync
            assert self.roster(org) == self.truth(org)

    @precondition(lambda self: bool(self.enqueuer.waiting))
    @rule(pick=st.integers(0, 10))
    def run_enqueued_sync(self, pick: int) -> None:
        """A worker runs a full sync that an event asked for."""
        ws_id = sorted(self.enqueuer.waiting)[pick % len(self.enqueuer.waiting)]
        triggers = self.enqueuer.waiting.pop(ws_id)
        org = next(o for o in self.orgs if o.workspace_id == ws_id)
        _count("syncs_enqueued_run")
        self.run_full_sync(org, trigger=triggers[0], protected=set(self.truth(org)), expect_truth=True)

    # ------------------------------------------------------------ invariants

    @invariant()
    def billing_follows_owner(self) -> None:
        if not self.orgs:
            return
        with self.ctx.session() as s:
            for ws in s.scalars(select(Workspace).where(Workspace.kind == "provider")):
                assert ws.billing_user_id == ws.owner_id, (ws.name, ws.owner_id, ws.billing_user_id)

    # ------------------------------------------------------------ the end

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None and self.orgs:
                self.converge_and_check()
        finally:
            self.env.github.clear_hook()
            self.env.gitlab.clear_hook()
            self._clear_faults()

    def converge_and_check(self) -> None:
        for org in self.orgs:
            result = self.run_full_sync(org, trigger="schedule", protected=set(self.truth(org)),
                                        expect_truth=True)
            assert result is not None
            if result.result == "held":
                _count("final_sync_held_then_forced")
                result = self.run_full_sync(org, trigger="operator", protected=set(self.truth(org)),
                                            expect_truth=True, force=True)
                assert result is not None
            assert result.result == "ok", result
        for org in self.orgs:
            self.check_converged(org)
            self.check_activity(org)
        # Late deliveries and queued syncs cannot undo a converged store.
        while self.pending:
            delivery = self.pending.pop(0)
            status = process_delivery(self.ctx, delivery, self.enqueuer)
            assert status in ("processed", "ignored"), (status, self._delivery(delivery))
            self.check_delivery_outcome(delivery)
            _count("deliveries_late")
        while self.enqueuer.waiting:
            ws_id, triggers = self.enqueuer.waiting.popitem()
            org = next(o for o in self.orgs if o.workspace_id == ws_id)
            self.run_full_sync(org, trigger=triggers[0], protected=set(self.truth(org)),
                               expect_truth=True)
        for org in self.orgs:
            self.check_converged(org, late=True)
            self.check_activity(org)

    def check_converged(self, org: OrgState, *, late: bool = False) -> None:
        roster, truth = self.roster(org), self.truth(org)
        assert roster == truth, (org.provider, roster, truth)
        ws = self.workspace(org)
        login = self.provider_login(org)
        assert ws.provider_org_login == login, (ws.provider_org_login, login)
        assert ws.name in name_candidates(login, org.provider, org.org_id), (ws.name, login)
        assert ws.status == "active" and ws.link_status == "ok", (ws.status, ws.link_status, ws.link_error)
        with self.ctx.session() as s:
            if ws.owner_id is not None:
                ident = s.scalar(select(Identity).where(Identity.user_id == ws.owner_id,
                                                        Identity.provider == org.provider))
                assert ident is not None and int(ident.provider_user_id) in self.truth(org), (
                    "the owner is not an org member", ws.owner_id)
            assert ws.billing_user_id == ws.owner_id

    def check_activity(self, org: OrgState) -> None:
        """Replay the workspace's activity from empty: every entry fits the
        roster before it, the result is the stored roster, and every owner
        hand-over follows the rule."""
        with self.ctx.session() as s:
            entries = list(s.scalars(
                select(Activity).where(Activity.workspace_id == org.workspace_id).order_by(Activity.seq)
            ))
            ident_of = {
                i.user_id: int(i.provider_user_id)
                for i in s.scalars(select(Identity).where(Identity.provider == org.provider))
            }
            user_of = {uid: user_id for user_id, uid in ident_of.items()}
            ws = s.get(Workspace, org.workspace_id)
            assert ws is not None
            final_owner = ws.owner_id
        replay: dict[int, str] = {}
        since: dict[int, Any] = {}
        owner: str | None = None  # until the workspace.created / ownership "connected" entries
        batch_actor: str | None = None

        def owner_ok(where: str) -> None:
            if owner is not None:
                assert ident_of.get(owner) in replay, f"owner {owner} not in the roster {where}"

        for a in entries:
            d = a.details or {}
            if a.action.startswith("member."):
                if a.actor != batch_actor:
                    if batch_actor is not None:
                        owner_ok(f"after the changes of {batch_actor}")
                    batch_actor = a.actor
                uid = int(d["provider_user_id"])
                if a.action == "member.added":
                    assert uid not in replay, (a.seq, "added twice", uid)
                    replay[uid], since[uid] = d["role"], (a.at, uid)
                elif a.action == "member.removed":
                    assert uid in replay, (a.seq, "removed but absent", uid)
                    del replay[uid]
                elif a.action == "member.role_changed":
                    assert replay.get(uid) == d["from"], (a.seq, uid, replay.get(uid), d)
                    replay[uid] = d["to"]
            elif a.action in ("ownership.changed", "ownership.lost"):
                assert d.get("from") == owner, (a.seq, d, owner)
                if d.get("reason") == "owner_left_org":
                    _count("ownership_handed_on" if a.action == "ownership.changed" else "ownership_lost")
                    assert owner is None or ident_of.get(owner) not in replay, (a.seq, "handed on, owner a member")
                    eligible = sorted(
                        (since[uid], uid) for uid, role in replay.items()
                        if role == "admin" and uid in user_of and user_of[uid] != owner
                    )
                    expected = user_of[eligible[0][1]] if eligible else None
                    assert d.get("to") == expected, (
                        a.seq, "successor", d.get("to"), expected, eligible)
                elif d.get("reason") == "connected":
                    assert d.get("to") == org.owner_user_id, (a.seq, d)
                owner = d.get("to")
        owner_ok("at the end")
        assert owner == final_owner, (owner, final_owner)
        stored = {uid: role for uid, (_login, role) in self.roster(org).items()}
        assert replay == stored, ("activity replay", replay, stored)


class PostgresConvergence(Convergence):
    """The same machine on PostgreSQL (its own example database entries)."""


SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture]


@pytest.mark.parametrize("examples", depths(SQLITE_EXAMPLES))
def test_convergence_sqlite(
    examples: int,
    tmp_path_factory: pytest.TempPathFactory,
    fake_server: tuple[FakeProviderServer, Switchboard, Switchboard],
    app_key: str,
    quiet_logs: None,
) -> None:
    need_corpus()
    shm = Path("/dev/shm")
    base = Path(tmp_path_factory.mktemp("conv")) if not shm.is_dir() else shm
    db = base / f"orgsync-convergence-{uuid.uuid4().hex[:8]}.db"
    env = build_env("sqlite", f"sqlite:///{db}", fake_server, app_key)
    Convergence.env = env
    before = EXAMPLES["sqlite"]
    try:
        run_state_machine_as_test(
            Convergence,
            settings=settings(max_examples=examples, stateful_step_count=20, deadline=None,
                              suppress_health_check=SUPPRESS),
        )
    finally:
        env.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert EXAMPLES["sqlite"] - before >= examples


@pytest.mark.postgres
@pytest.mark.parametrize("examples", depths(PG_EXAMPLES))
def test_convergence_postgresql(
    examples: int,
    fake_server: tuple[FakeProviderServer, Switchboard, Switchboard],
    app_key: str,
    request: pytest.FixtureRequest,
    quiet_logs: None,
) -> None:
    need_postgres()
    need_corpus()
    url = request.getfixturevalue("pg_schema_url")
    env = build_env("postgresql", url, fake_server, app_key)
    PostgresConvergence.env = env
    before = EXAMPLES["postgresql"]
    try:
        run_state_machine_as_test(
            PostgresConvergence,
            settings=settings(max_examples=examples, stateful_step_count=20, deadline=None,
                              suppress_health_check=SUPPRESS),
        )
    finally:
        env.engine.dispose()
    assert EXAMPLES["postgresql"] - before >= examples


# --------------------------------------------------------------------------- findings, focused


def test_late_gitlab_user_rename_does_not_relabel_with_a_stale_login(
    tmp_path: Path, fake_server: tuple[FakeProviderServer, Switchboard, Switchboard], app_key: str,
) -> None:
    """Found by the machine (shrunk): GitLab user 7 renames u7 -> mid -> new;
    the user_rename(u7 -> mid) delivery is processed after the full sync
    that already stored "new". Webhooks are hints (SPEC 6): the late one
    must not win over the provider."""
    need_corpus()
    env = build_env("sqlite", f"sqlite:///{tmp_path / 'late-rename.db'}", fake_server, app_key)
    try:
        ctx = env.ctx()
        gl = env.gl
        gl.add_group(500, "grp")
        gl.add_member(500, 7, "u7", 30)
        with ctx.session() as s:
            store.get_or_create_user_for_identity(s, "gitlab", 7, "u7", actor="test")
            ws_id = store.create_provider_workspace(s, "gitlab", 500, "grp", actor="test").id
        assert full_sync(ctx, ws_id, trigger="install").result == "ok"

        gl.rename_user(7, "mid")
        late = str(uuid.uuid4())
        resp = env.world.post_gitlab("System Hook", gl_user_rename_event(7, "u7", "mid"), idempotency_key=late)
        assert resp.status_code == 202
        gl.rename_user(7, "new")  # its webhook is lost; the scheduled sync catches up
        assert full_sync(ctx, ws_id, trigger="schedule").result == "ok"
        with ctx.session() as s:
            assert s.get(RosterEntry, (ws_id, 7)).login == "new"  # type: ignore[union-attr]

        assert process_delivery(ctx, late, RecordingEnqueuer()) == "processed"
        with ctx.session() as s:
            ident = store.get_identity(s, "gitlab", 7)
            entry = s.get(RosterEntry, (ws_id, 7))
            assert entry is not None and ident is not None
            assert (entry.login, ident.login) == ("new", "new")  # GitLab says "new"
    finally:
        env.engine.dispose()
        env.reset()


def test_member_event_after_org_login_was_retaken_does_not_break_the_link(
    tmp_path: Path, fake_server: tuple[FakeProviderServer, Switchboard, Switchboard], app_key: str,
) -> None:
    """Org 9001 "acme" is renamed "initech" and org 9002 takes "acme" (the
    rename webhook is late or lost, so the store still says "acme"). A
    member_added event for org 9001 must follow the org by its id, as the
    adapter's own re-resolution does after a 404."""
    need_corpus()
    env = build_env("sqlite", f"sqlite:///{tmp_path / 'retaken.db'}", fake_server, app_key)
    try:
        ctx, gh = env.ctx(), env.gh
        gh.add_org(9001, "acme", installation_id=701)
        gh.add_org(9002, "globex", installation_id=702)
        gh.add_member(9001, 5, "u5", "member")
        with ctx.session() as s:
            ws_id = store.create_provider_workspace(s, "github", 9001, "acme", actor="test",
                                                    installation_id=701).id
        assert full_sync(ctx, ws_id, trigger="install").result == "ok"

        gh.rename_org(9001, "initech")
        gh.rename_org(9002, "acme")
        gh.set_role(9001, 5, "admin")
        org = OrgState("github", 9001, 701, "initech", ws_id)
        delivery = str(uuid.uuid4())
        payload = gh_member_event(org, "member_added", 5, "u5", "admin", "active")
        assert env.world.post_github("organization", payload, delivery=delivery).status_code == 202

        status = process_delivery(ctx, delivery, RecordingEnqueuer())
        with ctx.session() as s:
            ws = store.get_workspace(s, ws_id)
            entry = s.get(RosterEntry, (ws_id, 5))
            assert entry is not None
            assert (status, ws.link_status, entry.role) == ("processed", "ok", "admin")
    finally:
        env.engine.dispose()
        env.reset()


def test_full_sync_does_not_undo_a_newer_member_sync(
    tmp_path: Path, fake_server: tuple[FakeProviderServer, Switchboard, Switchboard], app_key: str,
) -> None:
    """Found by the machine on SQLite and PostgreSQL (shrunk): a full sync
    reads page 1 of the roster (members 1, 2, 3); member 2 then leaves
    GitHub and its member_removed webhook is processed (member sync: 2
    removed); the full sync reads the rest and applies its plan, which
    re-adds 2 from the older page. No webhook follows: 2 keeps access until
    the next scheduled sync (ORGSYNC_RESYNC_INTERVAL, 6 h by default)."""
    need_corpus()
    env = build_env("sqlite", f"sqlite:///{tmp_path / 'stale-listing.db'}", fake_server, app_key)
    try:
        ctx, gh = env.ctx(), env.gh
        org = OrgState("github", 9001, 701, "acme")
        gh.add_org(org.org_id, org.login, installation_id=org.installation_id)
        for uid in (1, 2, 3, 4):
            gh.add_member(org.org_id, uid, f"u{uid}", "member")
        with ctx.session() as s:
            org.workspace_id = store.create_provider_workspace(
                s, "github", org.org_id, org.login, actor="test", installation_id=org.installation_id).id
        assert full_sync(ctx, org.workspace_id, trigger="install").result == "ok"

        delivery = str(uuid.uuid4())
        statuses: list[str] = []

        def member_2_leaves() -> None:
            gh.remove_member(org.org_id, 2)
            payload = gh_member_event(org, "member_removed", 2, "u2", "unaffiliated", "inactive")
            assert env.world.post_github("organization", payload, delivery=delivery).status_code == 202
            statuses.append(process_delivery(ctx, delivery, RecordingEnqueuer()))

        # Before the second page of role=member (page 1 held members 1, 2, 3).
        env.github.set_hook(lambda path, query: path.endswith("/members") and "role=member" in query,
                            2, member_2_leaves)
        result = full_sync(ctx, org.workspace_id, trigger="schedule")
        assert env.github.hook_fired and not env.github.hook_errors and statuses == ["processed"]
        assert result.result == "ok"
        with ctx.session() as s:
            stored = set(s.scalars(select(RosterEntry.provider_user_id)
                                   .where(RosterEntry.workspace_id == org.workspace_id)))
        assert stored == {1, 3, 4}  # GitHub's truth, and what the webhook already applied
    finally:
        env.github.clear_hook()
        env.engine.dispose()
        env.reset()


def test_a_listing_does_not_re_add_a_member_a_webhook_found_gone_mid_listing(
    tmp_path: Path, fake_server: tuple[FakeProviderServer, Switchboard, Switchboard], app_key: str,
) -> None:
    """Found by the machine: member 7 joined (its delivery still pending) and
    left again while a full sync walked the roster; the admins' page, read
    before they left, lists them, and the pending delivery, processed between
    the two pages, re-read them as gone. That re-read changed nothing (the
    store never had them), so no activity marked it; the listing must still
    not add them back."""
    need_corpus()
    env = build_env("sqlite", f"sqlite:///{tmp_path / 'gone-mid-listing.db'}", fake_server, app_key)
    try:
        ctx, gh = env.ctx(), env.gh
        gh.add_org(9001, "acme", installation_id=701)
        gh.add_member(9001, 1, "u1", "admin")
        with ctx.session() as s:
            ws_id = store.create_provider_workspace(s, "github", 9001, "acme", actor="test",
                                                    installation_id=701).id
        assert full_sync(ctx, ws_id, trigger="install").result == "ok"
        gh.add_member(9001, 7, "u7", "admin")
        pending = str(uuid.uuid4())
        event = {"action": "member_added", "organization": {"id": 9001, "login": "acme"},
                 "installation": {"id": 701}, "membership": {"user": {"id": 7, "login": "u7"},
                                                             "role": "admin", "state": "active"}}
        assert env.world.post_github("organization", event, delivery=pending).status_code == 202

        def leave_and_process() -> None:
            gh.remove_member(9001, 7)
            assert process_delivery(ctx, pending, RecordingEnqueuer()) == "processed"

        # The second roster request (the members' page) comes after the admins'.
        env.github.set_hook(lambda path, query: path.startswith("/orgs/") and path.endswith("/members"),
                            2, leave_and_process)
        try:
            run = full_sync(ctx, ws_id, trigger="schedule")
        finally:
            fired = env.github.hook_fired
            env.github.clear_hook()
        assert fired and run.result == "ok"
        with ctx.session() as s:
            assert s.get(RosterEntry, (ws_id, 7)) is None  # gone at the provider: not re-added
    finally:
        env.engine.dispose()
        env.reset()
