"""Provider role -> workspace role mapping (SPEC section 3). Pure functions."""
from __future__ import annotations

from datetime import date
from typing import Literal

# The access a provider membership gives in a workspace.
AccessRole = Literal["admin", "member", "billing"]

# When one member is seen with two roles (GitHub lists admins and members
# separately and paginates by offset; a user in several orgs of one login),
# the higher wins: losing access for one sync is worse than keeping it.
ROLE_RANK: dict[str, int] = {"admin": 3, "member": 2, "billing": 1}


def outranks(role: str | None, held: str | None) -> bool:
    """True when ``role`` gives more access than ``held``."""
    return ROLE_RANK.get(role or "", 0) > ROLE_RANK.get(held or "", 0)


GITLAB_MINIMAL_ACCESS = 5
GITLAB_MAINTAINER = 40
GITLAB_OWNER = 50

_GITLAB_ROLE_NAMES = {
    "guest": 10,
    "planner": 15,
    "reporter": 20,
    "developer": 30,
    "maintainer": 40,
    "owner": 50,
    "minimal access": 5,
}


def github_role(role: str | None, state: str | None = "active") -> AccessRole | None:
    """GitHub org membership -> access. A pending membership gives none."""
    if state is not None and state != "active":
        return None
    if role == "admin":
        return "admin"
    if role == "member":
        return "member"
    if role == "billing_manager":
        return "billing"
    return None


def gitlab_role(
    access_level: int | str | None,
    expires_at: str | date | None = None,
    today: date | None = None,
) -> AccessRole | None:
    """GitLab access level -> access.

    The members API gives a number (40); webhooks give text ("Maintainer").
    Minimal access (5) and an expired membership give no access.
    """
    if access_level is None:
        return None
    if isinstance(access_level, str):
        text = access_level.strip().lower()
        level = int(text) if text.isascii() and text.isdigit() else _GITLAB_ROLE_NAMES.get(text)
        if level is None:
            return None
    else:
        level = int(access_level)
    if expires_at:
        exp = expires_at if isinstance(expires_at, date) else date.fromisoformat(str(expires_at)[:10])
        # GitLab memberships expire at the start of expires_at.
        if exp <= (today or date.today()):
            return None
    if level >= GITLAB_MAINTAINER:
        return "admin"
    if 10 <= level < GITLAB_MAINTAINER:
        return "member"
    return None
