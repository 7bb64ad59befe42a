"""Provider identities: the link between an account and a provider's numeric
user id (never its login, which the user can change).

Callers pass a Session; functions flush but never commit, so a caller's whole
unit of work (the change and its activity entries) is one transaction.
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tables import Identity


def get_identity(session: Session, provider: str, provider_user_id: int) -> Identity | None:
    return session.scalar(
        select(Identity).where(
            Identity.provider == provider, Identity.provider_user_id == provider_user_id
        )
    )


def set_identity_login(session: Session, provider: str, provider_user_id: int, login: str) -> None:
    """The login label of the account linked to this provider id follows the
    provider (no-op when no account is linked). Roster entries are not
    touched: the caller has just re-read them."""
    ident = get_identity(session, provider, provider_user_id)
    if ident is not None and ident.login != login:
        ident.login = login


def member_subject(provider: str, provider_user_id: int, user_id: str | None) -> str:
    """The activity subject for a roster member (SPEC section 3): the account
    id when the member has an account here, else ``<provider>:<numeric id>``
    (never the login, which the member can change)."""
    return user_id if user_id is not None else f"{provider}:{provider_user_id}"


def member_subjects(session: Session, provider: str, provider_user_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(provider_user_ids))
    accounts: dict[int, str] = {}
    for i in range(0, len(ids), 2000):
        accounts.update(session.execute(
            select(Identity.provider_user_id, Identity.user_id)
            .where(Identity.provider == provider, Identity.provider_user_id.in_(ids[i : i + 2000]))
        ).tuples().all())
    return {uid: member_subject(provider, uid, accounts.get(uid)) for uid in ids}
