"""Errors raised by the workspace store. Each carries a stable code for the API."""
from __future__ import annotations


class StoreError(Exception):
    code = "store_error"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WorkspaceNotFound(StoreError):
    code = "workspace_not_found"
    status = 404


class AmbiguousReference(WorkspaceNotFound):
    """A bare ``github:<digits>`` that is one workspace's login and another's
    id. A WorkspaceNotFound, so that no caller can take it for a match."""

    code = "ambiguous_reference"
    status = 409


class UserNotFound(StoreError):
    code = "user_not_found"
    status = 404


class DeliveryNotFound(StoreError):
    code = "delivery_not_found"
    status = 404


class CannotDelete(StoreError):
    """Personal workspaces never; provider workspaces not while connected."""

    code = "cannot_delete"
    status = 409


class CannotInvite(StoreError):
    """Personal and provider workspaces take no invitations."""

    code = "cannot_invite"
    status = 409


class NameTaken(StoreError):
    code = "name_taken"
    status = 409


class InvalidName(StoreError):
    code = "invalid_name"
    status = 400


class InvalidTransfer(StoreError):
    code = "invalid_transfer"
    status = 409


class InvalidState(StoreError):
    code = "invalid_state"
    status = 409
