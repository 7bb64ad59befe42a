"""Declarative claim checks (in the spirit of Warehouse's oidc package): every
claim we read is listed with the check it must pass, so reading a claim that
was never checked is a visible omission in review. Also the audiences a token
may name."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from models.ids import parse_id
from oidc.errors import InvalidToken
from oidc.settings import OidcProvider, OidcSettings

# GitHub and GitLab send numeric ids as decimal strings ("repository_owner_id":
# "65"). Anything else ("065", "6e1", " 65", an int) is not what the issuer
# signs, so it is refused rather than coerced.
_NUMERIC_ID = re.compile(r"[1-9][0-9]{0,18}")

ClaimCheck = Callable[[Any], bool]


def is_str(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= 1024


def _is_timestamp(value: Any) -> bool:
    # PyJWT coerces with int(), which accepts "9999999999" and True; a claim
    # of the wrong JSON type was not produced by a real issuer.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**40


def _is_numeric_id(value: Any) -> bool:
    # 19 digits can exceed the BIGINT columns ids are stored in; such an id
    # is no real owner and would otherwise fail in the database.
    return isinstance(value, str) and _NUMERIC_ID.fullmatch(value) is not None and parse_id(value) is not None


# Registered claims required of every token. "aud" is checked separately
# because a wrong one is wrong_audience, not missing_claim.
REQUIRED_CLAIMS: dict[str, ClaimCheck] = {
    "iss": is_str,
    "exp": _is_timestamp,
    "iat": _is_timestamp,
    "jti": is_str,
    "sub": is_str,
}

# Checked only when present; their values are enforced by PyJWT with leeway.
OPTIONAL_CLAIMS: dict[str, ClaimCheck] = {
    "nbf": _is_timestamp,
}

# The claims each provider's tenant resolution reads. The owner is taken
# from the numeric id only; the login/path is a mutable label for display.
PROVIDER_CLAIMS: dict[OidcProvider, dict[str, ClaimCheck]] = {
    "github": {
        "repository_owner_id": _is_numeric_id,
        "repository_owner": is_str,
        "repository": is_str,
    },
    "gitlab": {
        "namespace_id": _is_numeric_id,
        "namespace_path": is_str,
        "project_path": is_str,
    },
}


def _accepted_audiences(settings: OidcSettings, provider: OidcProvider, claims: Mapping[str, Any]) -> set[str]:
    accepted = {settings.audience}
    owner = claims.get("repository_owner")
    if provider == "github" and settings.accept_github_owner_audience and is_str(owner):
        # GitHub's default audience when the workflow asks for none. It only
        # names the owner, so it is accepted only when the operator opts in,
        # and only for the owner the (signed) token itself names.
        accepted.add(f"https://github.com/{owner}")
    return accepted


def check_claims(settings: OidcSettings, provider: OidcProvider, claims: dict[str, Any]) -> None:
    """Every claim we read has the type its table names, and the audience is
    one we accept. Raises InvalidToken."""
    for table in (REQUIRED_CLAIMS, PROVIDER_CLAIMS[provider]):
        for name, check in table.items():
            if not check(claims.get(name)):
                raise InvalidToken("missing_claim", f"The token's {name!r} claim is missing or invalid.")
    for name, check in OPTIONAL_CLAIMS.items():
        if name in claims and not check(claims[name]):
            raise InvalidToken("missing_claim", f"The token's {name!r} claim is invalid.")

    aud = claims.get("aud")
    # One string, equal to an accepted audience. A list is refused even
    # when it contains ours: such a token is also valid at the other
    # services it names, any of which could replay it here.
    if not isinstance(aud, str) or aud not in _accepted_audiences(settings, provider, claims):
        raise InvalidToken("wrong_audience")
