"""A token that passed verification: its provider and its checked claims,
read through the provider-specific claim names."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oidc.settings import OidcProvider


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    provider: OidcProvider
    claims: Mapping[str, Any]

    @property
    def issuer(self) -> str:
        return str(self.claims["iss"])

    @property
    def owner_id(self) -> int:
        """The numeric id the tenant is bound to (GitHub: the repository's
        owner; GitLab: the project's namespace)."""
        name = "repository_owner_id" if self.provider == "github" else "namespace_id"
        return int(self.claims[name])

    @property
    def owner_login(self) -> str:
        name = "repository_owner" if self.provider == "github" else "namespace_path"
        return str(self.claims[name])

    @property
    def repository(self) -> str:
        name = "repository" if self.provider == "github" else "project_path"
        return str(self.claims[name])

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])
