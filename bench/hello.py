"""The smallest WSGI app: the ceiling that the bench's HTTP client and the API's server (waitress, as
`python -m worker api` runs it) reach on this machine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BODY = b'{"data":{"contactID":"C0000001"}}'


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
