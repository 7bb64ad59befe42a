"""Logging: one JSON object per line, bound context merged, secrets redacted."""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from runtime.logs import REDACTED, configure_logging, get_logger, log_context


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging("INFO", stream=buf, force=True)
    yield buf
    configure_logging("WARNING", force=True)


def lines(buf: io.StringIO) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_structlog_lines_are_json_with_bound_context(stream: io.StringIO) -> None:
    with log_context(delivery="d-1", provider="github", org="acme", job_id="delivery-abc"):
        get_logger("orgsync.test").info("delivery processed", status="processed")
    get_logger("orgsync.test").info("after")
    first, second = lines(stream)
    assert first["event"] == "delivery processed" and first["status"] == "processed"
    assert {first[k] for k in ("delivery", "provider", "org", "job_id")} == {"d-1", "github", "acme", "delivery-abc"}
    assert first["level"] == "info" and "timestamp" in first
    assert "delivery" not in second  # context ends with the block


@pytest.mark.parametrize("key", ["token", "access_token", "secret", "authorization", "private_key",
                                 "github_app_private_key", "X-Hub-Signature-256", "password"])
def test_secret_looking_keys_are_redacted(stream: io.StringIO, key: str) -> None:
    get_logger("orgsync.test").warning("configured", **{key: "s3cr3t-value-xyz"})
    [line] = lines(stream)
    assert line[key] == REDACTED
    assert "s3cr3t-value-xyz" not in stream.getvalue()


@pytest.mark.parametrize("text", [
    "Authorization: Bearer abcdefghijklmnop",
    "calling https://x/api?access_token=abcdefghijk&page=2",
    "token ghp_abcdefghijklmnopqrstuvwxyz0123",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
    "jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvIn0.c2lnbmF0dXJl",
    # Every pattern, in the case variants the patterns accept (a quick
    # pre-check decides which strings get the full check: it must not miss).
    "AUTHORIZATION: BEARER abcdefghijklmnop",
    "calling https://x/api?PASSWORD=abcdefghijk&page=2",
    "retry with Token=abcdefghijk&x",
    "gitlab said glpat-abcdefghijklmnop0123",
    "pat github_pat_abcdefghijklmnopqrstuvwxyz",
    "signing with whsec_abcdefghijklmnop",
    "-----BEGIN EC PRIVATE KEY-----\nMIIEow (truncated)",
])
def test_secret_looking_values_are_redacted_in_messages_and_stdlib_logs(stream: io.StringIO, text: str) -> None:
    logging.getLogger("rq.worker").warning("request failed: %s", text)
    get_logger("orgsync.test").error("boom", detail={"nested": [text]})
    out = stream.getvalue()
    assert REDACTED in out
    for secret in ("abcdefghijklmnop", "abcdefghijk&", "ghp_abcdefghijklmnopqrstuvwxyz0123", "MIIEow",
                   "c2lnbmF0dXJl", "abcdefghijklmnopqrstuvwxyz"):
        assert secret not in out
    assert all(isinstance(line, dict) for line in lines(stream))


def test_exceptions_are_rendered_inside_the_json_line(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("failed with token=abcdefghij")
    except RuntimeError:
        get_logger("orgsync.test").exception("job failed")
    [line] = lines(stream)
    assert "RuntimeError" in line["exception"] and "abcdefghij" not in line["exception"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("requested", "env", "tty", "expected"), [
    (None, None, True, "text"),
    (None, None, False, "json"),
    ("auto", None, True, "text"),
    (None, "json", True, "json"),
    (None, "text", False, "text"),
    ("json", "text", True, "json"),  # the flag wins over the variable
    (None, "bogus", False, "json"),
])
def test_log_format_is_text_on_a_terminal_and_json_otherwise(
        monkeypatch: pytest.MonkeyPatch, requested: str | None, env: str | None, tty: bool, expected: str) -> None:
    from runtime.logs import log_format

    if env is None:
        monkeypatch.delenv("ORGSYNC_LOG_FORMAT", raising=False)
    else:
        monkeypatch.setenv("ORGSYNC_LOG_FORMAT", env)
    assert log_format(requested, _Terminal() if tty else io.StringIO()) == expected


def test_text_logs_on_a_terminal_are_one_readable_line_and_still_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORGSYNC_LOG_FORMAT", raising=False)
    buf = _Terminal()
    configure_logging("INFO", stream=buf, force=True)
    try:
        get_logger("orgsync.test").warning("configured", access_token="s3cr3t-value-xyz", org="acme")
    finally:
        configure_logging("WARNING", force=True)
    [line] = buf.getvalue().splitlines()
    assert not line.startswith("{") and "configured" in line and "org=acme" in line
    assert "s3cr3t-value-xyz" not in line and REDACTED in line
