"""Fixtures of the oidc package's tests: the issuers' discovery documents and
JWKS are served through ``responses`` (demo/fakes/issuer.py makes the keys and
tokens); Redis is fakeredis (tests.conftest) or real Redis where marked."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    # Anything not registered raises ConnectionError: an unexpected fetch
    # fails loudly, and it is counted in rsps.calls.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
