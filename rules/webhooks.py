"""Webhook and schedule settings of rules.yaml: where events go, how they are signed and retried, how often the
worker evaluates and delivers. Checked once, when the rules are read."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from rules.model import SettingsModel

DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200)
MAX_DELAY_SECONDS = 7 * 24 * 3600
MAX_INTERVAL_SECONDS = 24 * 3600
# A floor that stops a typo such as 0.001 from running the scheduler's jobs hundreds of times a second (one core
# busy for nothing); fast enough for the crash-recovery harness (bench/chaos.py runs every 0.3 s and 0.1 s).
MIN_INTERVAL_SECONDS = 0.1
# Set for each event by the signature (Standard Webhooks), so a webhook's own headers may not set them.
SIGNATURE_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook's (rules.yaml's or a subscription's), or None: only http(s) with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


class Webhook(SettingsModel):
    url: str
    secret: str = Field(min_length=1)
    timeout_seconds: float = Field(default=10, gt=0, le=120)
    headers: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(default=1, ge=1, le=500)
    max_concurrency: int = Field(default=4, ge=1, le=32)
    # n8n keeps an execution per call and takes some 15-75 calls/s on a small host: pace the sends to it
    max_per_second: float | None = Field(default=None, gt=0, le=10_000)
    retry_schedule_seconds: tuple[float, ...] = Field(default=DEFAULT_RETRY_SCHEDULE)

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str) -> str:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url

    @field_validator("secret")
    @classmethod
    def _usable_secret(cls, secret: str) -> str:
        # Checked here, not at the first send, so a bad secret is refused with its line instead of killing events.
        # The message never repeats the secret.
        if secret.startswith("whsec_"):
            try:
                key = base64.b64decode(secret.removeprefix("whsec_") + "==")  # as standardwebhooks reads it
            except binascii.Error:
                key = b""
            if not key:
                raise ValueError("a 'whsec_...' secret must be base64 after 'whsec_' (as Standard Webhooks "
                                 "generates it); or use any other text without the prefix")
        return secret

    @field_validator("headers")
    @classmethod
    def _drop_empty_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"'{name}' is not a valid header name (letters, digits and dashes, no spaces)")
            if name.lower() in SIGNATURE_HEADERS:
                raise ValueError(f"'{name}' is set for each event by the signature; remove it from headers")
            if any(ch in value for ch in "\r\n\0"):
                raise ValueError(f"the value of header '{name}' may not contain line breaks")
        # `${TOKEN:-}` makes a header optional: unset means the header is not sent at all.
        return {name: value for name, value in headers.items() if value}

    @field_validator("retry_schedule_seconds")
    @classmethod
    def _positive_delays(cls, schedule: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0 < delay <= MAX_DELAY_SECONDS for delay in schedule):  # also refuses nan and inf
            raise ValueError(f"every retry delay must be a number of seconds from 0 to {MAX_DELAY_SECONDS} (a week)")
        return schedule


class Schedule(SettingsModel):
    evaluate_every_seconds: float = Field(default=60, le=MAX_INTERVAL_SECONDS)
    deliver_every_seconds: float = Field(default=5, le=MAX_INTERVAL_SECONDS)

    @field_validator("evaluate_every_seconds", "deliver_every_seconds")
    @classmethod
    def _not_too_often(cls, seconds: float) -> float:
        if not seconds >= MIN_INTERVAL_SECONDS:  # also refuses nan
            raise ValueError(f"must be at least {MIN_INTERVAL_SECONDS} seconds (more often only keeps a CPU busy; "
                             "the defaults are 60 for evaluate and 5 for deliver)")
        return seconds
