"""Query parameters shared by the API's routes: asOf, limit, opaque cursors and value choices; 400 on nonsense."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone

from flask import request
from werkzeug.exceptions import BadRequest

from worker.ingest import storable
from worker.serialize import parse_instant
from worker.store.base import CustomerOrder

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_CURSOR = re.compile(r"^[A-Za-z0-9_-]+$")
# Far from datetime's limits, so that moving asOf into the rules' timezone can never overflow.
EARLIEST_AS_OF = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_AS_OF = datetime(9999, 1, 1, tzinfo=timezone.utc)
CHOICE_REFUSAL = "{name}: unknown value '{raw}'; valid values are {valid}"
# `sort` of a customer list: a field, ascending, or with a leading '-' descending. Days since the last order is the
# last order date reversed (-lastOrderDate: fewest days first). Ties always go by contactID, in the same direction.
SORT_FIELDS = {"contactID": "contact_id", "totalSpend": "total_spend", "lastOrderDate": "last_order"}
SORTS = tuple(f"{sign}{name}" for name in SORT_FIELDS for sign in ("", "-"))
DEFAULT_SORT = "contactID"
_INT64 = 2**63


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
    return None if raw is None else decode_cursor(raw)


def decode_cursor(raw: str, name: str = "cursor") -> str:
    if _CURSOR.match(raw):
        try:
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
        except ValueError:  # bad base64 (binascii.Error) and bad UTF-8 are both ValueErrors
            pass
    raise BadRequest(f"{name}: not a cursor this API handed out; use nextCursor from the previous page")


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


def sort_param(name: str = "sort", refusal: str = CHOICE_REFUSAL) -> tuple[str, CustomerOrder]:
    """The sort asked for (one of SORTS, DEFAULT_SORT when absent) and the store's order for it."""
    sort = choice_param(name, SORTS, refusal) or DEFAULT_SORT
    return sort, sort_order(sort)


def sort_order(sort: str) -> CustomerOrder:
    return CustomerOrder(SORT_FIELDS[sort.lstrip("-")], descending=sort.startswith("-"))


def encode_position(sort: str, position: tuple[int, str]) -> str:
    """A cursor for the row at `position` of a list in `sort`. The default order keeps the plain contactID cursor
    it always had; any other names its sort, so that it is refused under another one."""
    if sort == DEFAULT_SORT:
        return encode_cursor(position[1])
    return encode_cursor(json.dumps([sort, position[0], position[1]], separators=(",", ":"), ensure_ascii=False))


def decode_position(text: str, sort: str, name: str = "cursor") -> tuple[int, str]:
    """The position a cursor of encode_position holds, or a 400 naming `name` when it was made for another sort."""
    if sort == DEFAULT_SORT:
        return 0, text
    try:
        made_for, value, contact_id = json.loads(text)
    except (ValueError, TypeError):  # not JSON, or not a list of three
        made_for = value = contact_id = None
    if (made_for != sort or type(value) is not int or not -_INT64 <= value < _INT64 or not isinstance(contact_id, str)
            or not storable(contact_id)):
        raise BadRequest(f"{name}: not a cursor of a list sorted by {sort}; use nextCursor from the previous page "
                         "of the same list")
    return value, contact_id


def position_param(sort: str) -> tuple[int, str] | None:
    """`cursor` as a position in a list sorted by `sort`."""
    text = cursor_param()
    return None if text is None else decode_position(text, sort)
