"""The store's data as DynamoDB items: the wire format, expressions, paged reads, the items written for orders and
transitions, the records read back, and a customer's totals as a fold over its orders."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from rules import CustomerFacts
from worker.store.base import HELD_OUT, CustomerRecord, EventRecord, Order, StoreError, TransitionRecord
from worker.store.times import from_ms, to_ms

# Partitions per sharded index: writes spread over several partition keys instead of one hot one (about 1,000
# writes a second each). Customers' indexes take every evaluation's rewrite of due_at: 8. Transitions and events
# come a few per customer per year: 4. Fixed: items carry their shard, so changing these needs a migration.
CUSTOMER_SHARDS = 8
EVENT_SHARDS = 4
_INT64 = 2**63
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()
_CUSTOMER_FIELDS = ("contact_id", "name", "email", "order_count", "total_cents", "first_order_at", "last_order_at",
                    "last_order_ref", "version", "segment", "purchase_frequency", "next_check_at", "evaluated_at",
                    "segment_since", "due_at", "purchase_days", "first_day_cents", "holdouts")
# measured_events: the ids of the customer's events with an outcome window (a string set, absent without one), so
# that ingest measures their outcomes again when the customer's orders change, and does nothing for the others.
_INGEST_FIELDS = _CUSTOMER_FIELDS + ("name_key", "email_key", "order_refs", "purchase_day_set", "measured_events")
# What an event's outcome is computed from and compared with.
_OUTCOME_FIELDS = ("id", "occurred_at", "outcome_until", "outcome_orders", "outcome_cents")
# order_day is compared too: an order re-sent unchanged is unchanged, one stored without its day (before purchase
# days were kept) or with a day of another timezone is written again, as the SQLite store compares its whole row.
_ORDER_FIELDS = ("contact_id", "order_at", "total_cents", "status", "cancelled", "email", "name", "order_day")


@dataclass(frozen=True)
class _Totals:
    """A customer's aggregates as a fold over its orders: adding new orders to stored totals and counting all
    orders from nothing are the same function, so both give exactly what the SQLite store's query gives."""

    order_count: int = 0
    total_cents: int = 0
    first_order_at: int | None = None
    last_order_at: int | None = None
    last_order_ref: str | None = None
    name: str | None = None
    name_key: str | None = None  # (order time, reference) of the order the name came from: the latest one wins
    email: str | None = None
    email_key: str | None = None
    # The distinct local days (order_day) of the counted orders, and the cents counted on the earliest of them: a
    # new order knows whether its day is new and whether it comes before the first. Stored as a number set, with
    # their count (purchase_days) beside it for cheap reads; an order stored without a day counts no day.
    purchase_day_set: frozenset[int] = frozenset()
    first_day_cents: int = 0

    @classmethod
    def of(cls, item: dict[str, Any] | None) -> _Totals:
        if item is None:
            return cls()
        return cls(_int(item.get("order_count", 0)), _int(item.get("total_cents", 0)), _int(item.get("first_order_at")),
                   _int(item.get("last_order_at")), item.get("last_order_ref"), item.get("name"),
                   item.get("name_key"), item.get("email"), item.get("email_key"),
                   frozenset(_int(day) for day in item.get("purchase_day_set", ())),
                   _int(item.get("first_day_cents", 0)))

    def add(self, order: dict[str, Any]) -> _Totals:
        at, ref = _int(order["order_at"]), order["order_ref"]
        key = f"{at:015d}#{ref}"
        changes: dict[str, Any] = {}
        if order.get("name") and (self.name_key is None or key > self.name_key):
            changes.update(name=order["name"], name_key=key)
        if order.get("email") and (self.email_key is None or key > self.email_key):
            changes.update(email=order["email"], email_key=key)
        if not order["cancelled"]:
            cents = _int(order["total_cents"])
            total = self.total_cents + cents
            if not -_INT64 <= total < _INT64:
                raise StoreError(f"customer {order['contact_id']}: total spend outside 64-bit integers")
            changes.update(order_count=self.order_count + 1, total_cents=total,
                           first_order_at=at if self.first_order_at is None else min(self.first_order_at, at))
            if self.last_order_at is None or (at, ref) > (self.last_order_at, self.last_order_ref or ""):
                changes.update(last_order_at=at, last_order_ref=ref)
            day = _int(order.get("order_day"))
            if day is not None:
                changes.update(self._with_day(day, cents, order["contact_id"]))
        return replace(self, **changes)

    def _with_day(self, day: int, cents: int, contact_id: str) -> dict[str, Any]:
        """The day fields once a counted order of `cents` on `day` is added: the same whatever the order of adding."""
        first = min(self.purchase_day_set, default=None)
        if first is None or day < first:
            first_day_cents = cents  # a new first day: the orders counted so far were all on later days
        elif day == first:
            first_day_cents = self.first_day_cents + cents
        else:
            first_day_cents = self.first_day_cents
        if not -_INT64 <= first_day_cents < _INT64:
            raise StoreError(f"customer {contact_id}: first-day spend outside 64-bit integers")
        return {"purchase_day_set": self.purchase_day_set | {day}, "first_day_cents": first_day_cents}

    def fields(self) -> dict[str, Any]:
        return {**self.__dict__, "purchase_days": len(self.purchase_day_set)}


def _order_item(order: Order, now: datetime, excluded: frozenset[str],
                day_of: Callable[[int | None], int | None]) -> dict[str, Any]:
    """An order as stored, with its local day (`day_of` its time, in the store's order_days_timezone()); refuses
    integers the SQLite store could not hold, so both backends accept the same."""
    item = {"order_ref": order.order_ref, "contact_id": order.contact_id, "order_at": to_ms(order.order_at),
            "total_cents": order.total_cents, "status": order.status, "cancelled": order.excluded(excluded),
            "email": order.email, "name": order.name, "received_at": to_ms(now)}
    for name in ("order_at", "total_cents"):
        if not isinstance(item[name], int) or not -_INT64 <= item[name] < _INT64:
            raise OverflowError(f"order {order.order_ref}: {name} {item[name]!r} is not a 64-bit integer")
    item["order_day"] = day_of(item["order_at"])
    return item


def _same_order(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    return all(_int(stored.get(name)) == incoming[name] for name in _ORDER_FIELDS)


def _refs(item: dict[str, Any] | None) -> set[str]:
    return set(item.get("order_refs", ())) if item else set()


def _transition_item(t: TransitionRecord) -> dict[str, Any]:
    return {"contact_id": t.contact_id, "id": t.id, "shard": _shard(t.id, EVENT_SHARDS), "from_segment": t.from_segment,
            "to_segment": t.to_segment,
            "occurred_at": to_ms(t.occurred_at), "detected_at": to_ms(t.detected_at), "rules_version": t.rules_version}


def _customer(item: dict[str, Any]) -> CustomerRecord:
    return CustomerRecord(
        contact_id=item["contact_id"], name=item.get("name"), email=item.get("email"),
        # purchase_days and first_day_cents are 0 on a customer written before they were kept (until a recount)
        facts=CustomerFacts(_int(item.get("order_count", 0)), _int(item.get("total_cents", 0)),
                            from_ms(_int(item.get("first_order_at"))), from_ms(_int(item.get("last_order_at"))),
                            _int(item.get("purchase_days", 0)), _int(item.get("first_day_cents", 0)),
                            item["contact_id"]),
        last_order_ref=item.get("last_order_ref"), version=_int(item["version"]), segment=item.get("segment"),
        purchase_frequency=item.get("purchase_frequency"), next_check_at=from_ms(_int(item.get("next_check_at"))),
        evaluated_at=from_ms(_int(item.get("evaluated_at"))), segment_since=from_ms(_int(item.get("segment_since"))),
        changed=_int(item.get("due_at")) == 0,  # ingest marks a customer changed with due_at 0
        holdouts={campaign: bool(held) for campaign, held in item.get("holdouts", {}).items()},
    )


def _transition(item: dict[str, Any]) -> TransitionRecord:
    return TransitionRecord(item["id"], item["contact_id"], item.get("from_segment"), item["to_segment"],
                            from_ms(_int(item["occurred_at"])), from_ms(_int(item["detected_at"])),
                            item["rules_version"])


def _event(item: dict[str, Any]) -> EventRecord:
    return EventRecord(
        id=item["id"], contact_id=item["contact_id"], campaign=item["campaign"], webhook=item["webhook"],
        type=item["type"], occurred_at=from_ms(_int(item["occurred_at"])), created_at=from_ms(_int(item["created_at"])),
        body=item["body"], status=item["status"], attempts=_int(item["attempts"]),
        next_attempt_at=from_ms(_int(item.get("next_attempt_at"))), last_error=item.get("last_error"),
        last_status=_int(item.get("last_status")), delivered_at=from_ms(_int(item.get("delivered_at"))),
        superseded_by=item.get("superseded_by"), recheck=item.get("recheck", True),
        ordered=not item.get("unordered", False), held_out=item["status"] == HELD_OUT,
        # events stored before outcomes were measured have no window and count nothing
        outcome_until=from_ms(_int(item.get("outcome_until"))), outcome_orders=_int(item.get("outcome_orders", 0)),
        outcome_cents=_int(item.get("outcome_cents", 0)),
    )


def _outcome(event: dict[str, Any], orders: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(orders, cents) of the counted `orders` after the event and before the end of its window, both exclusive, as
    the SQLite store counts them."""
    after, until = _int(event["occurred_at"]), _int(event["outcome_until"])
    inside = [_int(o["total_cents"]) for o in orders if not o["cancelled"] and after < _int(o["order_at"]) < until]
    return len(inside), sum(inside)


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    """Python values to DynamoDB's wire format; None (and an empty set) means the attribute is absent."""
    return {name: _SERIALIZER.serialize(value) for name, value in values.items() if not _absent(value)}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _DESERIALIZER.deserialize(value) for name, value in item.items()}


def _expression(values: dict[str, Any] | None = None, **parts: str) -> dict[str, Any]:
    """Request fields for expressions written with #attribute and :value placeholders; every attribute goes by
    a #name, so DynamoDB's reserved words (name, status, key, ...) never get in the way."""
    request: dict[str, Any] = dict(parts)
    names = {f"#{name}": name for name in re.findall(r"#(\w+)", " ".join(parts.values()))}
    if names:
        request["ExpressionAttributeNames"] = names
    if values:
        request["ExpressionAttributeValues"] = {k: _SERIALIZER.serialize(v) for k, v in values.items()}
    return request


def _set_or_remove(fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """An update expression setting every field that has a value and removing every field that is None."""
    sets = [f"#{name} = :{name}" for name, value in fields.items() if not _absent(value)]
    removes = [f"#{name}" for name, value in fields.items() if _absent(value)]
    expression = ("SET " + ", ".join(sets) if sets else "") + (" REMOVE " + ", ".join(removes) if removes else "")
    return expression.strip(), {f":{name}": value for name, value in fields.items() if not _absent(value)}


def _absent(value: Any) -> bool:
    # DynamoDB has no empty sets and we store no nulls: both mean "no such attribute".
    return value is None or value == set()


def _projection(fields: Sequence[str]) -> str:
    return ", ".join(f"#{name}" for name in fields)


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _paginate(call: Callable[..., dict[str, Any]], request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every answer of a query or scan, each next request starting after the key the previous answer ended on."""
    while True:
        answer = call(**request)
        yield answer
        if not answer.get("LastEvaluatedKey"):
            return
        request = {**request, "ExclusiveStartKey": answer["LastEvaluatedKey"]}


def _read(call: Callable[..., dict[str, Any]], request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The items of every page of a query or scan, as plain values."""
    for answer in _paginate(call, request):
        yield from (_from_item(item) for item in answer.get("Items", []))


def _shard(key: str, shards: int) -> int:
    return zlib.crc32(key.encode()) % shards


def _claim_key(ms: int, seq: int) -> str:
    """Sortable text for (instant, insertion order): zero-padded so that text order is number order."""
    return f"{ms:015d}#{seq:020d}"


def _claim_seq(key: str) -> int:
    return int(key.split("#")[1])


def _int(value: Any) -> Any:
    # DynamoDB numbers arrive as Decimal. Anything else is passed on as stored (as SQLite would), so that one
    # damaged item fails that customer's evaluation, not the whole read.
    return int(value) if isinstance(value, Decimal) else value
