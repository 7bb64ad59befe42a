"""Migrations upgrade an empty database on SQLite and PostgreSQL and match the models."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from models.base import Base, make_engine
from models.migrate import upgrade
from models.tables import Counter


def test_upgrade_empty_database_matches_models(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn)
            assert ctx.get_current_revision() is not None
            diff = compare_metadata(ctx, Base.metadata)
            assert diff == [], f"models and migrations differ: {diff}"
            assert conn.execute(select(Counter.value).where(Counter.name == "activity")).scalar_one() == 0
    finally:
        engine.dispose()
    # Running it again is a no-op, not an error.
    upgrade(db_url)
