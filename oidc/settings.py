"""OIDC settings: which issuers are trusted, for which provider and instance,
and the audience, leeway and token lifetime every token is held to."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from models.config import issuer_instance

OidcProvider = Literal["github", "gitlab"]


@dataclass(frozen=True, slots=True)
class OidcSettings:
    audience: str = "orgsync"
    github_issuers: tuple[str, ...] = ("https://token.actions.githubusercontent.com",)
    gitlab_issuers: tuple[str, ...] = ("https://gitlab.com",)
    accept_github_owner_audience: bool = False
    leeway: int = 30
    # The instances whose ids the store holds (GITHUB_API_URL, GITLAB_URL).
    github_instance: str = "https://api.github.com"
    gitlab_instance: str = "https://gitlab.com"
    max_token_lifetime: int = 14400

    def __post_init__(self) -> None:
        overlap = set(self.github_issuers) & set(self.gitlab_issuers)
        if overlap:
            # One issuer must mean one claim schema; otherwise a GitLab token
            # could be read with GitHub's claim names.
            raise ValueError(f"issuer configured for both providers: {sorted(overlap)}")

    @classmethod
    def from_settings(cls, settings: Any) -> OidcSettings:
        """Build from ``models.config.Settings`` (duck-typed: no import cycle)."""
        return cls(
            audience=settings.oidc_audience,
            github_issuers=tuple(settings.oidc_github_issuers),
            gitlab_issuers=tuple(settings.oidc_gitlab_issuers),
            accept_github_owner_audience=bool(settings.oidc_accept_github_owner_audience),
            github_instance=settings.github_api_url,
            gitlab_instance=settings.gitlab_url,
            max_token_lifetime=int(settings.oidc_max_token_lifetime),
        )

    def instance_of(self, provider: OidcProvider | str, issuer: str) -> str | None:
        """The synced instance an issuer's ids belong to, else None."""
        return issuer_instance(provider, issuer, self.github_instance, self.gitlab_instance)

    def provider_for(self, issuer: str) -> OidcProvider | None:
        # Exact string equality, no normalisation: "https://gitlab.com/" or
        # "http://gitlab.com" are other issuers, whose keys we never fetch.
        if issuer in self.github_issuers:
            return "github"
        if issuer in self.gitlab_issuers:
            return "gitlab"
        return None
