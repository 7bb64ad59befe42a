"""Configuration is validated once; a bad value names its variable."""
from __future__ import annotations

import pytest

from demo.fakes.issuer import GITHUB_ISSUER, GITLAB_ISSUER
from models.config import ConfigError, load_settings


def test_defaults() -> None:
    s = load_settings({})
    assert s.database_url == "sqlite:///orgsync.db" and s.redis_url is None and s.embedded_redis
    assert s.oidc_audience == "orgsync" and s.resync_interval == 21600 and s.max_removal_fraction == 0.5
    assert s.oidc_github_issuers == ("https://token.actions.githubusercontent.com",)


def test_lists_and_secrets_not_in_repr() -> None:
    s = load_settings({"GITHUB_WEBHOOK_SECRET": "old, new", "ORGSYNC_ADMIN_TOKEN": "tok1,tok2",
                       "DATABASE_URL": "postgresql://u@h/db"})
    assert s.github_webhook_secrets == ("old", "new") and s.admin_tokens == ("tok1", "tok2")
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert "tok1" not in repr(s) and "new" not in repr(s)


@pytest.mark.parametrize(
    "variable,value",
    [
        ("DATABASE_URL", "mysql://x/y"),
        ("DATABASE_URL", "nonsense"),
        ("REDIS_URL", "http://localhost"),
        ("GITHUB_API_URL", "api.github.com"),
        ("GITHUB_APP_ID", "abc"),
        ("GITHUB_APP_PRIVATE_KEY", "/no/such/file.pem"),
        ("GITLAB_WEBHOOK_SIGNING_SECRET", "plain"),
        # An empty or undecodable key would be an HMAC key anyone knows.
        ("GITLAB_WEBHOOK_SIGNING_SECRET", "whsec_"),
        ("GITLAB_WEBHOOK_SIGNING_SECRET", "whsec_not*base64!"),
        ("GITLAB_WEBHOOK_SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS"),  # bad padding
        ("GITLAB_WEBHOOK_SIGNING_SECRET", "whsec_AAAA"),  # 3 bytes
        ("OIDC_MAX_TOKEN_LIFETIME", "forever"),
        ("OIDC_MAX_TOKEN_LIFETIME", "0"),
        ("OIDC_GITHUB_ISSUERS", "http://token.actions.githubusercontent.com"),
        ("OIDC_ACCEPT_GITHUB_OWNER_AUDIENCE", "maybe"),
        ("ORGSYNC_RESYNC_INTERVAL", "soon"),
        ("ORGSYNC_RESYNC_INTERVAL", "5"),
        ("ORGSYNC_MAX_REMOVAL_FRACTION", "1.5"),
        ("ORGSYNC_MAX_REMOVAL_FRACTION", "0"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert info.value.variable == variable and variable in str(info.value)


def test_new_security_settings() -> None:
    s = load_settings({})
    assert s.oidc_max_token_lifetime == 14400 and s.metrics_tokens == ()
    s = load_settings({"OIDC_MAX_TOKEN_LIFETIME": "900", "ORGSYNC_METRICS_TOKEN": "m1, m2",
                       "GITLAB_WEBHOOK_SIGNING_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    assert s.oidc_max_token_lifetime == 900 and s.metrics_tokens == ("m1", "m2")
    assert s.gitlab_webhook_signing_secret is not None and "m1" not in repr(s)
    assert "MfKQ" not in repr(s)


# --------------------------------------------------------------------------- OIDC issuers and instances
# (tests/webhooks/test_oidc_api.py resolves tokens of these instances' issuers)
ENTERPRISE_SLUG_ISSUER = "https://token.actions.githubusercontent.com/acme-corp"
GHES_ISSUER = "https://ghe.example.com/_services/token"
SELF_MANAGED_GITLAB = "https://gitlab.example.com"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OIDC_GITLAB_ISSUERS": f"{GITLAB_ISSUER},{SELF_MANAGED_GITLAB}"}, "OIDC_GITLAB_ISSUERS"),
        ({"GITLAB_URL": SELF_MANAGED_GITLAB, "OIDC_GITLAB_ISSUERS": GITLAB_ISSUER}, "OIDC_GITLAB_ISSUERS"),
        ({"OIDC_GITHUB_ISSUERS": f"{GITHUB_ISSUER},{GHES_ISSUER}"}, "OIDC_GITHUB_ISSUERS"),
        ({"GITHUB_API_URL": "https://ghe.example.com/api/v3", "OIDC_GITHUB_ISSUERS": ENTERPRISE_SLUG_ISSUER},
         "OIDC_GITHUB_ISSUERS"),
        ({"GITHUB_API_URL": "https://ghe.example.com/api/v3",
          "OIDC_GITHUB_ISSUERS": "https://other-ghe.example.com/_services/token"}, "OIDC_GITHUB_ISSUERS"),
    ],
    ids=["gitlab.com-and-self-managed", "self-managed-synced-gitlab.com-issuer", "github.com-and-ghes",
         "ghes-synced-github.com-issuer", "other-ghes"],
)
def test_an_issuer_of_another_instance_is_refused_at_start(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.variable == variable
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "github", "gitlab"),
    [
        ({}, (GITHUB_ISSUER,), (GITLAB_ISSUER,)),
        ({"OIDC_GITHUB_ISSUERS": f"{GITHUB_ISSUER},{ENTERPRISE_SLUG_ISSUER}"},
         (GITHUB_ISSUER, ENTERPRISE_SLUG_ISSUER), (GITLAB_ISSUER,)),
        ({"GITHUB_API_URL": "https://ghe.example.com/api/v3", "GITLAB_URL": SELF_MANAGED_GITLAB},
         (GHES_ISSUER,), (SELF_MANAGED_GITLAB,)),
        # A plain-http instance (a local stand-in) issues nothing we accept.
        ({"GITHUB_API_URL": "http://127.0.0.1:9", "GITLAB_URL": "http://127.0.0.1:9"}, (), ()),
    ],
    ids=["defaults", "enterprise-slug", "ghes-and-self-managed-defaults", "http-instances"],
)
def test_issuers_default_to_the_synced_instances(
    env: dict[str, str], github: tuple[str, ...], gitlab: tuple[str, ...]
) -> None:
    settings = load_settings(env)
    assert (settings.oidc_github_issuers, settings.oidc_gitlab_issuers) == (github, gitlab)
