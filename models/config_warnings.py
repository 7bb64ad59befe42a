"""Start-up warnings for a provider that is only half configured.

Each configuration value is valid on its own (``load_settings`` checks that),
but some combinations leave a provider unable to do its job, and the symptom
(every webhook answered 401, every sync failing) shows up much later and far
from the cause. Each process says so once, at start."""
from __future__ import annotations

from models.config import Settings


def config_warnings(settings: Settings) -> list[str]:
    warnings: list[str] = []
    gh_app = bool(settings.github_app_id), bool(settings.github_app_private_key)
    gh_secret = bool(settings.github_webhook_secrets)
    # A signing secret alone authenticates GitLab webhooks too.
    gl_token = bool(settings.gitlab_token)
    gl_secret = bool(settings.gitlab_webhook_secrets or settings.gitlab_webhook_signing_secret)
    if any(gh_app) and not all(gh_app):
        missing = "GITHUB_APP_PRIVATE_KEY" if gh_app[0] else "GITHUB_APP_ID"
        warnings.append(f"GitHub is half configured: {missing} is not set, so no GitHub org can be synced")
    if any(gh_app) and not gh_secret:
        warnings.append("GitHub is half configured: GITHUB_WEBHOOK_SECRET is not set, "
                        "so every GitHub webhook is refused (401)")
    if gh_secret and not any(gh_app):
        warnings.append("GitHub is half configured: GITHUB_WEBHOOK_SECRET is set but GITHUB_APP_ID and "
                        "GITHUB_APP_PRIVATE_KEY are not, so webhooks are accepted but no org can be synced")
    if gl_token and not gl_secret:
        warnings.append("GitLab is half configured: GITLAB_WEBHOOK_SECRET (or _SIGNING_SECRET) is not set, "
                        "so every GitLab webhook is refused (401)")
    if gl_secret and not gl_token:
        warnings.append("GitLab is half configured: GITLAB_WEBHOOK_SECRET is set but GITLAB_TOKEN is not, "
                        "so webhooks are accepted but no group can be synced")
    if not (any(gh_app) or gh_secret or gl_token or gl_secret):
        warnings.append("no provider is configured (GITHUB_* / GITLAB_* are unset): every webhook is refused "
                        "(401) and nothing is synced; `orgsync dev --demo` runs with stand-in providers")
    return warnings
