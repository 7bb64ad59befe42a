"""Exact request body limits.

Werkzeug enforces ``MAX_CONTENT_LENGTH`` against a declared
``Content-Length``, but a chunked body (no length) that runs past the limit
is silently cut at the limit: valid JSON followed by junk would then be
accepted as if the junk were not there, and a signature over the full body
would be checked over a truncated one. Here a body that does not end within
the limit is refused with 413 instead.
"""
from __future__ import annotations

from typing import IO, cast

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream, get_input_stream


class _ExactLimitStream(LimitedStream):
    """A maximum-length stream that refuses, rather than truncates, a body
    that is still going when the maximum is reached."""

    def readall(self) -> bytes:
        data = super().readall()
        if self.is_exhausted:
            try:
                more = self._stream.read(1)
            except (OSError, ValueError):
                more = b""
            if more:
                raise RequestEntityTooLarge()
        return data


class ExactLimitRequest(Request):
    @cached_property
    def stream(self) -> IO[bytes]:  # type: ignore[override]
        # get_input_stream still answers 413 for a declared length over the
        # limit and guards servers that do not terminate the input.
        stream = get_input_stream(self.environ, max_content_length=self.max_content_length)
        if "wsgi.input_terminated" in self.environ and self.max_content_length is not None \
                and self.content_length is None:
            exact = _ExactLimitStream(self.environ["wsgi.input"], self.max_content_length, is_max=True)
            return cast(IO[bytes], exact)
        return stream
