"""Start-up warnings for a provider that is only half configured
(models/config_warnings.py)."""
from __future__ import annotations

import pytest

from models.config import Settings
from models.config_warnings import config_warnings


@pytest.mark.parametrize(("values", "expected"), [
    ({}, ["no provider is configured"]),
    ({"github_app_id": "1", "github_app_private_key": "k"}, ["GITHUB_WEBHOOK_SECRET is not set"]),
    ({"github_app_id": "1", "github_webhook_secrets": ("s",)},
     ["GITHUB_APP_PRIVATE_KEY is not set"]),
    ({"github_webhook_secrets": ("s",)}, ["GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY are not"]),
    ({"gitlab_token": "t"}, ["GITLAB_WEBHOOK_SECRET (or _SIGNING_SECRET) is not set"]),
    ({"gitlab_webhook_secrets": ("s",)}, ["GITLAB_TOKEN is not"]),
    ({"gitlab_token": "t", "gitlab_webhook_signing_secret": "whsec_abc"}, []),
    ({"github_app_id": "1", "github_app_private_key": "k", "github_webhook_secrets": ("s",)}, []),
    ({"github_app_id": "1", "github_app_private_key": "k", "github_webhook_secrets": ("s",),
      "gitlab_token": "t", "gitlab_webhook_secrets": ("s",)}, []),
], ids=["nothing", "gh-no-secret", "gh-no-key", "gh-secret-only", "gl-no-secret", "gl-no-token",
        "gl-signing-only", "gh-complete", "both-complete"])
def test_half_configured_providers_are_named(values: dict[str, object], expected: list[str]) -> None:
    found = config_warnings(Settings(**values))  # type: ignore[arg-type]
    assert len(found) == len(expected), found
    for fragment, line in zip(expected, found, strict=True):
        assert fragment in line
