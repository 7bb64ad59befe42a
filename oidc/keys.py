"""Signing keys of the configured issuers (JWKS): fetched from the issuer's
discovery document, cached in process and shared through Redis, refetched
under a fleet-wide cooldown."""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import redis as redis_lib
import requests
from jwt.algorithms import RSAAlgorithm

from oidc.claims import is_str
from oidc.errors import InvalidToken
from oidc.redis_keys import REDIS_PREFIX, as_text

log = logging.getLogger(__name__)

# The only algorithm either provider signs with. Pinning it (rather than
# trusting the header's "alg") stops "alg": "none" and the HS256 confusion
# attack where the public key is used as an HMAC secret.
ALGORITHM = "RS256"

# Bounds on what an issuer's discovery document / JWKS may cost us.
HTTP_TIMEOUT = (3.05, 5.0)
MAX_DOCUMENT_BYTES = 512 * 1024

# Key cache policy.
KEYS_REFETCH_COOLDOWN = 60  # at most one refetch per issuer per minute, fleet-wide
KEYS_MAX_AGE = 3600  # proactively refresh (under the cooldown) keys older than this
LOCAL_RECHECK = 30  # how often a process re-reads the shared copy in Redis


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
        return f"{REDIS_PREFIX}:jwks:{issuer}"

    @staticmethod
    def _slot_key(issuer: str) -> str:
        return f"{REDIS_PREFIX}:jwks-fetch:{issuer}"

    def _current(self, issuer: str, *, force: bool = False) -> _LocalKeys | None:
        local = self._local.get(issuer)
        if local is not None and not force and time.monotonic() - local.checked_at < LOCAL_RECHECK:
            return local
        raw = as_text(self._redis.get(self._cache_key(issuer)))
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
        and is_str(jwk.get("kid"))
        and jwk.get("use", "sig") == "sig"
        and jwk.get("alg", ALGORITHM) == ALGORITHM
        and is_str(jwk.get("n"))
        and is_str(jwk.get("e"))
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
