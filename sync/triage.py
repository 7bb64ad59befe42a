"""Intake triage: payload → decision, with no store and no provider.

Run by the web view on every delivery, so it must be cheap and pure: it
decides whether a delivery is work at all, which lane (org) it belongs to,
and, for membership events, which user it is a hint about (so a drain can
merge thousands of hints by user id). Whether the org is one the store
holds, and what the provider says now, is decided later by the worker.

Routing (SPEC section 6)::

    GitHub
      organization.member_added / member_removed   → member hint (lane github:<org id>)
      installation.*, installation_target.renamed,
      organization.renamed / deleted               → work (lane github:<org id>)
      organization.member_invited                  → ignored: no access until accepted
      github_app_authorization.revoked             → ignored: no user token is stored
      installation on a user account               → ignored: only organizations are mirrored
      anything else naming an org installation     → ``check_installation``: work only
                                                     if the store does not know the
                                                     installation (adoption)
      everything else                              → ignored
    GitLab (Member Hook / Subgroup Hook / System Hook)
      user_add_to_group / user_update_for_group /
      user_remove_from_group                       → member hint (lane gitlab:<group id>)
      group_rename / group_destroy                 → work (lane gitlab:<group id>)
      user_rename / user_destroy                   → work (lane gitlab:users)
      subgroup events                              → ignored: subgroups are not mirrored
      everything else                              → ignored
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from models.ids import parse_id
from models.lanes import GITLAB_USERS_LANE, lane_of

GITHUB_STRUCTURAL = frozenset({
    ("installation", "created"),
    ("installation", "unsuspend"),
    ("installation", "new_permissions_accepted"),
    ("installation_target", "renamed"),
    ("organization", "renamed"),
})
GITHUB_DISCONNECT = frozenset({("installation", "deleted"), ("organization", "deleted")})
GITHUB_MEMBER = frozenset({("organization", "member_added"), ("organization", "member_removed")})
GITHUB_ACTED_ON = GITHUB_STRUCTURAL | GITHUB_DISCONNECT | GITHUB_MEMBER | {("installation", "suspend")}

GITLAB_HOOKS = ("Member Hook", "Subgroup Hook", "System Hook")
GITLAB_MEMBER = ("user_add_to_group", "user_update_for_group", "user_remove_from_group")
GITLAB_GROUP = ("group_rename", "group_destroy")
GITLAB_USER = ("user_rename", "user_destroy")

Decision = Literal["work", "ignore", "check_installation"]


@dataclass(frozen=True, slots=True)
class Intake:
    decision: Decision
    reason: str = ""
    lane: str | None = None
    hint_user_id: int | None = None  # membership events: the member it is about
    installation_id: int | None = None  # check_installation: the one to look up
    # check_installation: work when the store knows the installation (True)
    # or when it does not (False: adoption).
    work_if_known: bool = False


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def github_action(payload: dict[str, Any]) -> str | None:
    return _str(payload.get("action"))


def gitlab_action(payload: dict[str, Any]) -> str | None:
    # System hooks name the event in event_name; a few newer ones use object_kind.
    return _str(payload.get("event_name")) or _str(payload.get("object_kind"))


@dataclass(frozen=True, slots=True)
class GitHubTarget:
    installation_id: int | None
    org_id: int | None
    org_login: str | None
    is_org: bool


def github_target(payload: dict[str, Any]) -> GitHubTarget:
    inst = _dict(payload.get("installation"))
    account = _dict(inst.get("account")) or _dict(payload.get("account"))
    org = _dict(payload.get("organization"))
    org_id = parse_id(org.get("id")) or parse_id(account.get("id"))
    org_login = _str(org.get("login")) or _str(account.get("login"))
    # GitHub's own examples disagree on account.type and target_type for org
    # installations; either saying Organization, or an organization object
    # in the payload, is enough at intake (the worker reads the org).
    is_org = bool(org) or "Organization" in (
        account.get("type"), inst.get("target_type"), payload.get("target_type")
    )
    return GitHubTarget(parse_id(inst.get("id")), org_id, org_login, is_org)


def github_member(payload: dict[str, Any]) -> tuple[int | None, str | None]:
    user = _dict(_dict(payload.get("membership")).get("user")) or _dict(payload.get("member"))
    return parse_id(user.get("id")), _str(user.get("login"))


def triage_github(event: str, payload: dict[str, Any]) -> Intake:
    action = github_action(payload) or ""
    key = (event, action)
    t = github_target(payload)
    lane = lane_of("github", t.org_id) if t.org_id is not None else None
    if event == "github_app_authorization":
        # The user revoked their OAuth grant. orgsync never stores user tokens
        # (login sync uses the token once), and org access follows org
        # membership, not the grant, so there is nothing to revoke.
        return Intake("ignore", "oauth grant revoked; orgsync stores no user token to revoke", lane)
    if key == ("organization", "member_invited"):
        return Intake("ignore", "an invitation gives no access until it is accepted", lane)
    if event == "installation" and t.installation_id is not None and lane is not None:
        # Payloads disagree on account kinds (GitHub's own examples say "User"
        # for org installations): the worker decides from GitHub's own
        # installation record, one way for every action.
        return Intake("work", lane=lane)
    if t.installation_id is not None and not t.is_org and key in GITHUB_ACTED_ON:
        # Another event the payload says is about a user account: one the
        # store holds as an org's is still the worker's to judge.
        return Intake("check_installation", "installation on a user account, not an organization", lane,
                      installation_id=t.installation_id, work_if_known=True)
    if key in GITHUB_ACTED_ON:
        if lane is None:
            return Intake("ignore", "the payload names no organization", None)
        if key in GITHUB_MEMBER:
            uid, _ = github_member(payload)
            if uid is None:
                return Intake("ignore", "the payload names no member", lane)
            return Intake("work", lane=lane, hint_user_id=uid)
        return Intake("work", lane=lane)
    if t.installation_id is not None and t.is_org and lane is not None and t.org_login:
        # An event we do not act on, but it names an org installation: if the
        # store does not know it, it is adopted (SPEC section 6).
        return Intake("check_installation", f"orgsync does not act on {_label(event, action)}", lane,
                      installation_id=t.installation_id)
    return Intake("ignore", f"orgsync does not act on {_label(event, action)}", lane)


def _label(event: str, action: str) -> str:
    return f"{event}.{action}" if action else event


def triage_gitlab(hook: str, payload: dict[str, Any]) -> Intake:
    name = gitlab_action(payload) or ""
    group_id = parse_id(payload.get("group_id"))
    lane = lane_of("gitlab", group_id) if group_id is not None else None
    if hook not in GITLAB_HOOKS:
        return Intake("ignore", f"orgsync does not act on {hook}", lane)
    if name in GITLAB_USER:
        if parse_id(payload.get("user_id")) is None:
            return Intake("ignore", "the payload names no user id", lane)
        return Intake("work", lane=GITLAB_USERS_LANE)
    if name not in GITLAB_MEMBER + GITLAB_GROUP:
        return Intake("ignore", f"orgsync does not act on {name or 'this event'}", lane)
    if payload.get("parent_group_id") is not None:
        return Intake("ignore", "subgroup membership is not mirrored", lane)
    if lane is None:
        return Intake("ignore", "the payload names no group id", None)
    if name in GITLAB_MEMBER:
        uid = parse_id(payload.get("user_id"))
        if uid is None:
            return Intake("ignore", "the payload names no user id", lane)
        return Intake("work", lane=lane, hint_user_id=uid)
    return Intake("work", lane=lane)


def triage(provider: str, event: str, payload: dict[str, Any]) -> Intake:
    if provider == "github":
        return triage_github(event, payload)
    if provider == "gitlab":
        return triage_gitlab(event, payload)
    return Intake("ignore", f"unknown provider {provider}")
