"""A fake OIDC issuer (GitHub Actions / GitLab CI) for tests.

Serves the discovery document and the JWKS through a ``responses`` mock (or
anything with its ``add_callback``, such as the demo's requests adapter),
counts every fetch, and mints tokens with any header, claims, key or
algorithm, including the malformed and hostile ones real issuers never
produce (alg none, HS256 with the public key as secret, string exp...).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITLAB_ISSUER = "https://gitlab.com"

# Marks a claim or header field to leave out of a minted token.
DROP: Any = object()

_pool_lock = threading.Lock()
_pool: list[rsa.RSAPrivateKey] = []
_pool_next = 0


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh RSA key. Generating 2048-bit keys is slow, so a process-wide
    pool is generated once and handed out round robin (tests only need keys
    to differ from each other within one test)."""
    global _pool_next
    with _pool_lock:
        if len(_pool) < 8:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _pool.append(key)
            return key
        key = _pool[_pool_next % len(_pool)]
        _pool_next += 1
        return key


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_part(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


class CallbackRegistry(Protocol):
    """What FakeIssuer needs of ``responses.RequestsMock`` (a test-only
    dependency, so the demo brings its own)."""

    def add_callback(self, method: str, url: str, callback: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @property
    def public_jwk(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return jwk

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def encode(
    header: Mapping[str, Any],
    claims: Any,
    *,
    key: rsa.RSAPrivateKey | None = None,
    hmac_secret: bytes | None = None,
) -> str:
    """Build a JWS by hand: RS256 with ``key``, HS256 with ``hmac_secret``,
    or unsigned (empty signature) when neither is given."""
    signing_input = f"{_json_part(dict(header))}.{_json_part(claims)}"
    if key is not None:
        sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    elif hmac_secret is not None:
        sig = hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest()
    else:
        sig = b""
    return f"{signing_input}.{b64url(sig)}"


class FakeIssuer:
    """One OIDC issuer. ``provider`` picks the default claim set."""

    def __init__(
        self,
        mock: CallbackRegistry,
        url: str,
        provider: str,
        *,
        jwks_uri: str | None = None,
        audience: str = "orgsync",
    ) -> None:
        self.url = url
        self.provider = provider
        self.audience = audience
        self.jwks_uri = jwks_uri or f"{url.rstrip('/')}/.well-known/jwks"
        self.keys: list[SigningKey] = [self.new_key()]
        # Knobs for failure tests.
        self.discovery_status = 200
        self.discovery_override: Any = None  # served instead of the real document
        self.jwks_status = 200
        self.jwks_override: Any = None  # e.g. {"keys": []}
        # Counters.
        self.discovery_fetches = 0
        self.jwks_fetches = 0
        self._lock = threading.Lock()
        mock.add_callback(
            "GET", f"{url.rstrip('/')}/.well-known/openid-configuration", callback=self._discovery
        )
        mock.add_callback("GET", self.jwks_uri, callback=self._jwks)

    # -- serving ------------------------------------------------------------

    def _discovery(self, _request: Any) -> tuple[int, dict[str, str], str]:
        with self._lock:
            self.discovery_fetches += 1
        doc = self.discovery_override
        if doc is None:
            doc = {
                "issuer": self.url,
                "jwks_uri": self.jwks_uri,
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        return self.discovery_status, {"Content-Type": "application/json"}, json.dumps(doc)

    def _jwks(self, _request: Any) -> tuple[int, dict[str, str], str]:
        with self._lock:
            self.jwks_fetches += 1
        doc = self.jwks_override if self.jwks_override is not None else self.jwks()
        return self.jwks_status, {"Content-Type": "application/json"}, json.dumps(doc)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keys]}

    # -- keys ---------------------------------------------------------------

    @staticmethod
    def new_key(kid: str | None = None) -> SigningKey:
        return SigningKey(kid or f"kid-{uuid.uuid4().hex[:12]}", new_rsa_key())

    def rotate_in(self) -> SigningKey:
        """Publish a new key (as issuers do before signing with it)."""
        key = self.new_key()
        self.keys.append(key)
        return key

    @property
    def key(self) -> SigningKey:
        return self.keys[0]

    # -- tokens -------------------------------------------------------------

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.url,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        if self.provider == "github":
            base.update(
                sub="repo:acme/app:ref:refs/heads/main",
                repository="acme/app",
                repository_id="1296269",
                repository_owner="acme",
                repository_owner_id="9919",
                ref="refs/heads/main",
                workflow="deploy",
                actor="octocat",
                actor_id="583231",
            )
        else:
            base.update(
                sub="project_path:acme/app:ref_type:branch:ref:main",
                namespace_id="72",
                namespace_path="acme",
                project_id="4242",
                project_path="acme/app",
                user_id="17",
                user_login="dev",
                ref="main",
            )
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not DROP}

    def mint(
        self,
        claims: Any = None,
        *,
        signing_key: SigningKey | None = None,
        kid: Any = None,
        alg: str = "RS256",
        headers: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        """A token signed with ``signing_key`` (default: the issuer's first
        key), with header ``kid`` (default: that key's kid; DROP to omit).
        ``claims`` replaces the payload entirely; ``overrides`` adjust the
        default claims."""
        signer = signing_key or self.key
        payload = claims if claims is not None else self.claims(**overrides)
        header: dict[str, Any] = {"alg": alg, "typ": "JWT", "kid": signer.kid if kid is None else kid}
        header.update(headers or {})
        header = {k: v for k, v in header.items() if v is not DROP}
        if alg == "RS256":
            return encode(header, payload, key=signer.private_key)
        if alg == "HS256":
            # The classic confusion attack: HMAC keyed with the public key.
            return encode(header, payload, hmac_secret=signer.public_pem)
        return encode(header, payload)
