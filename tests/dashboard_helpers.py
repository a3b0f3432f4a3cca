"""Signing in to the dashboard through Flask's test client, for the dashboard suites and their fixtures."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from werkzeug.test import TestResponse


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: FlaskClient, key: str) -> TestResponse:
    token = csrf_from(client.get("/signin").text)
    return client.post("/signin", data={"csrf_token": token, "api_key": key})
