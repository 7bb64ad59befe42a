"""The CLI's one HTTP call: post a body to orgsync and read the answer."""
from __future__ import annotations

import http.client
import urllib.error
import urllib.request


class PostFailed(Exception):
    """No answer at all (refused, timed out, not HTTP); the text says why."""


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float = 30) -> tuple[int, str]:
    """The status code and text of the answer, an error status (4xx, 5xx) included."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise PostFailed(str(getattr(exc, "reason", exc) or type(exc).__name__)) from exc
