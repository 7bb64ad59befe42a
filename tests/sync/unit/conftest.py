"""Fixtures of the unit tier: an in-memory SQLite store, a FakeProvider per
provider, the SyncContext that joins them, and readers of the store's state."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from models import store
from models.base import make_engine, make_session_factory
from models.config import Settings
from models.tables import Activity as ActivityRow
from models.tables import SyncRun, Workspace
from sync.context import SyncContext
from sync.providers.base import ProviderName, ProviderOrg
from tests.conftest import _create_all
from tests.fakes.provider import FakeProvider

GH_ORG, GH_INSTALLATION = 9001, 77
GL_GROUP = 500


@pytest.fixture
def memory_engine() -> Iterator[Engine]:
    # One connection shared by every session: the in-memory database lives in it.
    eng = make_engine("sqlite://", poolclass=StaticPool)
    _create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(memory_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(memory_engine)


@dataclass
class Logged:
    action: str
    actor: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Run:
    """A recorded sync run, as read back from the store."""

    id: int
    kind: str
    trigger: str
    result: str
    forced: bool
    added: int
    removed: int
    changed: int
    api_calls: int
    not_modified: int
    error: str | None
    details: dict[str, Any]


@dataclass
class Org:
    """One org (GitHub) or group (GitLab) on a FakeProvider, its workspace,
    and the store's view of it."""

    fake: FakeProvider
    ctx: SyncContext
    org_id: int
    installation_id: int | None
    workspace_id: str = ""
    since: int = 0  # activity sequence number of the last mark()

    @property
    def provider(self) -> ProviderName:
        return self.fake.name

    def connect(self, login: str = "acme") -> Org:
        with self.ctx.session() as s:
            ws = store.create_provider_workspace(
                s, self.provider, self.org_id, login, actor="test", installation_id=self.installation_id)
            self.workspace_id = ws.id
        self.mark()
        return self

    def provider_org(self) -> ProviderOrg:
        """The org as a sync addresses the provider."""
        return ProviderOrg(self.provider, self.org_id, self.workspace().provider_org_login or "",
                           installation_id=self.installation_id)

    def roster(self) -> dict[int, tuple[str, str]]:
        """uid -> (login, role), as stored."""
        with self.ctx.session() as s:
            return {uid: (m.login, m.role) for uid, m in store.roster(s, self.workspace_id).items()}

    def workspace(self) -> Workspace:
        with self.ctx.session() as s:
            return store.get_workspace(s, self.workspace_id)

    def mark(self) -> None:
        """Later ``activity()`` calls show only what happens after this."""
        with self.ctx.session() as s:
            self.since = int(s.scalar(select(func.max(ActivityRow.seq))) or 0)

    def activity(self, prefix: str = "") -> list[Logged]:
        """Activity entries (of any workspace) since the last ``mark()``."""
        with self.ctx.session() as s:
            return [Logged(a.action, a.actor, dict(a.details or {}))
                    for a in store.list_activity(s, after=self.since, limit=100_000)
                    if a.action.startswith(prefix)]

    def actions(self, prefix: str = "") -> list[str]:
        return [a.action for a in self.activity(prefix)]

    def runs(self) -> list[Run]:
        with self.ctx.session() as s:
            rows = s.scalars(select(SyncRun).where(SyncRun.workspace_id == self.workspace_id)
                             .order_by(SyncRun.id))
            return [Run(r.id, r.kind, r.trigger, r.result, r.forced, r.added, r.removed, r.changed,
                        r.api_calls, r.not_modified, r.error, dict(r.details or {})) for r in rows]

    def last_run(self) -> Run:
        return self.runs()[-1]


def make_ctx(sessions: sessionmaker[Session], fake: FakeProvider, **settings: Any) -> SyncContext:
    return SyncContext(sessions, Settings(**settings), provider_for=lambda provider, installation_id: fake)


@pytest.fixture(params=["github", "gitlab"])
def any_org(request: pytest.FixtureRequest, sessions: sessionmaker[Session]) -> Org:
    """A connected org on either provider (the rules that hold for both)."""
    return _org(request.param, sessions)


@pytest.fixture
def gh(sessions: sessionmaker[Session]) -> Org:
    return _org("github", sessions)


@pytest.fixture
def gl(sessions: sessionmaker[Session]) -> Org:
    return _org("gitlab", sessions)


def _org(provider: ProviderName, sessions: sessionmaker[Session]) -> Org:
    fake = FakeProvider(provider)
    if provider == "github":
        fake.add_org(GH_ORG, "acme", installation_id=GH_INSTALLATION)
        org = Org(fake, make_ctx(sessions, fake), GH_ORG, GH_INSTALLATION)
    else:
        fake.add_org(GL_GROUP, "acme")
        org = Org(fake, make_ctx(sessions, fake), GL_GROUP, None)
    return org.connect()
