"""requests' per-request reading of the environment, paid only when the
environment says something.

With ``trust_env`` on (its default), requests scans ``os.environ`` on every
request for proxy settings (``*_proxy``, twice: once to merge the session's
settings, once to resolve the proxy) and for a CA bundle
(``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``), and looks for a netrc file
when a request carries no auth. A worker's drain spent about 2 ms of CPU per
lane on those scans (cProfile of bench/cost_bench.py's drain). When none of
those settings exists, turning ``trust_env`` off gives the same requests
without the scans; when any exists, nothing changes and requests honours it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import requests

# Lower-cased; requests reads them whatever their case.
_REQUESTS_VARIABLES = frozenset({"requests_ca_bundle", "curl_ca_bundle", "netrc"})
_NETRC_FILES = ("~/.netrc", "~/_netrc")


def environment_configures_requests(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment holds something requests reads per
    request: a proxy variable, a CA bundle, or a netrc file."""
    env = os.environ if environ is None else environ
    for name in env:
        low = name.lower()
        if low.endswith("_proxy") or low in _REQUESTS_VARIABLES:
            return True
    return any(os.path.exists(os.path.expanduser(path)) for path in _NETRC_FILES)


def skip_idle_environment_lookups(session: requests.Session) -> None:
    """Stop ``session`` from scanning the environment on every request when
    the environment holds nothing it would use (checked now, once)."""
    if session.trust_env and not environment_configures_requests():
        session.trust_env = False
