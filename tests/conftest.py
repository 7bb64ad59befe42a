"""Shared fixtures: database engines (SQLite always, PostgreSQL when given) and Redis.

Real services come from environment variables:
- ORGSYNC_TEST_DATABASE_URL  e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test
- ORGSYNC_TEST_REDIS_URL     e.g. redis://127.0.0.1:6379/15
When unset, the tests that need them are skipped and say why. CI sets
ORGSYNC_REQUIRE_SERVICES=1, which turns that skip into a failure.
"""
from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.base import Base, make_engine, make_session_factory
from models.tables import Counter

if TYPE_CHECKING:
    import responses

    from demo.fakes.server import FakeProviderServer

# Fixtures shared by several test packages, each defined once: the web app's
# World (tests/app_world.py) and the worker's Env (tests/worker_env.py).
pytest_plugins = ["tests.app_world", "tests.worker_env"]

PG_URL = os.environ.get("ORGSYNC_TEST_DATABASE_URL", "").strip()
REDIS_URL = os.environ.get("ORGSYNC_TEST_REDIS_URL", "").strip()
# Under xdist each worker process flushes its own Redis database: gw0 the one
# configured, gw1 the one below it, and so on (PostgreSQL tests each get a
# fresh schema already).
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if REDIS_URL and _XDIST_WORKER.startswith("gw") and _XDIST_WORKER[2:].isdigit():
    _base, _, _db = REDIS_URL.rpartition("/")
    if _db.isdigit():
        REDIS_URL = f"{_base}/{(int(_db) - int(_XDIST_WORKER[2:])) % 16}"
REQUIRE = os.environ.get("ORGSYNC_REQUIRE_SERVICES", "").strip().lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
# The console script beside this Python (the venv's `orgsync`).
ORGSYNC = Path(sys.executable).with_name("orgsync")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (for a process to bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_service(what: str, variable: str, available: bool) -> None:
    """Skip (or, in CI, fail) a test whose real service is not configured."""
    if available:
        return
    message = f"needs real {what}: set {variable}"
    if REQUIRE:
        pytest.fail(f"{message} (ORGSYNC_REQUIRE_SERVICES is set, so this may not be skipped)")
    pytest.skip(message)


def need_postgres() -> str:
    need_service("PostgreSQL", "ORGSYNC_TEST_DATABASE_URL", bool(PG_URL))
    return PG_URL


def need_redis() -> str:
    need_service("Redis", "ORGSYNC_TEST_REDIS_URL", bool(REDIS_URL))
    return REDIS_URL


def need_corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"payload corpus not found at {CORPUS} (../shared/corpus beside the project)")
    return CORPUS


@pytest.fixture(autouse=True)
def _fresh_github_tokens() -> Iterator[None]:
    """Installation tokens are cached per process; each test starts without them."""
    from sync.providers.github_auth import clear_token_cache

    clear_token_cache()
    yield
    clear_token_cache()


@pytest.fixture(scope="session")
def app_key_pair() -> tuple[str, str]:
    """A throwaway GitHub App key, one per test session: (private PEM, public
    PEM); a fake GitHub that verifies app JWTs is given the public one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


@pytest.fixture(scope="session")
def app_key(app_key_pair: tuple[str, str]) -> str:
    """The session's GitHub App private key (PEM)."""
    return app_key_pair[0]


@pytest.fixture
def server() -> Iterator[FakeProviderServer]:
    """The fake GitHub + GitLab server on a loopback port."""
    from demo.fakes.server import FakeProviderServer

    with FakeProviderServer() as srv:
        yield srv


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema."""
    url = need_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    yield f"{url}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _create_all(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(Counter.__table__.insert().values(name="activity", value=0))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every store test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'orgsync.db'}"
    else:
        yield request.getfixturevalue("pg_schema_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    _create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    s = session_factory()
    yield s
    s.rollback()
    s.close()


@pytest.fixture
def fake_redis():  # type: ignore[no-untyped-def]
    import fakeredis

    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def real_redis():  # type: ignore[no-untyped-def]
    import redis

    url = need_redis()
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def any_redis(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Tests that should hold on the in-process stand-in and on real Redis."""
    if request.param == "fakeredis":
        return request.getfixturevalue("fake_redis")
    return request.getfixturevalue("real_redis")


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Replayed HTTP (``responses``) for the tests of an HTTP client (the GitLab
    adapter, the OIDC issuers' discovery documents and keys). Anything not
    registered raises ConnectionError: an unexpected fetch fails loudly, and it
    is counted in rsps.calls."""
    import responses

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
