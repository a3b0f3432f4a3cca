"""Log output for every process: JSON lines (with `extra` fields such as event_ids and contact_id) or plain
text, chosen by LOG_FORMAT, and known secrets masked in whatever is written.

LOG_FORMAT=json | text | auto (the default: text when stderr is a terminal, JSON lines otherwise, so that a
developer reads text and a log shipper reads JSON without configuring anything).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
# Environment variables whose values are secrets by their name; API_KEYS and ADMIN_API_KEYS hold several.
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|PRIVATE|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LENGTH = 6  # shorter values ("true", "1") would mask ordinary words, and are no secrets anyway

# Attributes every LogRecord has; anything else on a record came from `extra=` and belongs in the JSON.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of the environment that must never be written anywhere: every comma-separated part of a variable
    named like a secret (WEBHOOK_SECRET, N8N_HEADER_TOKEN, API_KEYS, ...), longest first."""
    found: set[str] = set()
    for name, value in env.items():
        if SECRET_NAME.search(name) and value:
            found.update(part.strip() for part in value.split(","))
            found.add(value.strip())
    if any(v.startswith("whsec_") for v in found):
        found.update(v.removeprefix("whsec_") for v in list(found))
    return sorted((v for v in found if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def masked_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment with every secret-named variable's value replaced by the mask: for interpolating rules text
    from outside (the preview API), so that no error message or answer can ever carry a secret back."""
    return {name: MASK if SECRET_NAME.search(name) and value else value for name, value in env.items()}


def redact(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, every `extra` field, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RedactingFilter(logging.Filter):
    """The last line of defence: masks known secrets in the message, its `extra` fields and any traceback.

    The code never logs a key or a secret on purpose (tests prove it); this catches what a library might add,
    e.g. a URL with a password inside an exception.
    """

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = redact(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, key, redact(value, self.secrets))
        return True


def configure_logging(level: str, log_format: str, env: Mapping[str, str], stream: TextIO | None = None) -> None:
    """Set up the root logger once per process; a process whose logging is already set up (a test runner,
    a host application) keeps its own handlers."""
    root = logging.getLogger()
    if root.handlers:
        return
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if resolve_format(log_format, stream) == "json"
                         else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter(secret_values(env)))
    root.addHandler(handler)
    root.setLevel(level)


def resolve_format(log_format: str, stream: TextIO) -> str:
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def _iso(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
