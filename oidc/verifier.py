"""The verifier: a CI job's OIDC token (GitHub Actions, GitLab CI) → a
verified token, its jti spent.

The token is the only credential a CI job presents, so everything here is
written against a caller who controls every byte of it. The order matters:

1. the token's shape and header (RS256, a ``kid``) are checked without any I/O;
2. the unverified ``iss`` must equal a configured issuer *exactly* before
   anything is fetched, so a token cannot make us fetch keys from a URL it
   chose (SSRF) or trust keys an attacker hosts;
3. the signature is verified with the issuer's published key (PyJWT), then
   every claim we read is checked declaratively (type and presence);
4. the ``jti`` is spent once, atomically, in Redis;
5. (``oidc.tenant``) the tenant is the workspace bound to the owner's
   *numeric id*.

No Flask here; ``webhooks/oidc_api.py`` is the thin view over it.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import jwt
import redis as redis_lib
import requests

from oidc.claims import check_claims, is_str
from oidc.errors import InvalidReason, InvalidToken, MalformedToken, OidcUnavailable, TokenReplayed
from oidc.keys import ALGORITHM, IssuerKeys
from oidc.redis_keys import REDIS_PREFIX
from oidc.settings import OidcProvider, OidcSettings
from oidc.token import VerifiedToken

log = logging.getLogger(__name__)

# Real CI tokens are 1-2 KiB. Anything far larger is not a token, and parsing
# it would only cost us CPU.
MAX_TOKEN_CHARS = 16 * 1024

# Deployment-wide count of refused replays, exported by /metrics.
REPLAYS_COUNTER = f"{REDIS_PREFIX}:replays-total"

# PyJWT's own checks. "require" defaults to nothing in PyJWT, so it is spelled
# out; the audience is verified below by exact string equality instead
# (PyJWT's non-strict mode accepts a list containing our audience, which would
# let a token minted for several services be replayed against us).
_PYJWT_OPTIONS: dict[str, Any] = {
    "require": ["iss", "aud", "exp", "iat", "jti"],
    "verify_signature": True,
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iat": True,
    "verify_iss": True,
    "verify_aud": False,
}

# PyJWT exception → the reason we report. Order matters: subclasses first
# (InvalidSignatureError is a DecodeError).
_PYJWT_REASONS: tuple[tuple[type[Exception], InvalidReason], ...] = (
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidAlgorithmError, "algorithm"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    # Malformed registered claims ("exp": "soon", "jti": 7, ...).
    (jwt.InvalidIssuedAtError, "missing_claim"),
    (jwt.exceptions.InvalidJTIError, "missing_claim"),
    (jwt.exceptions.InvalidSubjectError, "missing_claim"),
    (jwt.DecodeError, "missing_claim"),
)


def _reason_for(exc: jwt.PyJWTError) -> InvalidReason:
    for exc_type, reason in _PYJWT_REASONS:
        if isinstance(exc, exc_type):
            return reason
    return "bad_signature"


class OidcVerifier:
    def __init__(
        self,
        settings: OidcSettings,
        redis: redis_lib.Redis,
        http: requests.Session | None = None,
    ) -> None:
        self.settings = settings
        self._redis = redis
        self.keys = IssuerKeys(redis, http or requests.Session())

    def verify(self, token: Any) -> VerifiedToken:
        """Verify a CI token and spend its ``jti``.

        Raises MalformedToken, InvalidToken, TokenReplayed or OidcUnavailable.
        """
        try:
            return self._verify(token)
        except redis_lib.RedisError as exc:
            log.error("oidc: redis unavailable: %s", type(exc).__name__)
            raise OidcUnavailable() from None

    def _verify(self, token: Any) -> VerifiedToken:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise MalformedToken()
        if not token.isascii() or token.count(".") != 2:
            raise MalformedToken()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise MalformedToken() from None
        if not isinstance(unverified, dict):
            raise MalformedToken()

        # The header's alg is attacker-chosen; we only compare it to the one
        # we accept and never pass it on (see ALGORITHM).
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("algorithm")
        kid = header.get("kid")
        if not is_str(kid):
            raise InvalidToken("missing_claim", "The token header has no key id (kid).")

        # Issuer before any network I/O: an unconfigured issuer never causes
        # a fetch, so a token cannot steer our requests.
        issuer = unverified.get("iss")
        if issuer is None:
            raise InvalidToken("missing_claim")
        provider = self.settings.provider_for(issuer) if isinstance(issuer, str) else None
        if provider is None or self.settings.instance_of(provider, issuer) is None:
            # Ids are unique per instance only: org 42 of another GitHub or
            # GitLab instance is not our org 42. load_settings refuses such an
            # issuer at start; this holds for settings built any other way.
            raise InvalidToken("wrong_issuer")

        key = self.keys.get(issuer, kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                options=_PYJWT_OPTIONS,  # type: ignore[arg-type]
                issuer=issuer,
                leeway=self.settings.leeway,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason_for(exc)) from None

        check_claims(self.settings, provider, claims)
        if claims["exp"] - claims["iat"] > self.settings.max_token_lifetime:
            # A token valid for years is a standing credential: if it leaks,
            # it works until then. Refused before the jti is spent.
            raise InvalidToken("lifetime_too_long")
        self._spend_jti(provider, issuer, claims)
        return VerifiedToken(provider=provider, claims=claims)

    @staticmethod
    def _jti_key(issuer: str, jti: str) -> str:
        # Hashed: the jti is issuer-chosen text of any length.
        return f"{REDIS_PREFIX}:jti:" + hashlib.sha256(f"{issuer}\0{jti}".encode()).hexdigest()

    def _spend_jti(self, provider: OidcProvider, issuer: str, claims: Mapping[str, Any]) -> None:
        # A stolen token (CI logs, a compromised step) must not be usable a
        # second time. SET NX is atomic, so of two concurrent requests with one
        # token exactly one wins. The mark lives until the token could no
        # longer pass the exp check anyway (exp + leeway).
        ttl = max(1, math.ceil(claims["exp"] + self.settings.leeway - time.time()))
        key = self._jti_key(issuer, claims["jti"])
        if self._redis.set(key, "1", nx=True, ex=ttl):
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.incr(key + ":replays")
        pipe.expire(key + ":replays", ttl)
        pipe.incr(REPLAYS_COUNTER)
        replays, _, _ = pipe.execute()
        log.warning("oidc: replay of a used token (jti hash %s, replay %d)", key[-12:], replays)
        raise TokenReplayed(VerifiedToken(provider=provider, claims=claims), first=int(replays) == 1)

    def release(self, verified: VerifiedToken) -> None:
        """Give a spent ``jti`` back after a failure on our side (GitLab API or
        Redis down), so the job can retry: GitLab CI hands a job one fixed ID
        token, and it is no replay to retry what we failed to answer."""
        try:
            self._redis.delete(self._jti_key(verified.issuer, verified.jti))
        except redis_lib.RedisError:
            log.warning("oidc: could not release a jti after a failure")
