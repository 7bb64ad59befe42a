"""CI tenant resolution: GitHub Actions and GitLab CI OIDC tokens → a workspace.

The token is the only credential a CI job presents, so everything here is
written against a caller who controls every byte of it. The order matters:

1. the token's shape and header (RS256, a ``kid``) are checked without any I/O;
2. the unverified ``iss`` must equal a configured issuer *exactly* before
   anything is fetched, so a token cannot make us fetch keys from a URL it
   chose (SSRF) or trust keys an attacker hosts;
3. the signature is verified with the issuer's published key (PyJWT), then
   every claim we read is checked declaratively (type and presence);
4. the ``jti`` is spent once, atomically, in Redis;
5. the tenant is the workspace bound to the owner's *numeric id*.

No Flask here; ``webhooks/oidc_api.py`` is the thin view over it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeGuard

import jwt
import redis as redis_lib
import requests
from jwt.algorithms import RSAAlgorithm

from models import store
from models.config import issuer_instance
from models.errors import WorkspaceNotFound
from models.ids import parse_id
from sync.errors import NotFound, ProviderError
from sync.providers.base import ProviderOrg

log = logging.getLogger(__name__)

OidcProvider = Literal["github", "gitlab"]

# The only algorithm either provider signs with. Pinning it (rather than
# trusting the header's "alg") stops "alg": "none" and the HS256 confusion
# attack where the public key is used as an HMAC secret.
ALGORITHM = "RS256"

# Real CI tokens are 1-2 KiB. Anything far larger is not a token, and parsing
# it would only cost us CPU.
MAX_TOKEN_CHARS = 16 * 1024

# Bounds on what an issuer's discovery document / JWKS may cost us.
HTTP_TIMEOUT = (3.05, 5.0)
MAX_DOCUMENT_BYTES = 512 * 1024

# Key cache policy.
KEYS_REFETCH_COOLDOWN = 60  # at most one refetch per issuer per minute, fleet-wide
KEYS_MAX_AGE = 3600  # proactively refresh (under the cooldown) keys older than this
LOCAL_RECHECK = 30  # how often a process re-reads the shared copy in Redis
GITLAB_ROOT_TTL = 3600  # subgroups can be transferred; don't trust a cached root forever

_REDIS_PREFIX = "orgsync:oidc"
# Deployment-wide count of refused replays, exported by /metrics.
REPLAYS_COUNTER = f"{_REDIS_PREFIX}:replays-total"

# GitHub and GitLab send numeric ids as decimal strings ("repository_owner_id":
# "65"). Anything else ("065", "6e1", " 65", an int) is not what the issuer
# signs, so it is refused rather than coerced.
_NUMERIC_ID = re.compile(r"[1-9][0-9]{0,18}")


# --------------------------------------------------------------------------
# Errors: each carries the HTTP answer it becomes (SPEC section 4).
# --------------------------------------------------------------------------


class OidcError(Exception):
    status: int = 400
    error: str = "malformed_token"
    default_message: str = "The request could not be processed."

    def __init__(self, message: str | None = None, *, reason: str | None = None) -> None:
        self.message = message or self.default_message
        self.reason = reason
        super().__init__(self.message)

    def to_dict(self) -> dict[str, str]:
        body = {"error": self.error, "message": self.message}
        if self.reason is not None:
            body["reason"] = self.reason
        return body


class MalformedToken(OidcError):
    status = 400
    error = "malformed_token"
    default_message = "The request does not carry a well-formed JWT."


InvalidReason = Literal[
    "expired",
    "not_yet_valid",
    "bad_signature",
    "unknown_key",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "algorithm",
    "lifetime_too_long",
]

_REASON_MESSAGES: dict[str, str] = {
    "expired": "The token has expired.",
    "not_yet_valid": "The token is not valid yet.",
    "bad_signature": "The token's signature does not verify.",
    "unknown_key": "The token is signed with a key its issuer does not publish.",
    "wrong_issuer": "The token's issuer is not accepted.",
    "wrong_audience": "The token's audience is not accepted.",
    "missing_claim": "The token lacks a required claim or has one of the wrong type.",
    "algorithm": "The token is not signed with RS256.",
    "lifetime_too_long": "The token's lifetime (exp - iat) is longer than this service accepts.",
}


class InvalidToken(OidcError):
    status = 401
    error = "invalid_token"

    def __init__(self, reason: InvalidReason, message: str | None = None) -> None:
        super().__init__(message or _REASON_MESSAGES[reason], reason=reason)


class TokenReplayed(OidcError):
    status = 401
    error = "token_replayed"
    default_message = "This token has already been used."

    def __init__(self, verified: VerifiedToken | None = None, *, first: bool = True) -> None:
        super().__init__()
        # The token verified, so its owner is known: the replay attempt is
        # worth an entry on that workspace (see record_refusal).
        self.verified = verified
        # Whether this is the token's first replay. Only the first one goes
        # to the change feed: a captured token replayed in a loop would
        # otherwise write one row per request into every consumer's feed.
        self.first = first


class NoWorkspace(OidcError):
    status = 404
    error = "no_workspace"
    default_message = "No workspace is bound to the token's owner."


class WorkspaceMismatch(OidcError):
    status = 403
    error = "workspace_mismatch"
    default_message = "The token does not belong to the requested workspace."


class WorkspaceInactive(OidcError):
    status = 403
    error = "workspace_inactive"
    default_message = "The workspace is suspended or disconnected."


class SubscriptionRequired(OidcError):
    status = 402
    error = "subscription_required"
    default_message = "The workspace has no active subscription."


class OidcUnavailable(OidcError):
    """Redis or the provider API is down. We fail closed: without Redis the
    replay guard cannot hold, so no token is accepted."""

    status = 503
    error = "unavailable"
    default_message = "CI tenant resolution is temporarily unavailable."


# --------------------------------------------------------------------------
# Settings and results
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Declarative claim checks (in the spirit of Warehouse's oidc package): every
# claim we read is listed with the check it must pass, so reading a claim that
# was never checked is a visible omission in review.
# --------------------------------------------------------------------------

ClaimCheck = Callable[[Any], bool]


def _is_str(value: Any) -> TypeGuard[str]:
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
    "iss": _is_str,
    "exp": _is_timestamp,
    "iat": _is_timestamp,
    "jti": _is_str,
    "sub": _is_str,
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
        "repository_owner": _is_str,
        "repository": _is_str,
    },
    "gitlab": {
        "namespace_id": _is_numeric_id,
        "namespace_path": _is_str,
        "project_path": _is_str,
    },
}

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


def _accepted_audiences(settings: OidcSettings, provider: OidcProvider, claims: Mapping[str, Any]) -> set[str]:
    accepted = {settings.audience}
    owner = claims.get("repository_owner")
    if provider == "github" and settings.accept_github_owner_audience and _is_str(owner):
        # GitHub's default audience when the workflow asks for none. It only
        # names the owner, so it is accepted only when the operator opts in,
        # and only for the owner the (signed) token itself names.
        accepted.add(f"https://github.com/{owner}")
    return accepted


# --------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(slots=True)
class _LocalKeys:
    raw: str  # the JSON stored in Redis, to notice another process's refresh
    fetched_at: float
    keys: dict[str, Any]  # kid → RSA public key
    checked_at: float = field(default_factory=time.monotonic)


class IssuerKeys:
    """Signing keys of the configured issuers.

    Three layers: an in-process dict, a shared copy in Redis (so a fleet of
    web processes fetches rarely), and the issuer itself. Threats handled:

    - A flood of tokens with random ``kid`` values must not turn us into a
      traffic amplifier against the issuer (or get us rate limited by it):
      a refetch takes a fleet-wide slot (``SET NX EX 60``), so the flood costs
      one fetch a minute per issuer. PyJWKClient refetches on every unknown
      kid, which is why it is not used.
    - An issuer outage, a 500 or an empty/garbled JWKS must not lock every CI
      job out: a failed fetch keeps the keys we had.
    - The discovery document can point anywhere; only https ``jwks_uri`` are
      followed, with timeouts and a size cap.
    """

    def __init__(self, redis: redis_lib.Redis, http: requests.Session) -> None:
        self._redis = redis
        self._http = http
        self._local: dict[str, _LocalKeys] = {}
        self._lock = threading.Lock()

    # -- public -----------------------------------------------------------

    def get(self, issuer: str, kid: str) -> Any:
        """The public key ``kid`` of ``issuer`` (already checked against the
        configuration). Raises InvalidToken("unknown_key")."""
        keys = self._current(issuer)
        if keys is not None and time.time() - keys.fetched_at > KEYS_MAX_AGE:
            # Old keys may include one the issuer has since withdrawn: refresh
            # when the slot is free, keep using them if that fails.
            self._fetch_with_slot(issuer)
            keys = self._local.get(issuer)
        if keys is not None and kid in keys.keys:
            return keys.keys[kid]

        # Unknown kid: another process may have refreshed the shared copy.
        keys = self._current(issuer, force=True)
        if keys is not None and kid in keys.keys:
            return keys.keys[kid]
        if keys is None:
            # Nothing cached anywhere (first start, Redis flushed): fetch
            # without taking the slot, so that a key rotated right after start
            # is still found by one refetch. A failure takes the slot, so an
            # issuer outage still costs one fetch a minute.
            if not self._slot_taken(issuer) and not self._fetch(issuer):
                self._take_slot(issuer)
        else:
            self._fetch_with_slot(issuer)
        keys = self._local.get(issuer)
        if keys is not None and kid in keys.keys:
            return keys.keys[kid]
        raise InvalidToken("unknown_key")

    # -- cache layers -----------------------------------------------------

    @staticmethod
    def _cache_key(issuer: str) -> str:
        # Only configured issuers ever get here, so the key space is bounded.
        return f"{_REDIS_PREFIX}:jwks:{issuer}"

    @staticmethod
    def _slot_key(issuer: str) -> str:
        return f"{_REDIS_PREFIX}:jwks-fetch:{issuer}"

    def _current(self, issuer: str, *, force: bool = False) -> _LocalKeys | None:
        local = self._local.get(issuer)
        if local is not None and not force and time.monotonic() - local.checked_at < LOCAL_RECHECK:
            return local
        raw = _text(self._redis.get(self._cache_key(issuer)))
        if raw is None:
            return local
        if local is not None and local.raw == raw:
            local.checked_at = time.monotonic()
            return local
        parsed = _parse_cached(raw)
        if parsed is None:
            return local
        with self._lock:
            self._local[issuer] = parsed
        return parsed

    def _slot_taken(self, issuer: str) -> bool:
        return bool(self._redis.exists(self._slot_key(issuer)))

    def _take_slot(self, issuer: str) -> bool:
        return bool(self._redis.set(self._slot_key(issuer), "1", nx=True, ex=KEYS_REFETCH_COOLDOWN))

    def _fetch_with_slot(self, issuer: str) -> None:
        if self._take_slot(issuer):
            self._fetch(issuer)

    def _fetch(self, issuer: str) -> bool:
        """Fetch and publish the issuer's keys; False (keys untouched) on any failure."""
        try:
            jwks = self._download(issuer)
        except (requests.RequestException, ValueError) as exc:
            log.warning("oidc: fetching keys of %s failed: %s", issuer, type(exc).__name__)
            return False
        usable = [k for k in jwks if _usable_jwk(k)]
        if not usable:
            # An empty or garbled JWKS is treated as a failed fetch: replacing
            # good keys with nothing would lock out every CI job.
            log.warning("oidc: %s published no usable RS256 keys; keeping cached keys", issuer)
            return False
        raw = json.dumps({"fetched_at": time.time(), "keys": usable}, sort_keys=True)
        self._redis.set(self._cache_key(issuer), raw)
        parsed = _parse_cached(raw)
        if parsed is None:  # pragma: no cover - usable keys always parse
            return False
        with self._lock:
            self._local[issuer] = parsed
        log.info("oidc: fetched %d key(s) of %s", len(parsed.keys), issuer)
        return True

    def _download(self, issuer: str) -> list[Any]:
        discovery = self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        jwks_uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
            raise ValueError("discovery document has no https jwks_uri")
        jwks = self._get_json(jwks_uri)
        keys = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(keys, list):
            raise ValueError("JWKS has no key list")  # noqa: TRY004 - a bad document, not a bad call
        return keys

    def _get_json(self, url: str) -> Any:
        resp = self._http.get(url, timeout=HTTP_TIMEOUT, stream=True)
        try:
            resp.raise_for_status()
            body = bytearray()
            for chunk in resp.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError("document too large")
        finally:
            resp.close()
        return json.loads(bytes(body))


def _usable_jwk(jwk: Any) -> bool:
    return (
        isinstance(jwk, dict)
        and jwk.get("kty") == "RSA"
        and _is_str(jwk.get("kid"))
        and jwk.get("use", "sig") == "sig"
        and jwk.get("alg", ALGORITHM) == ALGORITHM
        and _is_str(jwk.get("n"))
        and _is_str(jwk.get("e"))
    )


def _parse_cached(raw: str) -> _LocalKeys | None:
    try:
        doc = json.loads(raw)
        keys: dict[str, Any] = {}
        for jwk in doc["keys"]:
            if _usable_jwk(jwk):
                try:
                    keys[jwk["kid"]] = RSAAlgorithm.from_jwk(jwk)
                except (jwt.InvalidKeyError, ValueError, TypeError):
                    continue
        return _LocalKeys(raw=raw, fetched_at=float(doc["fetched_at"]), keys=keys)
    except (ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------
# The verifier
# --------------------------------------------------------------------------


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
        if not _is_str(kid):
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

        self._check_claims(provider, claims)
        if claims["exp"] - claims["iat"] > self.settings.max_token_lifetime:
            # A token valid for years is a standing credential: if it leaks,
            # it works until then. Refused before the jti is spent.
            raise InvalidToken("lifetime_too_long")
        self._spend_jti(provider, issuer, claims)
        return VerifiedToken(provider=provider, claims=claims)

    def _check_claims(self, provider: OidcProvider, claims: dict[str, Any]) -> None:
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
        if not isinstance(aud, str) or aud not in _accepted_audiences(self.settings, provider, claims):
            raise InvalidToken("wrong_audience")

    @staticmethod
    def _jti_key(issuer: str, jti: str) -> str:
        # Hashed: the jti is issuer-chosen text of any length.
        return f"{_REDIS_PREFIX}:jti:" + hashlib.sha256(f"{issuer}\0{jti}".encode()).hexdigest()

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


# --------------------------------------------------------------------------
# Tenant resolution
# --------------------------------------------------------------------------


class NamespaceResolver(Protocol):
    def get_top_level_group(self, namespace_id: int) -> ProviderOrg:
        """The top-level group of a GitLab namespace, by id. Raises
        sync.errors.NotFound for unknown namespaces and user namespaces."""
        ...


def _gitlab_root_id(
    namespace_id: int, resolver: NamespaceResolver | None, redis: redis_lib.Redis | None
) -> int | None:
    cache_key = f"{_REDIS_PREFIX}:gitlab-root:{namespace_id}"
    if redis is not None:
        cached = _text(redis.get(cache_key))
        if cached is not None and cached.isdigit():
            return int(cached)
    if resolver is None:
        return None
    try:
        root = resolver.get_top_level_group(namespace_id)
    except NotFound:
        return None
    except ProviderError as exc:
        log.warning("oidc: resolving GitLab namespace %d failed: %s", namespace_id, type(exc).__name__)
        raise OidcUnavailable() from None
    if redis is not None:
        redis.set(cache_key, str(root.org_id), ex=GITLAB_ROOT_TTL)
    return root.org_id


def find_tenant(
    session: Any,
    verified: VerifiedToken,
    resolver: NamespaceResolver | None = None,
    redis: redis_lib.Redis | None = None,
) -> Any | None:
    """The workspace bound to the token's owner by numeric id, or None.

    Never by name: org logins and group paths are released on rename or
    deletion and can be claimed by anyone, so a name match with an id
    mismatch is someone else's account (the account-name reuse attack).
    """

    owner_id = verified.owner_id
    if verified.provider == "github":
        # repository_owner_id is an org or a user; ids don't collide between
        # the two on GitHub (one account id space).
        return store.get_provider_workspace(
            session, "github", owner_id
        ) or store.get_personal_workspace_for_identity(session, "github", owner_id)

    # GitLab: a top-level group's namespace id is its group id, so a project
    # directly in a connected group needs no API call.
    workspace = store.get_provider_workspace(session, "gitlab", owner_id)
    if workspace is not None:
        return workspace
    # A subgroup: find its root by id through the API (never by the first
    # segment of namespace_path, which a renamed group would let someone else
    # own).
    root_id = _gitlab_root_id(owner_id, resolver, redis)
    if root_id is None or root_id == owner_id:
        return None
    return store.get_provider_workspace(session, "gitlab", root_id)


def _activity_details(verified: VerifiedToken, reason: str | None = None) -> dict[str, Any]:
    # Never the token itself: it is a bearer credential until it expires.
    details: dict[str, Any] = {
        "repository": verified.repository,
        "subject": verified.subject,
        "jti": verified.jti,
        "owner_id": verified.owner_id,
        "owner_login": verified.owner_login,
    }
    if reason is not None:
        details["reason"] = reason
    return details


def record_refusal(
    session: Any,
    verified: VerifiedToken,
    refusal: OidcError,
    resolver: NamespaceResolver | None = None,
    redis: redis_lib.Redis | None = None,
) -> bool:
    """Log a refusal that happened after the token verified (a replay) on its
    owner's workspace, if there is one. Returns whether an entry was made."""

    workspace = find_tenant(session, verified, resolver, redis)
    if workspace is None:
        return False
    store.log_activity(
        session,
        workspace.id,
        f"ci:{verified.provider}",
        "oidc.refused",
        subject=verified.repository,
        details=_activity_details(verified, refusal.error),
    )
    return True


def resolve_tenant(
    session: Any,
    verified: VerifiedToken,
    workspace_ref: str | None,
    resolver: NamespaceResolver | None = None,
    redis: redis_lib.Redis | None = None,
) -> dict[str, Any]:
    """Resolve a verified token to its workspace and check it may deploy.

    Returns the response body for 200. Raises NoWorkspace, WorkspaceMismatch,
    WorkspaceInactive or SubscriptionRequired; every outcome with a known
    workspace is logged to its activity (flushed, not committed: the caller
    commits, refusals included).
    """

    workspace = find_tenant(session, verified, resolver, redis)
    if workspace is None:
        log.info(
            "oidc: no workspace for %s owner id %d (%s)",
            verified.provider, verified.owner_id, verified.repository,
        )
        raise NoWorkspace()

    actor = f"ci:{verified.provider}"
    try:
        if workspace_ref is not None:
            try:
                requested = store.find_workspace(session, workspace_ref)
            except WorkspaceNotFound:
                requested = None
            # Same answer whether the other workspace exists or not: a CI
            # token must not be a way to probe for workspace names.
            if requested is None or requested.id != workspace.id:
                raise WorkspaceMismatch()
        if workspace.status != "active":
            raise WorkspaceInactive()
        if not workspace.subscription_plan:
            raise SubscriptionRequired()
    except OidcError as refusal:
        store.log_activity(
            session,
            workspace.id,
            actor,
            "oidc.refused",
            subject=verified.repository,
            details=_activity_details(verified, refusal.error),
        )
        log.info("oidc: refused %s for workspace %s: %s", verified.repository, workspace.id, refusal.error)
        raise

    store.log_activity(
        session,
        workspace.id,
        actor,
        "oidc.resolved",
        subject=verified.repository,
        details=_activity_details(verified),
    )
    log.info("oidc: resolved %s to workspace %s", verified.repository, workspace.id)
    return {
        "workspace": store.workspace_to_dict(workspace),
        "provider": verified.provider,
        "owner": {"login": verified.owner_login, "id": verified.owner_id},
        "repository": verified.repository,
        "subject": verified.subject,
    }
