"""A fake provider server on a loopback port: GitHub under /gh, GitLab under /gl.

PyGithub and python-gitlab talk to it over real HTTP:
- GITHUB_API_URL = ``server.github_api_url`` (``http://127.0.0.1:PORT/gh``)
- GITLAB_URL     = ``server.gitlab_url``     (``http://127.0.0.1:PORT/gl``; python-gitlab adds /api/v4)

Use it in tests as a context manager, or run it for benchmarks:
``python -m demo.fakes.server --port 9100``.

Werkzeug's development server closes every connection after its answer (it
sends ``Connection: close``); GitHub and GitLab keep connections alive. With
``keep_alive=True`` (the benchmarks) the fake is served by waitress, which
keeps them alive too, so a benchmark sees what a worker pays against the real
APIs: no TCP connection per request. waitress is a test dependency.
"""
from __future__ import annotations

import argparse
import threading
from typing import Any, Self

from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Response

from demo.fakes.github_server import FakeGitHub
from demo.fakes.gitlab_server import FakeGitLab


class _QuietHandler(WSGIRequestHandler):
    """No access log: benchmarks push hundreds of thousands of requests."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _not_found(environ: dict[str, Any], start_response: Any) -> Any:
    return Response('{"message": "Not Found"}', status=404, content_type="application/json")(
        environ, start_response
    )


class FakeProviderServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 github: FakeGitHub | None = None, gitlab: FakeGitLab | None = None,
                 extra: dict[str, Any] | None = None, *, keep_alive: bool = False) -> None:
        self.github = github or FakeGitHub()
        self.gitlab = gitlab or FakeGitLab()
        # ``extra``: more WSGI apps by mount point (the demo's /demo controls).
        app = DispatcherMiddleware(_not_found, {"/gh": self.github.wsgi, "/gl": self.gitlab.wsgi, **(extra or {})})
        self.keep_alive = keep_alive
        self._server: Any
        if keep_alive:
            from waitress.server import (
                create_server,  # test dependency: only the benchmarks ask for it
            )

            self._server = create_server(app, host=host, port=port, threads=8, connection_limit=1000,
                                         channel_timeout=60, ident="fake-provider")
            self.port = int(self._server.effective_port)
        else:
            self._server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
            self.port = self._server.server_port
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def github_api_url(self) -> str:
        return f"{self.base_url}/gh"

    @property
    def gitlab_url(self) -> str:
        return f"{self.base_url}/gl"

    def start(self) -> Self:
        if self.keep_alive:
            self._thread = threading.Thread(target=self._server.run, daemon=True)
        else:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.keep_alive:
            # Its task threads first: one finishing a response after the
            # server closed would pull a closed trigger (an EBADF traceback).
            self._server.task_dispatcher.shutdown()
            self._server.close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            return
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    server = FakeProviderServer(args.host, args.port)
    print(f"fake GitHub at {server.github_api_url}, fake GitLab at {server.gitlab_url}", flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
