"""Webhook authentication: GitHub HMAC signatures, GitLab secret tokens and
GitLab's Standard Webhooks signatures.

Every check runs over the raw request body exactly as received: re-encoding
parsed JSON (or reading a form) would change the bytes and either break valid
signatures or, worse, let a forged body ride on a signature made for another.

Comparisons run in constant time and against every configured secret without
stopping at the first match, so response timing tells an attacker neither how
much of a guess was right nor which of several rotated secrets matched.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Iterable

GITHUB_SIGNATURE_HEADER = "X-Hub-Signature-256"
GITLAB_TOKEN_HEADER = "X-Gitlab-Token"
# Standard Webhooks (https://www.standardwebhooks.com/), as GitLab sends them
# when the hook has a signing token (whsec_...).
WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
# A captured signed delivery must not be replayable for ever: the signed
# timestamp has to be this close to our clock (either direction).
TIMESTAMP_TOLERANCE = 5 * 60


class SignatureError(Exception):
    """The request is not authenticated. The message is safe to answer with:
    it never contains a secret or the expected signature."""


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


# --------------------------------------------------------------------------- GitHub


def sign_github(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_github(body: bytes, header: str | None, secrets_: Iterable[str]) -> None:
    """Raise SignatureError unless ``header`` is a valid signature of ``body``
    under one of the configured secrets (several during a rotation)."""
    configured = [s for s in secrets_ if s]
    if not configured:
        # Never accept unsigned deliveries: with no secret, anyone who finds
        # the URL could feed us membership events.
        raise SignatureError("GitHub webhooks are not accepted: no webhook secret is configured.")
    if not header:
        raise SignatureError(f"The {GITHUB_SIGNATURE_HEADER} header is missing.")
    scheme, sep, hexdigest = header.strip().partition("=")
    if not sep or scheme.lower() != "sha256":
        raise SignatureError(f"The {GITHUB_SIGNATURE_HEADER} header must be sha256=<hex digest>.")
    try:
        presented = bytes.fromhex(hexdigest)
    except ValueError:
        raise SignatureError(f"The {GITHUB_SIGNATURE_HEADER} header is not a hex digest.") from None
    ok = False
    for secret in configured:
        # compare_digest on equal-length digests: a truncated signature simply
        # fails, without revealing how many leading bytes were right.
        ok |= hmac.compare_digest(presented, _hmac_sha256(secret.encode(), body))
    if not ok:
        raise SignatureError("The signature does not match the body.")


def github_headers(body: bytes, secret: str, event: str, delivery_id: str | None = None) -> dict[str, str]:
    """Headers of a GitHub delivery of ``body`` (for tests and ``deliveries send``)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/orgsync",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        GITHUB_SIGNATURE_HEADER: sign_github(body, secret),
    }


# --------------------------------------------------------------------------- GitLab token


def token_matches(presented: str, configured: Iterable[str]) -> bool:
    """Constant-time comparison of a shared secret against every configured one.

    Both sides are hashed first so that the comparison always runs over 32
    bytes: ``hmac.compare_digest`` on raw values of different lengths returns
    early, which would leak the secret's length.
    """
    digest = hashlib.sha256(presented.encode()).digest()
    ok = False
    for value in configured:
        if value:
            ok |= hmac.compare_digest(digest, hashlib.sha256(value.encode()).digest())
    return ok


def verify_gitlab_token(header: str | None, secrets_: Iterable[str]) -> None:
    configured = [s for s in secrets_ if s]
    if not configured:
        raise SignatureError("GitLab webhooks are not accepted: no webhook secret token is configured.")
    if not header:
        raise SignatureError(f"The {GITLAB_TOKEN_HEADER} header is missing.")
    if not token_matches(header, configured):
        raise SignatureError(f"The {GITLAB_TOKEN_HEADER} header does not match a configured secret.")


# --------------------------------------------------------------------------- Standard Webhooks


def _signing_key(signing_secret: str) -> bytes:
    """The HMAC key: the base64-decoded part after ``whsec_``.

    An empty or undecodable key is refused rather than used: HMAC under an
    empty (or guessable) key is a signature anyone can make. Configuration
    refuses such a secret at start; this guards Settings built by hand.
    """
    try:
        key = base64.b64decode(signing_secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("The GitLab signing secret is not configured correctly.") from None
    if not key:
        raise SignatureError("The GitLab signing secret is not configured correctly.")
    return key


def sign_standard(body: bytes, signing_secret: str, msg_id: str, timestamp: int) -> str:
    """One ``v1,<base64>`` signature of ``"<id>.<timestamp>.<body>"``."""
    message = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(_hmac_sha256(_signing_key(signing_secret), message)).decode()


def verify_standard(
    body: bytes,
    msg_id: str | None,
    timestamp: str | None,
    signature_header: str | None,
    signing_secret: str,
    *,
    now: float | None = None,
    tolerance: int = TIMESTAMP_TOLERANCE,
) -> None:
    """Verify a Standard Webhooks signature; raise SignatureError otherwise.

    The header may carry several space-separated ``v1,<sig>`` entries (the
    sender signs with old and new keys during a rotation); one valid entry is
    enough. Entries of other versions are skipped, not trusted.
    """
    if not msg_id or not timestamp or not signature_header:
        raise SignatureError(
            f"The {WEBHOOK_ID}, {WEBHOOK_TIMESTAMP} and {WEBHOOK_SIGNATURE} headers are required."
        )
    try:
        ts = int(timestamp.strip())
    except ValueError:
        raise SignatureError(f"The {WEBHOOK_TIMESTAMP} header is not a Unix timestamp.") from None
    current = time.time() if now is None else now
    # Checked before the HMAC, and the timestamp is inside the signed message,
    # so an attacker can neither replay an old delivery nor move its clock.
    if abs(current - ts) > tolerance:
        raise SignatureError("The webhook timestamp is outside the accepted 5 minute window.")
    key = _signing_key(signing_secret)
    expected = _hmac_sha256(key, f"{msg_id}.{ts}.".encode() + body)
    ok = False
    for entry in signature_header.split():
        version, sep, value = entry.partition(",")
        if not sep or version != "v1":
            continue
        try:
            presented = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        ok |= hmac.compare_digest(presented, expected)
    if not ok:
        raise SignatureError("The webhook signature does not match the body.")


def gitlab_headers(
    body: bytes,
    *,
    event: str,
    token: str | None = None,
    signing_secret: str | None = None,
    idempotency_key: str | None = None,
    event_uuid: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Headers of a GitLab delivery of ``body`` (for tests and ``deliveries send``):
    the secret token, and a Standard Webhooks signature when a signing secret is given."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/orgsync",
        "X-Gitlab-Event": event,
        "X-Gitlab-Event-UUID": event_uuid or str(uuid.uuid4()),
        "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
        "Idempotency-Key": idempotency_key or str(uuid.uuid4()),
    }
    if token is not None:
        headers[GITLAB_TOKEN_HEADER] = token
    if signing_secret is not None:
        msg_id = "msg_" + secrets.token_hex(12)
        ts = int(time.time()) if timestamp is None else timestamp
        headers[WEBHOOK_ID] = msg_id
        headers[WEBHOOK_TIMESTAMP] = str(ts)
        headers[WEBHOOK_SIGNATURE] = sign_standard(body, signing_secret, msg_id, ts)
    return headers
