"""Errors of the platform's rules (SPEC sections 3 and 4). Each has the stable
code and HTTP status the API answers with, like models.errors."""
from __future__ import annotations

from models.errors import StoreError


class Forbidden(StoreError):
    """The acting user's role does not allow the change."""

    code = "forbidden"
    status = 403


class CannotRename(StoreError):
    code = "cannot_rename"
    status = 409


class ProviderManaged(StoreError):
    """A provider workspace's name and membership are the provider's."""

    code = "provider_managed"
    status = 409


class PersonalWorkspace(StoreError):
    """A personal workspace has exactly one member, its user."""

    code = "personal_workspace"
    status = 409


class CannotChangeOwner(StoreError):
    """Nobody removes or demotes the owner except by a transfer."""

    code = "cannot_change_owner"
    status = 409


class AlreadyMember(StoreError):
    code = "already_member"
    status = 409


class UsernameTaken(StoreError):
    code = "username_taken"
    status = 409


class InvalidUsername(StoreError):
    code = "invalid_username"
    status = 400


class InvalidRole(StoreError):
    code = "invalid_role"
    status = 400


class InvalidExpiry(StoreError):
    code = "invalid_expiry"
    status = 400


class InvitationNotFound(StoreError):
    code = "invitation_not_found"
    status = 404


class InvitationExpired(StoreError):
    """Expired or revoked: the link no longer opens the door."""

    code = "invitation_expired"
    status = 410


class RequestNotFound(StoreError):
    code = "request_not_found"
    status = 404


class MemberNotFound(StoreError):
    code = "member_not_found"
    status = 404
