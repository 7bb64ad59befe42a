"""requests' per-request reading of the environment, paid only when the
environment says something that needs it.

With ``trust_env`` on (its default), requests scans ``os.environ`` on every
request for proxy settings (``*_proxy``, twice: once to merge the session's
settings, once to resolve the proxy) and for a CA bundle
(``REQUESTS_CA_BUNDLE``, then ``CURL_CA_BUNDLE``), and looks for a netrc
file when a request carries no auth: 0.1–0.3 ms of a client's CPU per
request on the development machine (bench/cost_bench.py prints it).

The adapters read the CA bundle once, when they make a connection, and pass
it as ``verify`` (what requests would have used). Then, unless a proxy
variable or a netrc file is set (those stay requests' to read, per request,
exactly as before), they turn ``trust_env`` off: the same requests, without
the scans.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Mapping

import requests

_NETRC_FILES = ("~/.netrc", "~/_netrc")
# Sessions already decided: the environment is looked at once per session,
# however often a caller asks (the GitHub transport asks after each request,
# since PyGithub makes its session on the first one).
_decided: weakref.WeakSet[requests.Session] = weakref.WeakSet()


def environment_sets_proxy_or_netrc(environ: Mapping[str, str] | None = None) -> bool:
    """True when requests would find a proxy variable (any case) or a netrc
    file in this environment."""
    env = os.environ if environ is None else environ
    for name in env:
        low = name.lower()
        if low.endswith("_proxy") or low == "netrc":
            return True
    return any(os.path.exists(os.path.expanduser(path)) for path in _NETRC_FILES)


def tls_verify(environ: Mapping[str, str] | None = None) -> bool | str:
    """``verify`` as requests resolves it from the environment for a
    request that asks for verification: the CA bundle the environment
    names, else True (certifi's)."""
    env = os.environ if environ is None else environ
    return env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True


def skip_idle_environment_lookups(session: requests.Session) -> None:
    """Stop ``session`` scanning the environment on every request unless a
    proxy or netrc is set (checked now, once). The caller passes
    ``tls_verify()`` as ``verify``, so the CA bundle is still the one the
    environment names."""
    if session in _decided:
        return
    _decided.add(session)
    if session.trust_env and not environment_sets_proxy_or_netrc():
        session.trust_env = False
