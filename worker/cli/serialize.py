"""The CLI's JSON for what the use cases return: ``output.emit`` passes every
document through ``to_json``, which turns typed results (sync runs,
workspaces, the operator actions' answers, and the store's views: activity
entries, deliveries, users, their workspaces, invitations) into what
``--json`` prints. The shapes are the API's bodies, written once in
runtime/serialize.py."""
from __future__ import annotations

from typing import Any

from models.deliveries import DeliveryView
from models.managed import InvitationView
from models.store import ActivityView, RunResult, WorkspaceView
from models.users import UserView, WorkspacesOfUser
from runtime.operations import QueuedSync, Replay, StatusReport
from runtime.serialize import (
    activity,
    delivery,
    invitation,
    iso,
    queued,
    reconnection,
    replay,
    run,
    status,
    user,
    workspace,
    workspaces_of_user,
)
from sync.installations import Reconnection

__all__ = [
    "activity", "delivery", "invitation", "iso", "queued", "reconnection", "replay", "run", "status", "to_json",
    "user", "workspace", "workspaces_of_user",
]


def to_json(value: object) -> Any:
    """A typed result's JSON; dicts, lists and tuples are walked, so a
    command's document may hold typed results anywhere; other values pass
    through."""
    if isinstance(value, RunResult):
        return run(value)
    if isinstance(value, WorkspaceView):
        return workspace(value)
    if isinstance(value, StatusReport):
        return status(value)
    if isinstance(value, QueuedSync):
        return queued(value)
    if isinstance(value, Replay):
        return replay(value)
    if isinstance(value, Reconnection):
        return reconnection(value)
    if isinstance(value, ActivityView):
        return activity(value)
    if isinstance(value, DeliveryView):
        return delivery(value)
    if isinstance(value, UserView):
        return user(value)
    if isinstance(value, WorkspacesOfUser):
        return workspaces_of_user(value)
    if isinstance(value, InvitationView):
        return invitation(value)
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value
