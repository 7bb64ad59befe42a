"""GitHub transport: one request, its answer, rate limits and Link paging.

Transport is PyGithub's ``Requester`` (the same object ``Github().requester``
exposes for endpoints PyGithub does not wrap), driven directly instead of
through ``PaginatedList`` because we need conditional requests (ETag) and
exact control over every request:

- no retries inside the adapter (``retry=0``): transient errors and rate
  limits go back to the job, which reschedules; PyGithub's default
  ``GithubRetry`` would sleep without bound on a rate limit;
- no client-side throttling (``seconds_between_*=0``; the default sleeps 0.25 s
  between requests, i.e. 25 s of idle time for a 100-page roster);
- every HTTP request is reported to ``on_send`` (the adapter's
  ``api_calls``; token exchange included).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import requests
from github import Auth
from github.Requester import Requester

from sync.errors import ProviderError, RateLimited, TransientProviderError
from sync.providers.http_env import skip_idle_environment_lookups, tls_verify
from sync.providers.http_errors import (
    DEFAULT_RATE_LIMIT_WAIT,
    NETWORK_ERRORS,
    parse_reset_epoch,
    raise_for_status,
    retry_at,
)

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
USER_AGENT = "orgsync"
ACCEPT = "application/vnd.github+json"

# Whose credentials a request carried: only a user's token failing is the
# user's problem (InvalidUserToken); any other 401/403 breaks the org's link.
Caller = Literal["installation", "app", "user", "anonymous"]


@dataclass(frozen=True, slots=True)
class GitHubResponse:
    status: int
    headers: Mapping[str, str]  # lower-cased names (PyGithub lower-cases them)
    body: str

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError as exc:
            # A 200 with a non-JSON body is a proxy or CDN error page, not GitHub.
            raise TransientProviderError(f"GitHub answered {self.status} with a non-JSON body") from exc

    @property
    def message(self) -> str:
        try:
            data = json.loads(self.body) if self.body else None
        except ValueError:
            return ""
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return cast(str, data["message"])
        return ""


def authorization(auth: Auth.Auth) -> str:
    """The Authorization header value PyGithub would send for ``auth``
    (``token …`` for an installation or user token, ``Bearer …`` for the
    app's JWT). A secret: never logged."""
    headers: dict[str, str] = {}
    auth.authentication(headers)
    return headers["Authorization"]


# One PyGithub ``Requester`` without credentials per thread, API URL and
# settings, kept for the life of the thread: its keep-alive connection serves
# every installation, the app and every user token (each request carries its
# own Authorization header). A Requester per token opened a TCP connection per
# installation a worker met, two with the token exchange. Per thread because
# a Requester's connection holds one request in flight; per process id
# because a forked work horse must not share its parent's socket.
_carriers = threading.local()
# A thread keeps this many (API URL, settings) pairs; the oldest is closed
# past that. Production has one API URL; tests start a server per module.
MAX_CARRIERS_PER_THREAD = 8


def _skip_environment_scans(requester: Requester) -> None:
    """PyGithub makes a Requester's connection, and its requests.Session, on
    the first request (again if the host changes): once it exists, stop it
    scanning an environment that sets no proxy (sync.providers.http_env).
    PyGithub names no public way to the session; if a release moves it, this
    does nothing and requests scans as before (correct, only slower), and
    tests/sync/providers/test_http_env.py fails to say so."""
    connection = getattr(requester, "_Requester__connection", None)
    session = getattr(connection, "session", None)
    if isinstance(session, requests.Session):
        skip_idle_environment_lookups(session)


class GitHubTransport:
    """Requests to one API URL over this thread's shared ``Requester``;
    checks where paging links lead."""

    def __init__(self, api_url: str, *, timeout: float, per_page: int, on_send: Callable[[], None]) -> None:
        self.api_url = api_url.rstrip("/")
        self.per_page = per_page
        self.timeout = timeout
        self._on_send = on_send
        self._origin = _origin_of(self.api_url)
        self._prefix = urllib.parse.urlsplit(self.api_url).path.rstrip("/")

    def close(self) -> None:
        """Nothing to close: the connection is the thread's, shared by the
        transports of every sync this thread runs."""

    def _requester(self) -> Requester:
        # The CA bundle the environment names, read once per connection
        # (sync.providers.http_env); in the key so a changed one is used.
        verify = tls_verify()
        key = (self.api_url, self.timeout, self.per_page, verify, os.getpid())
        carriers: dict[tuple[str, float, int, bool | str, int], Requester] | None = getattr(
            _carriers, "by_key", None)
        if carriers is None:
            carriers = _carriers.by_key = {}
        requester = carriers.get(key)
        if requester is None:
            # A fork leaves the parent's entries behind: this process never
            # uses them (and must not close the parent's sockets).
            for stale in [k for k in carriers if k[-1] != key[-1]]:
                del carriers[stale]
            while len(carriers) >= MAX_CARRIERS_PER_THREAD:
                carriers.pop(next(iter(carriers))).close()
            requester = carriers[key] = Requester(
                auth=None,
                base_url=self.api_url,
                # requests takes float timeouts; PyGithub only annotates int.
                timeout=cast(int, self.timeout),
                user_agent=USER_AGENT,
                per_page=self.per_page,
                verify=verify,
                retry=0,
                pool_size=None,
                seconds_between_requests=0,
                seconds_between_writes=0,
                api_version=API_VERSION,
            )
        return requester

    def send(
        self,
        verb: str,
        url: str,
        *,
        authorization: str | None = None,
        headers: dict[str, str] | None = None,
        body: Any | None = None,
    ) -> GitHubResponse:
        """One request; ``authorization`` is the Authorization header (see
        ``authorization()``), None for an anonymous request."""
        request_headers = {"Accept": ACCEPT, **(headers or {})}
        if authorization is not None:
            request_headers["Authorization"] = authorization
        self._on_send()
        requester = self._requester()
        try:
            status, response_headers, text = requester.requestJson(
                verb, url, headers=request_headers, input=body)
        except NETWORK_ERRORS as exc:
            raise TransientProviderError(f"GitHub unreachable: {type(exc).__name__}") from None
        except requests.exceptions.RequestException as exc:
            raise ProviderError(f"GitHub request failed: {type(exc).__name__}") from None
        finally:
            _skip_environment_scans(requester)
        return GitHubResponse(int(status), {k.lower(): str(v) for k, v in response_headers.items()}, text or "")

    def next_url(self, resp: GitHubResponse, url: str, *, cached_items: int | None = None) -> str | None:
        """The page after ``url``, or None after the last one.

        ``cached_items``: for a 304, how many items the cached page holds. A
        304 need not repeat the Link header; when it carries none, a full
        cached page means there may be another one (GitHub paginates by
        number). A Link header without rel="next" says this was the last page.
        """
        following = _next_link(resp.headers)
        if following is None and cached_items is not None and "link" not in resp.headers \
                and cached_items >= self.per_page:
            following = _with_page(url, _page_of(url) + 1)
        return self._checked(following)

    def _checked(self, url: str | None) -> str | None:
        """Follow a Link only to our own API: the installation token rides along."""
        if url is None:
            return None
        if not url.startswith(("http://", "https://")):
            url = urllib.parse.urljoin(self.api_url + "/", url)
        parts = urllib.parse.urlsplit(url)
        if _origin_of(url) != self._origin or not parts.path.startswith(self._prefix + "/"):
            raise ProviderError("GitHub pagination link points outside the configured API URL")
        return url


def check(resp: GitHubResponse, *, who: Caller, what: str) -> None:
    """Turn a non-success answer into the project's error types."""
    if 200 <= resp.status < 300 or resp.status == 304:
        return
    raise_rate_limited(resp)
    raise_for_status(resp.status, f"GitHub answered {resp.status} for {what}",
                     user_token=who == "user", message=resp.message)


def raise_rate_limited(resp: GitHubResponse) -> None:
    if resp.status not in (403, 429):
        return
    headers = resp.headers
    message = resp.message.lower()
    now = datetime.now(UTC)
    if headers.get("x-ratelimit-remaining") == "0" or message.startswith("api rate limit exceeded"):
        reset_at = parse_reset_epoch(headers.get("x-ratelimit-reset")) or now + DEFAULT_RATE_LIMIT_WAIT
        log.info("github primary rate limit until %s", reset_at.isoformat())
        raise RateLimited(reset_at, secondary=False)
    retry_after = headers.get("retry-after")
    if (
        retry_after is not None
        or "secondary rate limit" in message
        or Requester.isSecondaryRateLimitError(message)
        or resp.status == 429
    ):
        reset_at = retry_at(retry_after, now)
        log.info("github secondary rate limit until %s", reset_at.isoformat())
        raise RateLimited(reset_at, secondary=True)


def _next_link(headers: Mapping[str, str]) -> str | None:
    link = headers.get("link")
    if not link:
        return None
    for part in link.split(","):
        section = part.split(";")
        if len(section) < 2:
            continue
        url = section[0].strip()
        if not (url.startswith("<") and url.endswith(">")):
            continue
        for param in section[1:]:
            key, _, value = param.strip().partition("=")
            if key.strip() == "rel" and "next" in value.strip().strip('"').split():
                return url[1:-1]
    return None


def _with_page(url: str, page: int) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "page"]
    query.append(("page", str(page)))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _page_of(url: str) -> int:
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("page")
    try:
        return int(values[0]) if values else 1
    except ValueError:
        return 1


def _origin_of(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default
