"""What a sync needs from the outside world, in one object.

Jobs and views build it once from the process Runtime; tests build it with a
provider factory pointed at the fake provider server. Nothing in here keeps
state between syncs: every call of ``provider_for`` returns a fresh adapter,
so API call counts belong to exactly one sync.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from models.base import session_scope
from models.config import Settings
from models.tables import Workspace
from sync.providers.base import Provider

# (provider name, GitHub installation id or None) -> a fresh adapter.
ProviderFactory = Callable[[str, "int | None"], Provider]


@dataclass
class SyncContext:
    session_factory: sessionmaker[Session]
    settings: Settings
    provider_for: ProviderFactory

    def provider(self, ws: Workspace) -> Provider:
        """The adapter that reads this workspace's org with our credentials."""
        if ws.provider is None:
            raise ValueError(f"workspace {ws.id} is not connected to a provider")
        return self.provider_for(ws.provider, ws.installation_id)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error."""
        with session_scope(self.session_factory) as s:
            yield s


def default_provider_factory(settings: Settings) -> ProviderFactory:
    def provider_for(name: str, installation_id: int | None = None) -> Provider:
        # Imported on first use, not to dodge a cycle (there is none) but so
        # that a process that never talks to a provider (the CLI's start,
        # `orgsync --help`) does not load PyGithub and python-gitlab.
        if name == "github":
            from sync.providers.github import GitHubProvider

            return GitHubProvider(
                settings.github_api_url,
                settings.github_app_id,
                settings.github_app_private_key,
                installation_id=installation_id,
            )
        if name == "gitlab":
            from sync.providers.gitlab import GitLabProvider

            return GitLabProvider(settings.gitlab_url, settings.gitlab_token)
        raise ValueError(f"unknown provider {name!r}")

    return provider_for


def build_sync_context(settings: Settings, session_factory: sessionmaker[Session]) -> SyncContext:
    return SyncContext(
        session_factory=session_factory,
        settings=settings,
        provider_for=default_provider_factory(settings),
    )


def close_provider(provider: Provider) -> None:
    """Release the adapter's HTTP connections (not part of the Protocol)."""
    close = getattr(provider, "close", None)
    if callable(close):
        close()
