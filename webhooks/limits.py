"""Request body limits: exact size, and bounded read time.

Werkzeug enforces ``MAX_CONTENT_LENGTH`` against a declared
``Content-Length``, but a chunked body (no length) that runs past the limit
is silently cut at the limit: valid JSON followed by junk would then be
accepted as if the junk were not there, and a signature over the full body
would be checked over a truncated one. Here a body that does not end within
the limit is refused with 413 instead.
"""
from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, cast

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream, get_input_stream

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


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


# Slow clients. Under gunicorn's gthread workers (the Procfile), a request
# whose body is still arriving holds one thread; a client that trickles its
# body, or stops sending, could hold it for ever, and a handful of them would
# take every thread (webhooks from GitHub, which gives up after 10 s and never
# retries, then queue behind them). A body must therefore keep arriving
# (no pause longer than BODY_IDLE_SECONDS) and be complete within
# BODY_READ_SECONDS of the request's start, else 408.
BODY_IDLE_SECONDS = 5.0
BODY_READ_SECONDS = 15.0


class _Watchdog:
    """Cuts off reading at a request's deadline.

    gunicorn reads a body with a loop of blocking recv() calls inside one
    read(), so a client sending a byte now and then never trips the socket
    timeout, and a check between reads comes too late. At the deadline this
    thread shuts the socket's reading side: the pending recv() returns and
    the request is answered 408 (the writing side stays open for that).
    One thread per process, started on first use (after gunicorn's fork).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, sock: socket.socket) -> int:
        token = next(self._ids)
        with self._cond:
            # The thread sleeps until the earliest deadline it knows: it needs
            # waking only when this one comes first (with one read limit for
            # every request, only when it had nothing to watch). A wake-up per
            # request would cost every request a thread switch.
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (deadline, token, sock))
            self._live.add(token)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="orgsync-body-deadline", daemon=True)
                self._thread.start()
            if earliest is None or deadline < earliest:
                self._cond.notify()
        return token

    def done(self, token: int) -> None:
        with self._cond:
            self._live.discard(token)

    def _run(self) -> None:
        while True:
            with self._cond:
                # Requests that finished are dropped whenever the thread
                # wakes, all at once, rather than each at its own deadline.
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token, sock = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(token)
                try:
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass


_watchdog = _Watchdog()


class _DeadlineInput:
    """``wsgi.input`` with a deadline for the whole body."""

    def __init__(self, stream: Any, deadline: float, clock: Callable[[], float]) -> None:
        self._stream = stream
        self._deadline = deadline
        self._clock = clock

    def _late(self) -> RequestTimeout:
        return RequestTimeout("The request body was not received in time.")

    def _call(self, method: Callable[[int], bytes], size: int) -> bytes:
        if self._clock() > self._deadline:
            raise self._late()
        try:
            data = method(size)
        except OSError as exc:
            # TimeoutError: the socket's idle timeout (the client went quiet);
            # anything else after the deadline: the watchdog cut reading off.
            if isinstance(exc, TimeoutError) or self._clock() > self._deadline:
                raise self._late() from None
            raise
        if self._clock() > self._deadline:
            raise self._late()
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._call(self._stream.read, -1 if size is None else size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._call(self._stream.readline, -1 if size is None else size)


class BodyReadDeadline:
    """WSGI middleware bounding the time a request body may take."""

    def __init__(self, app: WSGIApplication, *, idle: float = BODY_IDLE_SECONDS,
                 total: float = BODY_READ_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.idle = idle
        self.total = total
        self.clock = clock

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        deadline = self.clock() + self.total
        environ["wsgi.input"] = _DeadlineInput(environ["wsgi.input"], deadline, self.clock)
        sock = environ.get("gunicorn.socket")
        if not isinstance(sock, socket.socket):
            return self.app(environ, start_response)
        # gunicorn reads with blocking recv() calls and no timeout of its
        # own; gthread makes the socket blocking again for every request on a
        # connection, so this timeout lasts one request.
        sock.settimeout(self.idle)
        token = _watchdog.watch(time.monotonic() + self.total, sock)
        try:
            return self.app(environ, start_response)
        finally:
            _watchdog.done(token)
