"""sync.providers.signatures: GitHub HMAC, GitLab tokens, Standard Webhooks."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from sync.providers.signatures import (
    SignatureError,
    gitlab_headers,
    sign_github,
    sign_standard,
    token_matches,
    verify_github,
    verify_gitlab_token,
    verify_standard,
)

BODY = b'{"action":"member_added"}'
SECRET = "It's a Secret to Everybody"
NOW = 1_700_000_000


def test_sign_github_matches_githubs_documented_example() -> None:
    # From GitHub's "Validating webhook deliveries" docs.
    assert sign_github(b"Hello, World!", SECRET) == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


@pytest.mark.parametrize(("header", "secrets"), [
    (sign_github(BODY, SECRET), (SECRET,)),
    (sign_github(BODY, SECRET), ("old", SECRET)),
    (sign_github(BODY, "old"), ("old", SECRET)),
    (sign_github(BODY, SECRET).upper().replace("SHA256=", "sha256="), (SECRET,)),
], ids=["one secret", "rotation: new", "rotation: old", "uppercase hex"])
def test_verify_github_accepts(header: str, secrets: tuple[str, ...]) -> None:
    verify_github(BODY, header, secrets)


@pytest.mark.parametrize(("header", "secrets"), [
    (None, (SECRET,)),
    ("", (SECRET,)),
    (sign_github(BODY, SECRET), ()),
    (sign_github(BODY, SECRET), ("",)),
    (sign_github(BODY, "wrong"), (SECRET,)),
    (sign_github(BODY + b" ", SECRET), (SECRET,)),
    (sign_github(BODY, SECRET)[:-2], (SECRET,)),
    (sign_github(BODY, SECRET)[:7], (SECRET,)),
    (sign_github(BODY, SECRET).replace("sha256=", "sha1="), (SECRET,)),
    (sign_github(BODY, SECRET).replace("sha256=", ""), (SECRET,)),
    ("sha256=" + "g" * 64, (SECRET,)),
], ids=["missing", "empty", "no secret configured", "blank secret", "wrong secret", "other body",
        "truncated", "scheme only", "sha1", "no scheme", "not hex"])
def test_verify_github_rejects(header: str | None, secrets: tuple[str, ...]) -> None:
    with pytest.raises(SignatureError) as err:
        verify_github(BODY, header, secrets)
    assert SECRET not in str(err.value)


@pytest.mark.parametrize(("presented", "ok"), [
    ("tok-123", True), ("tok-124", False), ("tok-12", False), ("tok-1234", False), ("", False),
    ("TOK-123", False),
])
def test_gitlab_token(presented: str, ok: bool) -> None:
    assert token_matches(presented, ("other", "tok-123")) is ok


def test_gitlab_token_rejects_missing_and_unconfigured() -> None:
    with pytest.raises(SignatureError):
        verify_gitlab_token(None, ("tok",))
    with pytest.raises(SignatureError):
        verify_gitlab_token("tok", ())


KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
WHSEC = "whsec_" + KEY


def test_standard_signature_is_hmac_of_id_timestamp_body_with_the_decoded_key() -> None:
    expected = hmac.new(base64.b64decode(KEY), b"msg_1.%d." % NOW + BODY, hashlib.sha256).digest()
    assert sign_standard(BODY, WHSEC, "msg_1", NOW) == "v1," + base64.b64encode(expected).decode()


@pytest.mark.parametrize("signature", [
    lambda: sign_standard(BODY, WHSEC, "msg_1", NOW),
    lambda: "v1,AAAA " + sign_standard(BODY, WHSEC, "msg_1", NOW),
    lambda: "v1a,xyz " + sign_standard(BODY, WHSEC, "msg_1", NOW) + " v1,!!!",
], ids=["one", "second of two", "among junk"])
def test_verify_standard_accepts(signature: object) -> None:
    verify_standard(BODY, "msg_1", str(NOW), signature(), WHSEC, now=NOW + 10)  # type: ignore[operator]


@pytest.mark.parametrize(("msg_id", "ts", "sig", "now"), [
    (None, str(NOW), "valid", NOW),
    ("msg_1", None, "valid", NOW),
    ("msg_1", str(NOW), None, NOW),
    ("msg_1", str(NOW), "valid", NOW + 301),
    ("msg_1", str(NOW), "valid", NOW - 301),
    ("msg_1", "later", "valid", NOW),
    ("msg_2", str(NOW), "valid", NOW),  # id not the signed one
    ("msg_1", str(NOW + 1), "valid", NOW),  # timestamp not the signed one
    ("msg_1", str(NOW), "v1,AAAA", NOW),
    ("msg_1", str(NOW), "v2,valid", NOW),
], ids=["no id", "no timestamp", "no signature", "stale", "future", "bad timestamp", "other id",
        "other timestamp", "bad signature", "other version"])
def test_verify_standard_rejects(msg_id: str | None, ts: str | None, sig: str | None, now: int) -> None:
    valid = sign_standard(BODY, WHSEC, "msg_1", NOW)
    if sig == "valid":
        sig = valid
    elif sig == "v2,valid":
        sig = valid.replace("v1,", "v2,")
    with pytest.raises(SignatureError):
        verify_standard(BODY, msg_id, ts, sig, WHSEC, now=now)


def test_gitlab_headers_round_trip() -> None:
    h = gitlab_headers(BODY, event="Member Hook", token="tok", signing_secret=WHSEC, timestamp=NOW)
    assert h["X-Gitlab-Token"] == "tok" and h["X-Gitlab-Event"] == "Member Hook"
    verify_gitlab_token(h["X-Gitlab-Token"], ("tok",))
    verify_standard(BODY, h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"], WHSEC,
                    now=NOW)
