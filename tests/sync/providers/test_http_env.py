"""requests reads proxies, a CA bundle and netrc from the environment on
every request; the adapters read the CA bundle once and skip the scans
unless a proxy or netrc is set (sync.providers.http_env), and honour every
one of them as requests would."""
from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from sync.providers.github_http import GitHubTransport
from sync.providers.gitlab import GitLabProvider, _CountingSession
from sync.providers.http_env import environment_sets_proxy_or_netrc, tls_verify

# A fresh timeout per transport: the thread's shared Requester is keyed by
# URL and settings, so each test gets a connection made under its own
# environment.
_timeouts = itertools.count(1)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment with nothing requests would read: no proxy or CA
    variables, and a home without a netrc file."""
    import os

    for name in list(os.environ):
        low = name.lower()
        if low.endswith("_proxy") or low in ("requests_ca_bundle", "curl_ca_bundle", "netrc"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        body = json.dumps({"login": "acme", "id": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that answers every GET with one org and
    records the request target (an absolute URL when it is used as a proxy)."""
    seen: list[str] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _transport(url: str) -> GitHubTransport:
    return GitHubTransport(url, timeout=30 + next(_timeouts) / 1000, per_page=100, on_send=lambda: None)


def test_what_the_environment_sets() -> None:
    assert environment_sets_proxy_or_netrc({"HTTPS_PROXY": "http://proxy:3128"})
    assert environment_sets_proxy_or_netrc({"no_proxy": "localhost"})
    assert environment_sets_proxy_or_netrc({"All_Proxy": "socks5://proxy"})
    assert environment_sets_proxy_or_netrc({"NETRC": "/run/netrc"})
    assert tls_verify({"REQUESTS_CA_BUNDLE": "/a.pem", "CURL_CA_BUNDLE": "/b.pem"}) == "/a.pem"
    assert tls_verify({"CURL_CA_BUNDLE": "/b.pem"}) == "/b.pem"
    assert tls_verify({"REQUESTS_CA_BUNDLE": "", "PATH": "/usr/bin"}) is True


def test_nothing_set_and_a_netrc_file(clean_env: None, tmp_path: Path) -> None:
    assert not environment_sets_proxy_or_netrc({"PATH": "/usr/bin", "REQUESTS_CA_BUNDLE": "/a.pem"})
    (tmp_path / ".netrc").write_text("machine api.github.com login x password y\n")
    assert environment_sets_proxy_or_netrc({"PATH": "/usr/bin"})


@pytest.mark.parametrize("bundle", [None, "/etc/orgsync-test/ca.pem"])
def test_github_requests_skip_the_scan_and_keep_the_ca_bundle(
    clean_env: None, recorder: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch, bundle: str | None
) -> None:
    """No proxy set: after the request that made the connection, requests no
    longer scans the environment, and it still verifies TLS with the bundle
    the environment names (requests' own resolution), or certifi's."""
    url, seen = recorder
    if bundle:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
    scans: list[str] = []
    verified_with: list[Any] = []
    real_scan = requests.sessions.get_environ_proxies
    real_send = requests.adapters.HTTPAdapter.send

    def counting(*args: Any, **kwargs: Any) -> Any:
        scans.append(args[0])
        return real_scan(*args, **kwargs)

    def sending(self: Any, request: Any, **kwargs: Any) -> Any:
        verified_with.append(kwargs.get("verify"))
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counting)
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", sending)
    transport = _transport(url)
    for _ in range(3):
        assert transport.send("GET", "/orgs/acme").json() == {"login": "acme", "id": 1}
    assert seen == ["/orgs/acme"] * 3
    # The first request, made before its connection existed, scanned; none after.
    assert len(scans) == 1
    assert verified_with == [bundle or True] * 3


def test_github_requests_still_go_through_a_configured_proxy(
    clean_env: None, recorder: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync.providers import http_env

    proxy, seen = recorder
    monkeypatch.setenv("HTTP_PROXY", proxy)
    looks: list[bool] = []
    real_look = http_env.environment_sets_proxy_or_netrc

    def looking(*args: Any) -> bool:
        looks.append(True)
        return real_look(*args)

    monkeypatch.setattr(http_env, "environment_sets_proxy_or_netrc", looking)
    transport = _transport("http://api.github.invalid")
    for _ in range(3):
        assert transport.send("GET", "/orgs/acme").json() == {"login": "acme", "id": 1}
    # A proxy is sent the absolute URL; every request went through it.
    assert seen == ["http://api.github.invalid:80/orgs/acme"] * 3
    # Our own look at the environment is once per session, not per request.
    assert len(looks) == 1


def test_gitlab_sessions_scan_only_when_something_is_configured(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/orgsync-test/ca.pem")
    assert _CountingSession(lambda: None).trust_env is False
    provider = GitLabProvider("https://gitlab.example", "glpat-test")
    assert provider._client(requests.Session()).ssl_verify == "/etc/orgsync-test/ca.pem"
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    assert _CountingSession(lambda: None).trust_env is True
