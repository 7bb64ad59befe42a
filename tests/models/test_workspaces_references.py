"""Workspace references: a stated precedence, and a stale label never resolves.

Logins and group paths are labels that can be released by a rename and
registered by someone else; numeric ids are forever. Each case names what
the caller gets; on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from models import store
from models.errors import AmbiguousReference, WorkspaceNotFound


@pytest.fixture
def orgs(session: Session) -> dict[str, str]:
    acme = store.create_provider_workspace(session, "github", 100, "acme", actor="test")
    globex = store.create_provider_workspace(session, "github", 12345, "globex", actor="test")
    # An org whose login is all digits, and equal to globex's id.
    digits = store.create_provider_workspace(session, "github", 777, "12345", actor="test")
    gitlab = store.create_provider_workspace(session, "gitlab", 100, "acme-group", actor="test")
    return {"acme": acme.id, "globex": globex.id, "digits": digits.id, "gitlab": gitlab.id}


REFERENCES: list[tuple[str, str | type[Exception]]] = [
    ("github:acme", "acme"),
    ("GitHub:ACME", "acme"),
    ("github:login:acme", "acme"),
    ("github:id:100", "acme"),
    ("github:100", "acme"),  # digits, no such login: the id
    ("github:777", "digits"),
    ("github:login:12345", "digits"),  # stated: the login
    ("github:id:12345", "globex"),  # stated: the id
    ("github:12345", AmbiguousReference),  # one's login, another's id: never a guess
    ("github:login:777", WorkspaceNotFound),
    ("github:login:100", WorkspaceNotFound),
    ("github:id:acme", WorkspaceNotFound),
    ("github:id:", WorkspaceNotFound),
    ("github:id:9223372036854775808", WorkspaceNotFound),  # past BIGINT
    ("github:99999999999999999999", WorkspaceNotFound),
    ("github:acme-group", WorkspaceNotFound),  # GitLab's label is not GitHub's
    ("gitlab:acme", WorkspaceNotFound),
    ("gitlab:id:100", "gitlab"),
    ("gitlab:100", "gitlab"),
    ("github:acme\n", "acme"),  # surrounding whitespace is trimmed, as for names
    ("github:", WorkspaceNotFound),
]


@pytest.mark.parametrize(("ref", "expected"), REFERENCES, ids=[r[0].replace("\n", "\\n") for r in REFERENCES])
def test_reference_precedence(session: Session, orgs: dict[str, str], ref: str,
                              expected: str | type[Exception]) -> None:
    if isinstance(expected, str):
        assert store.find_workspace(session, ref).id == orgs[expected]
    else:
        with pytest.raises(expected):
            store.find_workspace(session, ref)


def test_a_login_re_registered_after_a_missed_rename_resolves_to_its_new_holder(
    session: Session, orgs: dict[str, str]
) -> None:
    # acme (id 100) was renamed on GitHub to acme-old and we missed the
    # webhook; another org (id 200) then registered "acme" and connected.
    newcomer = store.create_provider_workspace(session, "github", 200, "acme", actor="test")
    assert store.find_workspace(session, "github:acme").id == newcomer.id
    old = store.get_workspace(session, orgs["acme"])
    assert old.reference == "github:id:100"
    assert store.find_workspace(session, old.reference).id == old.id
    # The old org's own rename (or sync) gives it its current label back.
    assert store.rename_provider_workspace(session, old, "acme-old", actor="test")
    assert store.find_workspace(session, "github:acme-old").id == old.id
    assert store.find_workspace(session, "github:acme").id == newcomer.id


def test_a_rename_onto_a_stored_login_makes_the_old_holder_stale(session: Session, orgs: dict[str, str]) -> None:
    globex = store.get_workspace(session, orgs["globex"])
    store.rename_provider_workspace(session, globex, "acme", actor="test")
    assert store.find_workspace(session, "github:acme").id == globex.id
    with pytest.raises(WorkspaceNotFound):
        store.find_workspace(session, "github:globex")
    # The stale one is still reachable by id, and regains its label when its
    # org is seen with it again.
    acme = store.find_workspace(session, "github:id:100")
    store.rename_provider_workspace(session, globex, "globex", actor="test")
    store.rename_provider_workspace(session, acme, "acme", actor="test")
    assert store.find_workspace(session, "github:acme").id == acme.id
