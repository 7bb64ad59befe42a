"""Mapped classes of the core workspace store (SQLAlchemy 2, typed)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base

KINDS = ("personal", "managed", "provider")
PROVIDERS = ("github", "gitlab")
STATUSES = ("active", "suspended", "disconnected")
ROLES = ("owner", "admin", "member", "billing")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(255))
    username_lower: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    identities: Mapped[list[Identity]] = relationship(back_populates="user", cascade="all, delete-orphan")


class Identity(Base):
    """A user's account at a provider, keyed by the provider's immutable numeric id."""

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("provider", "provider_user_id", name="uq_identities_provider_user"),
        UniqueConstraint("user_id", "provider", name="uq_identities_user_provider"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(16))
    provider_user_id: Mapped[int] = mapped_column(BigInteger)
    login: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    user: Mapped[User] = relationship(back_populates="identities")


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (
        UniqueConstraint("provider", "provider_org_id", name="uq_workspaces_provider_org"),
        Index("ix_workspaces_provider_login", "provider", "provider_org_login_lower"),
        # A user's workspaces are found by owner, membership and roster entry.
        Index("ix_workspaces_owner_id", "owner_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    name_lower: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(16))
    provider_org_id: Mapped[int | None] = mapped_column(BigInteger)
    provider_org_login: Mapped[str | None] = mapped_column(String(255))
    provider_org_login_lower: Mapped[str | None] = mapped_column(String(255))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    # active | suspended | disconnected
    status: Mapped[str] = mapped_column(String(16), default="active")
    # ok | broken (credentials stopped working) | no_installation (GitHub org
    # without the app: membership changes only when members log in)
    link_status: Mapped[str] = mapped_column(String(16), default="ok")
    link_error: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    billing_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The provider user who connected the org before they had an account here
    # (app installed from GitHub); they become owner when they first log in.
    pending_owner_provider_user_id: Mapped[int | None] = mapped_column(BigInteger)
    personal_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    subscription_plan: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    last_full_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When GitHub was last asked for this org's app installation (discovery,
    # reconciliation): logins ask at most hourly, and status shows it.
    installation_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id], lazy="joined")

    @property
    def connected(self) -> bool:
        return self.kind == "provider" and self.status != "disconnected"

    @property
    def reference(self) -> str | None:
        if self.kind != "provider":
            return None
        if self.provider_org_login_lower is None:
            # The login is stale (another org holds it now): only the id
            # still names this workspace.
            return f"{self.provider}:id:{self.provider_org_id}"
        return f"{self.provider}:{self.provider_org_login}"


class RosterEntry(Base):
    """One org member as the provider reports it (account or not)."""

    __tablename__ = "roster_entries"
    __table_args__ = (Index("ix_roster_entries_provider_user_id", "provider_user_id"),)

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    provider_user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    login: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # admin | member | billing
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Membership(Base):
    """Direct membership: owners, and members of managed workspaces."""

    __tablename__ = "memberships"
    __table_args__ = (Index("ix_memberships_user_id", "user_id"),)

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Invitation(Base):
    """An invitation to a managed workspace.

    Link invitations (the platform API) name no user: whoever opens the link
    may ask to join, and the owner or an admin decides. Only a hash of the
    link's secret token is kept, so a database reader cannot join anywhere.
    """

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Named user: invited -> requested -> approved | denied. Link: active | revoked.
    status: Mapped[str] = mapped_column(String(16), default="invited")
    role: Mapped[str] = mapped_column(String(16), default="member")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(255))


class JoinRequest(Base):
    """A user's request to join a managed workspace through an invitation link."""

    __tablename__ = "join_requests"
    __table_args__ = (Index("ix_join_requests_workspace_status", "workspace_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    invitation_id: Mapped[int] = mapped_column(ForeignKey("invitations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    # requested -> approved | denied
    status: Mapped[str] = mapped_column(String(16), default="requested")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(255))


class Counter(Base):
    """Sequence counters allocated under a row lock: a transaction that takes
    activity numbers holds the lock until it commits, so sequence order is
    commit order and a change-feed reader paging by ``after=`` never skips a
    row that commits late."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Activity(Base):
    __tablename__ = "activity"
    __table_args__ = (
        Index("ix_activity_workspace_seq", "workspace_id", "seq"),
        # A run's entries by its actor ("sync:<run id>"), in order (models.activity.activity_seqs).
        Index("ix_activity_actor_seq", "actor", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    workspace_id: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Delivery(Base):
    """A webhook delivery, committed before it is answered.

    The row is the work item (SPEC section 7): while it is pending it says
    which lane (org) it belongs to, when it is next due and, while a worker
    holds it, whose lease it is under and until when. Redis only carries
    wake-ups; nothing decides that work is lost by asking RQ.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_status_received", "status", "received_at"),
        Index("ix_deliveries_org_key", "org_key"),
        # The claim and the sweep read pending rows only; a partial index keeps
        # them small however many processed rows a busy org accumulates.
        Index(
            "ix_deliveries_pending",
            "org_key",
            "received_at",
            postgresql_where=text("status IN ('received', 'processing', 'deferred', 'retrying')"),
            sqlite_where=text("status IN ('received', 'processing', 'deferred', 'retrying')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(64))
    body_sha256: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    # The lane: "github:<org id>", "gitlab:<group id>", "gitlab:users" ...
    org_key: Mapped[str | None] = mapped_column(String(128))
    # received (pending) | processing (leased) | retrying | deferred
    # | processed | ignored | failed
    status: Mapped[str] = mapped_column(String(16), default="received")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When pending work is next due (a retry's backoff, a rate limit's reset).
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # While a worker holds it: whose lease, and until when (a killed worker's
    # rows become claimable again once it runs out).
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    holder: Mapped[str | None] = mapped_column(String(128))
    # Membership hints, parsed at intake, so a drain can merge thousands of
    # them by user id without loading their payloads.
    hint_user_id: Mapped[int | None] = mapped_column(BigInteger)


class WorkLane(Base):
    """One lane of work (an org, or GitLab's user events): its lease and the
    full sync it is owed.

    Every drain of a lane's deliveries and every full sync of its org runs
    under the lane's lease, so they are serialised per org across any
    number of workers; the lease expires when its holder dies. A full sync
    request is a due time here, so a second trigger joins the first and a
    request survives a Redis flush.
    """

    __tablename__ = "work_lanes"
    __table_args__ = (Index("ix_work_lanes_full_sync_due", "full_sync_due_at"),)

    lane: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    full_sync_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    full_sync_force: Mapped[bool] = mapped_column(Boolean, default=False)
    full_sync_trigger: Mapped[str | None] = mapped_column(String(255))
    full_sync_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The burst budget: single member reads spent since the last full
    # listing, and when the last hint was counted (a quiet lane starts over).
    hint_reads: Mapped[int] = mapped_column(Integer, default=0)
    last_hint_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_listing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Listings taken in the current burst: each one lets the next wait twice
    # as long for the burst to pause (sync.batch), so a long burst costs a
    # number of listings logarithmic in its length, not linear.
    burst_listings: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SyncRun(Base):
    __tablename__ = "sync_runs"
    __table_args__ = (Index("ix_sync_runs_workspace_started", "workspace_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # full | member | login
    trigger: Mapped[str] = mapped_column(String(255))
    # running | ok | held | failed | rate_limited | auth_broken
    result: Mapped[str] = mapped_column(String(16), default="running")
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    added: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    api_calls: Mapped[int] = mapped_column(Integer, default=0)
    not_modified: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class HttpCacheEntry(Base):
    """ETag and compact content of one roster page, for conditional requests."""

    __tablename__ = "http_cache"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str] = mapped_column(String(1000), primary_key=True)
    etag: Mapped[str] = mapped_column(String(255))
    payload: Mapped[list[Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AppInstallationPage(Base):
    """ETag and compact content of one ``GET /app/installations`` page, so the
    periodic reconciliation of an unchanged app costs only 304 answers."""

    __tablename__ = "app_installation_pages"

    url: Mapped[str] = mapped_column(String(1000), primary_key=True)
    etag: Mapped[str] = mapped_column(String(255))
    payload: Mapped[list[Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
