"""Query parameters shared by the API's routes: asOf, limit, opaque cursors and value choices; 400 on nonsense."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from datetime import datetime, timezone

from flask import request
from werkzeug.exceptions import BadRequest

from worker.serialize import parse_instant

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_CURSOR = re.compile(r"^[A-Za-z0-9_-]+$")
# Far from datetime's limits, so that moving asOf into the rules' timezone can never overflow.
EARLIEST_AS_OF = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_AS_OF = datetime(9999, 1, 1, tzinfo=timezone.utc)
CHOICE_REFUSAL = "{name}: unknown value '{raw}'; valid values are {valid}"


def as_of_param() -> datetime | None:
    raw = _text("asOf")
    if raw is None:
        return None
    try:
        as_of = parse_instant(raw)
    except ValueError as exc:
        raise BadRequest(f"asOf: {exc}") from None
    except OverflowError:  # year 9999 with a negative offset: later than any UTC instant, so out of range below
        as_of = LATEST_AS_OF
    if not EARLIEST_AS_OF <= as_of < LATEST_AS_OF:
        raise BadRequest(f"asOf: '{raw}' is outside {EARLIEST_AS_OF.date()} to {LATEST_AS_OF.date()}")
    return as_of


def limit_param() -> int:
    raw = _text("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"\d{1,7}", raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit: must be a whole number from 1 to {MAX_LIMIT}, got '{raw}'")
    return int(raw)


def cursor_param() -> str | None:
    """The key to continue after; the cursor is opaque to clients so its encoding can change."""
    raw = _text("cursor")
    if raw is None:
        return None
    if _CURSOR.match(raw):
        try:
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
        except ValueError:  # bad base64 (binascii.Error) and bad UTF-8 are both ValueErrors
            pass
    raise BadRequest("cursor: not a cursor this API handed out; use nextCursor from the previous page")


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).rstrip(b"=").decode("ascii")


def choice_param(name: str, valid: Sequence[str], refusal: str = CHOICE_REFUSAL) -> str | None:
    """One of `valid`, or None when absent. Anything else is a 400 saying `refusal` (with {name}, {raw}, {valid}),
    which the blueprint answering shows its own way: JSON under /api, the error page on the dashboard."""
    raw = _text(name)
    if raw is None or raw in valid:
        return raw
    raise BadRequest(refusal.format(name=name, raw=raw, valid=", ".join(valid)))


def _text(name: str) -> str | None:
    raw = request.args.get(name, "").strip()
    return raw or None
