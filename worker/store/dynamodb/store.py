"""DynamoDBStore: the Store contract on DynamoDB tables, with conditional writes so that several worker processes
can share them; batching, retries and the thread pool for per-item requests live here too.

Over 500 lines for the same reason as sqlite.py: one whole implementation of the contract; its table design,
item codecs and the other system's table are in the package's other modules.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import reduce
from itertools import islice
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from rules.schema import status_key
from worker.store.base import (
    BULK_REPLAY_LIMIT,
    DEAD,
    EVENT_STATUSES,
    HELD_OUT,
    PENDING,
    SUPERSEDED,
    Attempt,
    CustomerOrder,
    CustomerRecord,
    Evaluation,
    EventRecord,
    IngestResult,
    NewEvent,
    Order,
    OutcomeCell,
    PurchaseRow,
    SaveResult,
    SegmentSummary,
    Store,
    StoreUnavailable,
    Superseded,
    TransitionRecord,
    search_matcher,
    shard_of,
)
from worker.store.dynamodb.items import (
    _CUSTOMER_FIELDS,
    _INGEST_FIELDS,
    _OUTCOME_FIELDS,
    CUSTOMER_SHARDS,
    EVENT_SHARDS,
    _claim_key,
    _claim_seq,
    _code,
    _customer,
    _event,
    _expression,
    _from_item,
    _int,
    _order_item,
    _outcome,
    _paginate,
    _projection,
    _read,
    _refs,
    _same_order,
    _set_or_remove,
    _shard,
    _to_item,
    _Totals,
    _transition,
    _transition_item,
)
from worker.store.dynamodb.tables import SCHEMA_VERSION, TABLES, WORKERS, DynamoConfig, make_client
from worker.store.times import from_ms, local_day_function, to_ms

BATCH_WRITE_ITEMS = 25  # BatchWriteItem's limit
BATCH_GET_KEYS = 100  # BatchGetItem's limit
TRANSACTION_ITEMS = 100  # TransactWriteItems' limit
RETRIES = 8  # unprocessed items, write conflicts: then give up loudly
BACKOFF_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 2.0
CLAIM_PAGES = 5  # pages of due candidates looked at per claim, when others take or hold back the first ones
ATTEMPT_COUNTER_KEY = "counter:attempts"  # a meta item, so no table just for three numbers
ATTEMPT_OUTCOMES = ("delivered", "http_error", "network_error")
# Parallel scan segments for the reads that have no index (customer lists sorted by spend or last order).
SCAN_SEGMENTS = 8

T = TypeVar("T")
R = TypeVar("R")


def open_dynamodb(database_url: str) -> DynamoDBStore:
    """The store DATABASE_URL names, or StoreUnavailable saying what is missing (credentials, region, tables)."""
    config = DynamoConfig.from_url(database_url)  # a malformed URL: ValueError naming DATABASE_URL
    where = f" at {config.endpoint_url}" if config.endpoint_url else ""
    try:
        return DynamoDBStore.open(config)
    except NoCredentialsError:
        raise StoreUnavailable("DATABASE_URL is DynamoDB but no AWS credentials were found: set AWS_ACCESS_KEY_ID "
                               "and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run with an IAM role") from None
    except NoRegionError:
        raise StoreUnavailable("DATABASE_URL is DynamoDB without a region: add ?region=eu-west-1 (say) to it, or set "
                               "AWS_REGION") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise StoreUnavailable(f"DynamoDB{where} refused the connection check: {error.get('Code', 'error')}: "
                               f"{error.get('Message', '')} (check the credentials and DATABASE_URL)") from None
    except BotoCoreError as exc:  # the endpoint cannot be reached, and the like
        raise StoreUnavailable(f"cannot reach DynamoDB{where}: {exc} (check DATABASE_URL and the network)") from None
    except _NoTables as exc:
        raise StoreUnavailable(str(exc)) from None


def _customer_index(segment: str | None, purchase_frequency: str | None) -> tuple[str, list[Any]]:
    """The sharded customer index for a filter (segment first, as it is the narrower), and its partition keys."""
    if segment is not None:
        return "by_segment", [f"{segment}#{s}" for s in range(CUSTOMER_SHARDS)]
    if purchase_frequency is not None:
        return "by_frequency", [f"{purchase_frequency}#{s}" for s in range(CUSTOMER_SHARDS)]
    return "by_id", list(range(CUSTOMER_SHARDS))


class _NoTables(RuntimeError):
    """The tables are missing or belong to a newer program."""


class DynamoDBStore(Store):
    """The Store contract on DynamoDB. Every read that decides a write is strongly consistent; every write that
    could race another process is conditional (a version, a stored segment, a missing id, a lease holder)."""

    def __init__(self, config: DynamoConfig, client: Any = None):
        self.config = config
        self._client = client or make_client(config.region, config.endpoint_url)
        self._tables = {design.noun: config.table(design.noun) for design in TABLES}
        self._sequence = _Sequence()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def open(cls, config: DynamoConfig, client: Any = None) -> DynamoDBStore:
        """The store, after checking that `init-db` made its tables and that no newer program owns them."""
        store = cls(config, client)
        try:
            version = store.get_meta("schema_version")
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            version = None
        if version is None:
            raise _NoTables(f"no segment-worker tables with prefix {config.table_prefix!r} in DynamoDB"
                               f"{' at ' + config.endpoint_url if config.endpoint_url else ''}: "
                               "run `python -m worker init-db` first")
        if int(version) > SCHEMA_VERSION:
            raise _NoTables(f"the DynamoDB tables {config.table_prefix}* have schema version {version}, newer "
                               f"than this program ({SCHEMA_VERSION}); upgrade segment-worker")
        if int(version) < SCHEMA_VERSION:
            # Versions 3 and 5 read events through indexes older tables lack (a customer's, a campaign's measured
            # ones); `init-db` adds them (DynamoDB fills them from the events already there) and only then records
            # the version. Version 4 (purchase days) changed no table: `init-db` recorded it, so that version 3
            # programs stopped starting against the tables.
            todo = ("to add the indexes of events by customer and by campaign" if int(version) < 3
                    else "to add the index of events by campaign")
            raise _NoTables(f"the DynamoDB tables {config.table_prefix}* were made by an older version (schema "
                            f"version {version}, this one needs {SCHEMA_VERSION}): run `python -m worker init-db` "
                            f"{todo}, then start again")
        return store

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    # ingest ------------------------------------------------------------------------------------------------

    def upsert_orders(self, orders: Sequence[Order], now: datetime) -> IngestResult:
        """Orders first (batched), then each touched customer's aggregates by a conditional write on its version.

        The customer item keeps the set of order references its aggregates count, so a retry after a conflict
        knows exactly what is counted already; the `orders` table stays the truth about who owns a reference.
        A failed batch must be sent again (every caller does): the orders are written before the customers, and
        an order that is stored but not yet counted by its owner is not 'unchanged', so the re-send completes it.
        """
        latest: dict[str, Order] = {}
        for order in orders:
            latest[order.order_ref] = order
        excluded = self.excluded_statuses()
        day_of = local_day_function(self.order_days_timezone())
        incoming = {ref: _order_item(order, now, excluded, day_of)  # bad values raise here
                    for ref, order in latest.items()}
        stored = self._get_items("orders", [{"order_ref": ref} for ref in incoming])
        stored_by_ref = {item["order_ref"]: item for item in stored}
        owners = {item["contact_id"] for item in incoming.values()} | {item["contact_id"] for item in stored}
        counted_before = {item["contact_id"]: item for item in self._get_items(
            "customers", [{"contact_id": c} for c in owners], _INGEST_FIELDS)}
        inserted = updated = unchanged = 0
        changes: dict[str, _CustomerChange] = {}
        written = []
        for ref, item in incoming.items():
            before = stored_by_ref.get(ref)
            owner = counted_before.get(item["contact_id"])
            if before is not None and _same_order(before, item) and ref in _refs(owner):
                unchanged += 1
                continue
            inserted, updated = (inserted + 1, updated) if before is None else (inserted, updated + 1)
            written.append(item)
            changes.setdefault(item["contact_id"], _CustomerChange()).arrived[ref] = item
            if before is not None and before["contact_id"] != item["contact_id"]:
                changes.setdefault(before["contact_id"], _CustomerChange()).left.add(ref)
        for contact_id, change in changes.items():  # totals that cannot be stored refuse the batch before any write
            if not _refs(counted_before.get(contact_id)) & (change.arrived.keys() | change.left):
                reduce(_Totals.add, change.arrived.values(), _Totals.of(counted_before.get(contact_id)))
        self._write_items("orders", written)
        measured = self._in_parallel(lambda cid: self._count_orders(cid, counted_before.get(cid), changes[cid]),
                                     list(changes))
        self._in_parallel(self._measure_outcomes, [cid for cid, m in zip(changes, measured, strict=True) if m])
        return IngestResult(inserted, updated, unchanged, frozenset(changes))

    def _count_orders(self, contact_id: str, seen: dict[str, Any] | None, change: _CustomerChange) -> bool:
        """Bring one customer's aggregates up to date with `change`, retrying while other writers get in first;
        True when the customer has measured events, whose outcomes the change may move."""
        for attempt in range(RETRIES):
            counted = _refs(seen)
            if counted & (change.arrived.keys() | change.left):
                # An order it already counts changed or moved away: count its orders again from the orders table.
                totals, refs = self._recount(contact_id, counted | change.arrived.keys())
            else:
                # Only new orders: adding them to the stored totals gives what a recount would, without reading.
                totals = reduce(_Totals.add, change.arrived.values(), _Totals.of(seen))
                refs = counted | change.arrived.keys()
            if self._write_totals(contact_id, seen, totals, refs):
                return bool(seen and seen.get("measured_events"))
            _pause(attempt)
            seen = self._get_item("customers", {"contact_id": contact_id}, _INGEST_FIELDS)
        raise RuntimeError(f"customer {contact_id}: gave up after {RETRIES} conflicting writes; send the batch again")

    def _recount_statuses(self, statuses: frozenset[str]) -> int:
        """A scan of the orders (this runs only when the list of excluded statuses changes), then each customer
        whose orders changed standing is counted again, as an upsert that changed those orders would."""
        changed: dict[str, _CustomerChange] = {}
        flipped = []
        for item in self._scan("orders", ()):
            excluded = item.get("status") is not None and status_key(item["status"]) in statuses
            if bool(item.get("cancelled")) != excluded:
                item = {**item, "cancelled": excluded}
                flipped.append(item)
                changed.setdefault(item["contact_id"], _CustomerChange()).arrived[item["order_ref"]] = item
        self._write_items("orders", flipped)
        self._count_changed(changed)
        return len(changed)

    def _recount_days(self, timezone_name: str) -> int:
        """A scan of the orders (this runs only when the timezone of purchase days changes, and once on tables
        whose orders were stored without a day), then each customer whose orders' days moved is counted again."""
        day_of = local_day_function(timezone_name)
        changed: dict[str, _CustomerChange] = {}
        moved = []
        for item in self._scan("orders", ()):
            day = day_of(_int(item["order_at"]))
            if _int(item.get("order_day")) != day:  # a missing day (an order stored before days were kept) too
                item = {**item, "order_day": day}
                moved.append(item)
                changed.setdefault(item["contact_id"], _CustomerChange()).arrived[item["order_ref"]] = item
        self._write_items("orders", moved)
        self._count_changed(changed)
        return len(changed)

    def _count_changed(self, changed: dict[str, _CustomerChange]) -> None:
        """Each customer's aggregates, and its events' outcomes, brought up to date with the orders of its that a
        full pass rewrote."""
        measured = self._in_parallel(lambda cid: self._count_orders(
            cid, self._get_item("customers", {"contact_id": cid}, _INGEST_FIELDS), changed[cid]), list(changed))
        self._in_parallel(self._measure_outcomes, [cid for cid, m in zip(changed, measured, strict=True) if m])

    def _recount(self, contact_id: str, refs: set[str]) -> tuple[_Totals, set[str]]:
        owned = self._orders_of(contact_id, refs)
        return reduce(_Totals.add, owned, _Totals()), {item["order_ref"] for item in owned}

    def _orders_of(self, contact_id: str, refs: set[str]) -> list[dict[str, Any]]:
        """The orders of these references that `contact_id` still owns (the orders table says who owns one)."""
        return [item for item in self._get_items("orders", [{"order_ref": r} for r in sorted(refs)])
                if item["contact_id"] == contact_id]

    def _measure_outcomes(self, contact_id: str) -> None:
        """The outcome of each measured event of the customer, from its counted orders, written where it changed.

        Measured again while the customer's orders change meanwhile: a measurement that read the orders before
        another writer changed them can land after that writer's own, so the last to finish must have read the
        last orders (the customer's version moves with every change of them).
        """
        for _ in range(RETRIES):
            customer = self._get_item("customers", {"contact_id": contact_id},
                                      ("version", "order_refs", "measured_events"))
            if customer is None or not customer.get("measured_events"):
                return
            orders = self._orders_of(contact_id, _refs(customer))
            events = self._get_items("events", [{"id": i} for i in sorted(customer["measured_events"])],
                                     _OUTCOME_FIELDS)
            moved = {event["id"]: outcome for event in events
                     if (outcome := _outcome(event, orders)) != (_int(event.get("outcome_orders", 0)),
                                                                 _int(event.get("outcome_cents", 0)))}
            for event_id, (count, cents) in moved.items():
                self._conditional(self._client.update_item, TableName=self._tables["events"],
                                  Key=_to_item({"id": event_id}),
                                  **_expression({":orders": count, ":cents": cents},
                                                UpdateExpression="SET #outcome_orders = :orders, "
                                                                 "#outcome_cents = :cents",
                                                ConditionExpression="attribute_exists(#id)"))
            if not moved:
                return
            now = self._get_item("customers", {"contact_id": contact_id}, ("version",))
            if now is None or _int(now["version"]) == _int(customer["version"]):
                return

    def _write_totals(self, contact_id: str, seen: dict[str, Any] | None, totals: _Totals, refs: set[str]) -> bool:
        """Conditional on the version read: False when someone else wrote the customer meanwhile."""
        version = 1 if seen is None else _int(seen["version"]) + 1
        fields = {**totals.fields(), "order_refs": refs or None, "version": version, "due_at": 0,
                  "shard": _shard(contact_id, CUSTOMER_SHARDS)}
        update, values = _set_or_remove(fields)
        if seen is None:
            condition = "attribute_not_exists(#contact_id)"
        else:
            condition = "#version = :seen_version"
            values[":seen_version"] = _int(seen["version"])
            if not seen.get("measured_events"):
                # An evaluation that saves the customer's first measured event meanwhile measures it with the
                # orders it finds, which may not count these yet: refused, the retry sees the event and measures.
                condition += " AND attribute_not_exists(#measured_events)"
        return self._conditional(self._client.update_item, TableName=self._tables["customers"],
                                 Key=_to_item({"contact_id": contact_id}),
                                 **_expression(values, UpdateExpression=update, ConditionExpression=condition))

    # evaluation --------------------------------------------------------------------------------------------

    def customers_to_evaluate(self, as_of: datetime, everyone: bool, batch_size: int,
                              shards: frozenset[int] | None = None) -> Iterator[list[CustomerRecord]]:
        # A store shard is a partition of the customers' indexes: shard s lives in partition s % CUSTOMER_SHARDS.
        partitions = range(CUSTOMER_SHARDS) if shards is None else sorted({s % CUSTOMER_SHARDS for s in shards})
        if everyone and shards is None:
            ids = sorted(item["contact_id"] for item in self._scan("customers", ("contact_id",)))
        elif everyone:
            everybody = self._query_partitions("customers", "by_id", partitions, "", {})
            ids = sorted(item["contact_id"] for item in everybody)
        else:
            due = self._query_partitions("customers", "due", partitions, "#due_at <= :as_of", {":as_of": to_ms(as_of)})
            ids = sorted({item["contact_id"] for item in due})
        if shards is not None:
            ids = [contact_id for contact_id in ids if shard_of(contact_id) in shards]
        for start in range(0, len(ids), batch_size):
            yield self.customers_by_id(ids[start:start + batch_size])

    def customers_by_id(self, contact_ids: Sequence[str]) -> list[CustomerRecord]:
        items = self._get_items("customers", [{"contact_id": c} for c in dict.fromkeys(contact_ids)],
                                _CUSTOMER_FIELDS)
        return sorted((_customer(item) for item in items), key=lambda record: record.contact_id)

    def save_evaluations(self, evaluations: Sequence[Evaluation]) -> SaveResult:
        """State alone is one conditional update per customer; state with a transition or events is a transaction,
        packed with other customers' up to TransactWriteItems' limit."""
        quiet = [e for e in evaluations if e.transition is None and not e.events]
        eventful = [e for e in evaluations if e.transition is not None or e.events]
        saved = sum(self._in_parallel(self._save_state, quiet))
        history, measured = self._save_with_history(eventful)
        saved += history.saved
        # orders the customer placed after a new measured event's move count at once
        self._in_parallel(self._measure_outcomes, sorted(set(measured)))
        return SaveResult(saved, history.transitions, history.events, len(evaluations) - saved)

    def _save_state(self, evaluation: Evaluation) -> bool:
        return self._conditional(self._client.update_item, **self._state_update(evaluation))

    def _state_update(self, e: Evaluation) -> dict[str, Any]:
        shard = _shard(e.contact_id, CUSTOMER_SHARDS)
        fields = {
            "segment": e.segment, "purchase_frequency": e.purchase_frequency,
            "segment_key": f"{e.segment}#{shard}", "frequency_key": f"{e.purchase_frequency}#{shard}",
            "next_check_at": to_ms(e.next_check_at), "due_at": to_ms(e.next_check_at),
            "evaluated_at": to_ms(e.evaluated_at),
        }
        # None leaves these as they are (it must not remove them): only a changed segment moves segment_since,
        # only an evaluation that drew new groups writes the holdouts
        if e.segment_since is not None:
            fields["segment_since"] = to_ms(e.segment_since)
        if e.holdouts is not None:
            fields["holdouts"] = dict(e.holdouts)
        update, values = _set_or_remove(fields)
        measured = {event.id for event in e.events if event.outcome_until is not None}
        if measured:  # a set only grows: no read needed, and one the event was put with already is left as it is
            update += " ADD #measured_events :measured"
            values[":measured"] = measured
        values[":seen_version"] = e.seen_version
        if e.seen_segment is None:
            condition = "#version = :seen_version AND attribute_not_exists(#segment)"
        else:
            condition = "#version = :seen_version AND #segment = :seen_segment"
            values[":seen_segment"] = e.seen_segment
        return {"TableName": self._tables["customers"], "Key": _to_item({"contact_id": e.contact_id}),
                **_expression(values, UpdateExpression=update, ConditionExpression=condition)}

    def _save_with_history(self, evaluations: Sequence[Evaluation]) -> tuple[SaveResult, list[str]]:
        """The saves, and the customers that gained measured events."""
        if not evaluations:
            return SaveResult(0, 0, 0, 0), []
        known = self._known_history(evaluations)
        plans = [self._history_plan(e, known) for e in evaluations]
        totals, measured = SaveResult(0, 0, 0, 0), []
        for pack in _packs(plans):
            if self._transact([item for plan in pack for item in plan.items]) is None:
                written = pack
            else:  # someone got in first somewhere in the pack: settle each customer on its own
                written = [p for p in (self._save_alone(plan.evaluation) for plan in pack) if p is not None]
            totals = reduce(_add_results, [self._finish(plan) for plan in written], totals)
            measured += [plan.evaluation.contact_id for plan in written if plan.measured]
        return totals, measured

    def _save_alone(self, evaluation: Evaluation) -> _HistoryPlan | None:
        """The plan written, or None when the customer changed since it was read (it is evaluated again)."""
        for attempt in range(RETRIES):
            plan = self._history_plan(evaluation, self._known_history([evaluation]))
            reasons = self._transact(plan.items)
            if reasons is None:
                return plan
            if reasons[0] == "ConditionalCheckFailed":
                return None
            _pause(attempt)  # a transition or event appeared meanwhile, or a concurrent transaction: look again
        raise RuntimeError(f"customer {evaluation.contact_id}: gave up saving after {RETRIES} conflicting writes")

    def _finish(self, plan: _HistoryPlan) -> SaveResult:
        """After the transaction: events beyond one transaction's limit, each written once (rare: > 98 events)."""
        events = plan.events
        for item in plan.overflow:
            events += self._conditional(self._client.put_item, TableName=self._tables["events"], Item=_to_item(item),
                                        **_expression(ConditionExpression="attribute_not_exists(#id)"))
        return SaveResult(1, plan.transitions, events, 0)

    def _known_history(self, evaluations: Sequence[Evaluation]) -> set[str]:
        """Ids of the transitions and events of these evaluations that are stored already (they are not re-put)."""
        transitions = [{"contact_id": e.contact_id, "id": e.transition.id} for e in evaluations if e.transition]
        events = [{"id": ev.id} for e in evaluations for ev in e.events]
        found = self._get_items("transitions", transitions, ("id",)) + self._get_items("events", events, ("id",))
        return {item["id"] for item in found}

    def _history_plan(self, e: Evaluation, known: set[str]) -> _HistoryPlan:
        items = [{"Update": self._state_update(e)}]
        transitions = 0
        if e.transition is not None and e.transition.id not in known:
            items.append(self._put_new("transitions", _transition_item(e.transition), "id"))
            transitions = 1
        first_of_each: dict[str, NewEvent] = {}
        for event in e.events:
            if event.id not in known:
                first_of_each.setdefault(event.id, event)
        new_events = [self._event_item(event, e.evaluated_at) for event in first_of_each.values()]
        room = TRANSACTION_ITEMS - len(items)
        items += [self._put_new("events", item, "id") for item in new_events[:room]]
        measured = any(event.outcome_until is not None for event in first_of_each.values())
        return _HistoryPlan(e, items, transitions, len(new_events[:room]), new_events[room:], measured)

    def _put_new(self, noun: str, item: dict[str, Any], key: str) -> dict[str, Any]:
        return {"Put": {"TableName": self._tables[noun], "Item": _to_item(item),
                        **_expression(ConditionExpression=f"attribute_not_exists(#{key})")}}

    def _event_item(self, event: NewEvent, created_at: datetime) -> dict[str, Any]:
        """A new event: pending and due at once, or held out, which leaves it out of the delivery indexes (no
        claimable, never retrying) for good. A measured one starts with no outcome, in its campaign's index."""
        seq, shard, at = self._sequence.next(), _shard(event.id, EVENT_SHARDS), to_ms(created_at)
        status = HELD_OUT if event.held_out else PENDING
        measured = event.outcome_until is not None
        return {"id": event.id, "seq": seq, "shard": shard, "contact_id": event.contact_id,
                "campaign": event.campaign, "webhook": event.webhook, "type": event.type,
                "occurred_at": to_ms(event.occurred_at), "created_at": at, "body": event.body, "status": status,
                "attempts": 0, "next_attempt_at": None if event.held_out else at,
                "claimable": None if event.held_out else _claim_key(at, seq), "status_shard": f"{status}#{shard}",
                "unordered": None if event.ordered else True, "outcome_until": to_ms(event.outcome_until),
                "outcome_orders": 0 if measured else None, "outcome_cents": 0 if measured else None,
                "campaign_shard": f"{event.campaign}#{shard}" if measured else None}

    def get_meta(self, key: str) -> str | None:
        item = self._get_item("meta", {"key": key})
        return None if item is None else item.get("value")

    def set_meta(self, key: str, value: str) -> None:
        self._client.put_item(TableName=self._tables["meta"], Item=_to_item({"key": key, "value": value}))

    def update_meta(self, key: str, change: Callable[[str | None], str]) -> str:
        while True:  # optimistic: the write goes through only if the value is still the one `change` was given
            old = self.get_meta(key)
            value = change(old)
            condition = ("attribute_not_exists(#key)", {}) if old is None else ("#value = :old", {":old": old})
            if self._conditional(self._client.put_item, TableName=self._tables["meta"],
                                 Item=_to_item({"key": key, "value": value}),
                                 **_expression(condition[1], ConditionExpression=condition[0])):
                return value

    # reads -------------------------------------------------------------------------------------------------

    def get_customer(self, contact_id: str) -> CustomerRecord | None:
        item = self._get_item("customers", {"contact_id": contact_id}, _CUSTOMER_FIELDS)
        return None if item is None else _customer(item)

    def list_customers(self, segment: str | None, purchase_frequency: str | None, after: str | None,
                       limit: int) -> list[CustomerRecord]:
        return self._page_by_id(segment, purchase_frequency, after, limit, descending=False)

    def list_customers_sorted(self, segment: str | None, purchase_frequency: str | None, order: CustomerOrder,
                              after: tuple[int, str] | None, limit: int) -> list[CustomerRecord]:
        if order.key == "contact_id":
            return self._page_by_id(segment, purchase_frequency, None if after is None else after[1], limit,
                                    order.descending)
        return self._page_by_scan(segment, purchase_frequency, order, after, limit)

    def _page_by_scan(self, segment: str | None, purchase_frequency: str | None, order: CustomerOrder,
                      after: tuple[int, str] | None, limit: int) -> list[CustomerRecord]:
        """No index keeps customers by spend or last order (each would be rewritten by every order that arrives, on
        top of the customer's own write), so such a page reads the whole table: a parallel Scan, strongly
        consistent, projected to the record's fields, filtered by segment/frequency, keeping only the best `limit`
        rows in memory. O(customers) read units per page: see docs/dynamodb.md for what that costs."""
        conditions, values = [], {}
        for name, value in (("segment", segment), ("purchase_frequency", purchase_frequency)):
            if value is not None:
                conditions.append(f"#{name} = :{name}")
                values[f":{name}"] = value
        filters = _expression(values, FilterExpression=" AND ".join(conditions)) if conditions else {}
        choose = heapq.nlargest if order.descending else heapq.nsmallest

        def best(items: Iterator[dict[str, Any]]) -> list[CustomerRecord]:
            records = (_customer(item) for item in items)
            if after is not None:
                records = (r for r in records if (order.position(r) < after if order.descending
                                                  else order.position(r) > after))
            return choose(limit, records, key=order.position)

        # each segment keeps its best `limit` as it reads: memory stays O(limit), not O(customers)
        found = [r for rows in self._parallel_scan("customers", _CUSTOMER_FIELDS, filters, best) for r in rows]
        return choose(limit, found, key=order.position)

    def count_customers_where(self, segment: str | None, purchase_frequency: str | None) -> int | None:
        """Counted on a keys-only index (about 50 bytes a customer, not the whole item); with both filters there is
        no index to count on, so None."""
        if segment is not None and purchase_frequency is not None:
            return None
        index, partitions = _customer_index(segment, purchase_frequency)
        design = next(i for d in TABLES if d.noun == "customers" for i in d.indexes if i.name == index)
        key = design.hash_key[0]
        return sum(self._in_parallel(lambda partition: self._count(
            TableName=self._tables["customers"], IndexName=index,
            **_expression({":p": partition}, KeyConditionExpression=f"#{key} = :p")), partitions))

    def _page_by_id(self, segment: str | None, purchase_frequency: str | None, after: str | None, limit: int,
                    descending: bool) -> list[CustomerRecord]:
        """Pages of a sharded index in contact_id order; rows are read from the table itself (consistent), and a
        row whose stored segment moved on since the index saw it is left out, the page refilled."""
        index, partitions = _customer_index(segment, purchase_frequency)
        found: list[CustomerRecord] = []
        beyond = "<" if descending else ">"
        while len(found) < limit:
            want = limit - len(found)
            condition, values = (f"#contact_id {beyond} :after", {":after": after}) if after is not None else ("", {})
            keys = self._query_partitions("customers", index, partitions, condition, values, want,
                                          descending=descending)
            page = [r for r in self.customers_by_id([k["contact_id"] for k in keys])
                    if (segment is None or r.segment == segment)
                    and (purchase_frequency is None or r.purchase_frequency == purchase_frequency)]
            found += page[::-1] if descending else page
            if len(keys) < want:
                break
            after = keys[-1]["contact_id"]
        return found[:limit]

    def iter_customers(self, batch_size: int = 1000) -> Iterator[list[CustomerRecord]]:
        batch: list[CustomerRecord] = []
        for item in self._scan("customers", _CUSTOMER_FIELDS):
            batch.append(_customer(item))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def purchase_rows(self, until: datetime | None = None, batch_size: int = 5000) -> Iterator[list[PurchaseRow]]:
        """A parallel scan either way, rows in contact_id order: of the customers (their stored aggregates), or with
        `until` of the orders (each customer's counted orders no later than it, per day) and then the stored
        segments of the customers found. O(customers), or O(orders); held in memory to be sorted."""
        rows = self._purchases_stored() if until is None else self._purchases_until(to_ms(until))
        rows.sort(key=lambda row: row.contact_id)
        for start in range(0, len(rows), batch_size):
            yield rows[start:start + batch_size]

    def _purchases_stored(self) -> list[PurchaseRow]:
        day_of = local_day_function(self.order_days_timezone())
        fields = ("contact_id", "segment", "first_order_at", "last_order_at", "purchase_days", "total_cents",
                  "first_day_cents")
        counted = _expression({":none": 0}, FilterExpression="#order_count > :none")

        def rows(items: Iterator[dict[str, Any]]) -> list[PurchaseRow]:
            return [PurchaseRow(item["contact_id"], item.get("segment"), day_of(_int(item["first_order_at"])),
                                day_of(_int(item["last_order_at"])), _int(item.get("purchase_days", 0)),
                                _int(item["total_cents"]), _int(item.get("first_day_cents", 0))) for item in items]

        return [row for part in self._parallel_scan("customers", fields, counted, rows) for row in part]

    def _purchases_until(self, until_ms: int) -> list[PurchaseRow]:
        day_of = local_day_function(self.order_days_timezone())  # for an order stored without its day

        def per_day(items: Iterator[dict[str, Any]]) -> dict[str, dict[int, int]]:
            cents: dict[str, dict[int, int]] = {}
            for item in items:
                at = _int(item["order_at"])
                if item.get("cancelled") or at > until_ms:
                    continue
                day = _int(item.get("order_day"))
                day = day_of(at) if day is None else day
                days = cents.setdefault(item["contact_id"], {})
                days[day] = days.get(day, 0) + _int(item["total_cents"])
            return cents

        merged: dict[str, dict[int, int]] = {}
        for part in self._parallel_scan("orders", ("contact_id", "order_at", "total_cents", "cancelled", "order_day"),
                                        {}, per_day):
            for contact_id, days in part.items():  # a customer's orders are spread over every segment
                into = merged.setdefault(contact_id, {})
                for day, cents in days.items():
                    into[day] = into.get(day, 0) + cents
        ids = sorted(merged)
        keys = [[{"contact_id": c} for c in ids[start:start + BATCH_GET_KEYS]]
                for start in range(0, len(ids), BATCH_GET_KEYS)]
        segments = {item["contact_id"]: item.get("segment") for part in self._in_parallel(
            lambda chunk: self._get_items("customers", chunk, ("contact_id", "segment")), keys) for item in part}
        rows = []
        for contact_id, days in merged.items():
            first = min(days)
            rows.append(PurchaseRow(contact_id, segments.get(contact_id), first, max(days), len(days),
                                    sum(days.values()), days[first]))
        return rows

    def segment_summary(self) -> list[SegmentSummary]:
        """A scan: O(customers). Fine for /api/segments and a scrape a minute at 10^5 customers (docs/dynamodb.md)."""
        totals: dict[str, list[int]] = {}
        for item in self._scan("customers", ("segment", "total_cents")):
            if "segment" in item:
                row = totals.setdefault(item["segment"], [0, 0])
                row[0] += 1
                row[1] += _int(item.get("total_cents", 0))
        return [SegmentSummary(name, customers, cents) for name, (customers, cents) in sorted(totals.items())]

    def count_customers(self) -> int:
        return self._count(TableName=self._tables["customers"], ConsistentRead=True)

    def transitions_per_day(self, since: datetime) -> list[tuple[str, str, int]]:
        """From the sharded `by_time` index: reads the transitions since `since`, not all of them."""
        counts: dict[tuple[str, str], int] = {}
        for item in self._query_partitions("transitions", "by_time", range(EVENT_SHARDS), "#occurred_at >= :since",
                                           {":since": to_ms(since)}):
            day = from_ms(_int(item["occurred_at"])).strftime("%Y-%m-%d")
            counts[(day, item["to_segment"])] = counts.get((day, item["to_segment"]), 0) + 1
        return [(day, segment, count) for (day, segment), count in sorted(counts.items())]

    def search_customers(self, text: str, limit: int) -> list[CustomerRecord]:
        """A scan (DynamoDB has no case-blind 'contains'): O(customers) per search, as SQLite's is for non-ASCII
        text. ASCII text ignores case of ASCII letters only and other text compares casefolded, as SQLite's."""
        matches = search_matcher(text)
        found = sorted(item["contact_id"] for item in self._scan("customers", ("contact_id", "email", "name"))
                       if matches(item["contact_id"], item.get("email"), item.get("name")))
        return self.customers_by_id(found[:limit])

    def transitions_for(self, contact_id: str, limit: int = 100) -> list[TransitionRecord]:
        # A customer has a handful of transitions: read them all, order as the SQLite store does.
        items = self._query(TableName=self._tables["transitions"], ConsistentRead=True,
                            **_expression({":c": contact_id}, KeyConditionExpression="#contact_id = :c"))
        records = sorted(map(_transition, items), key=lambda t: (t.occurred_at, t.detected_at))
        return records[:limit]

    # outbox ------------------------------------------------------------------------------------------------

    def claim_due_events(self, now: datetime, limit: int, holder: str, claim_seconds: float,
                         shards: frozenset[int] | None = None) -> list[EventRecord]:
        """Candidates from the `due` index, oldest first, each taken by a conditional update one claimer wins.

        A candidate waits while an earlier event of its customer failed and awaits its retry: that retry can come
        due after the later event, and the customer must hear them in order all the same.
        """
        now_ms = to_ms(now)
        until = now_ms + int(claim_seconds * 1000)
        claimed: list[dict[str, Any]] = []
        lowest = _claim_key(0, 0)
        for _ in range(CLAIM_PAGES):
            want = limit - len(claimed)
            if want <= 0:
                break
            page = self._query_partitions("events", "due", range(EVENT_SHARDS), "#claimable BETWEEN :lowest AND :bound",
                                          {":lowest": lowest, ":bound": _claim_key(now_ms + 1, 0)}, want)
            mine = page if shards is None else [c for c in page if shard_of(c["contact_id"]) in shards]
            eligible = self._not_overtaking(mine)[:want]
            claimed += [item for item in self._in_parallel(lambda c: self._claim(c, now_ms, until, holder), eligible)
                        if item is not None]
            if len(page) < want:
                break
            last = page[-1]["claimable"]
            lowest = _claim_key(int(last.split("#")[0]), _claim_seq(last) + 1)  # the next key after the last seen
        claimed.sort(key=lambda item: (_int(item["next_attempt_at"]), _int(item["seq"])))
        return [_event(item) for item in claimed]

    def _not_overtaking(self, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The candidates with no earlier event of their customer awaiting a retry (read from the index of
        retrying events, which trails writes by a moment: a just-delivered retry may hold a later event back
        until the next claim, never the other way round)."""
        contacts = sorted({c["contact_id"] for c in candidates})
        oldest = dict(zip(contacts, self._in_parallel(self._oldest_retrying, contacts), strict=True))
        held = [c for c in candidates
                if oldest[c["contact_id"]] is not None and oldest[c["contact_id"]] < _claim_seq(c["claimable"])]
        # Held back only if ordered: the index does not say, so ask the table, for the few held back.
        unordered = {item["id"] for item in self._get_items("events", [{"id": c["id"]} for c in held],
                                                             ("id", "unordered")) if item.get("unordered")}
        blocked = {c["id"] for c in held} - unordered
        return [c for c in candidates if c["id"] not in blocked]

    def _oldest_retrying(self, contact_id: str) -> int | None:
        answer = self._client.query(TableName=self._tables["events"], IndexName="retrying_by_contact", Limit=1,
                                    **_expression({":c": contact_id},
                                                  KeyConditionExpression="#retrying_contact = :c"))
        items = answer.get("Items", [])
        return _int(_from_item(items[0])["seq"]) if items else None

    def _claim(self, candidate: dict[str, Any], now_ms: int, until: int, holder: str) -> dict[str, Any] | None:
        seq = _claim_seq(candidate["claimable"])
        try:
            answer = self._client.update_item(
                TableName=self._tables["events"], Key=_to_item({"id": candidate["id"]}), ReturnValues="ALL_NEW",
                **_expression({":pending": "pending", ":now": now_ms, ":holder": holder, ":until": until,
                               ":claimable": _claim_key(until, seq)},
                              UpdateExpression="SET #claimed_by = :holder, #claimed_until = :until, "
                                               "#claimable = :claimable",
                              ConditionExpression="#status = :pending AND #next_attempt_at <= :now AND "
                                                  "(attribute_not_exists(#claimed_until) OR #claimed_until <= :now)"))
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return _from_item(answer["Attributes"])

    def record_delivered(self, event_ids: Sequence[str], attempt_at: datetime, status: int, duration_ms: int) -> None:
        at = to_ms(attempt_at)
        self._write_items("attempts", [self._attempt_item(i, at, status, None, duration_ms) for i in event_ids])
        self._in_parallel(lambda i: self._update_event(i, {
            "status": "delivered", "status_shard": f"delivered#{_shard(i, EVENT_SHARDS)}", "delivered_at": at,
            "last_status": status,
            "last_error": None, "next_attempt_at": None, "claimed_by": None, "claimed_until": None, "claimable": None,
            "retrying_contact": None,
        }), list(event_ids))
        self._count_attempts(_attempt_outcome(status), len(event_ids))

    def record_failed(self, event_ids: Sequence[str], attempt_at: datetime, status: int | None, error: str,
                      duration_ms: int, next_attempt_at: datetime | None) -> None:
        at, retry_at = to_ms(attempt_at), to_ms(next_attempt_at)
        new_status = "pending" if retry_at is not None else "dead"
        known = {item["id"]: item for item in self._get_items(
            "events", [{"id": i} for i in event_ids], ("id", "seq", "contact_id", "unordered"))}
        self._write_items("attempts", [self._attempt_item(i, at, status, error, duration_ms) for i in event_ids])
        self._in_parallel(lambda i: self._update_event(i, {
            "status": new_status, "status_shard": f"{new_status}#{_shard(i, EVENT_SHARDS)}", "last_status": status,
            "last_error": error, "next_attempt_at": retry_at, "claimed_by": None, "claimed_until": None,
            "claimable": None if retry_at is None or i not in known else _claim_key(retry_at, _int(known[i]["seq"])),
            # only an ordered event holds the customer's later events back while it waits for its retry
            "retrying_contact": known[i]["contact_id"] if retry_at is not None and i in known
            and not known[i].get("unordered") else None,
        }), list(event_ids))
        self._count_attempts(_attempt_outcome(status), len(event_ids))

    def _count_attempts(self, outcome: str, count: int) -> None:
        # A counter beside the attempts, so that /metrics does not read every attempt ever made; a process that
        # dies between the two writes leaves the counter short by its last attempts.
        self._client.update_item(TableName=self._tables["meta"], Key=_to_item({"key": ATTEMPT_COUNTER_KEY}),
                                 **_expression({":n": count}, UpdateExpression=f"ADD #{outcome} :n"))

    def _update_event(self, event_id: str, fields: dict[str, Any]) -> None:
        update, values = _set_or_remove(fields)
        values[":one"] = 1
        self._conditional(self._client.update_item, TableName=self._tables["events"], Key=_to_item({"id": event_id}),
                          **_expression(values, UpdateExpression=update + " ADD #attempts :one",
                                        ConditionExpression="attribute_exists(#id)"))

    def _attempt_item(self, event_id: str, at: int, status: int | None, error: str | None,
                      duration_ms: int) -> dict[str, Any]:
        return {"event_id": event_id, "at": _claim_key(at, self._sequence.next()), "attempted_at": at,
                "status": status, "error": error, "duration_ms": duration_ms}

    def list_events(self, status: str | None, limit: int, after: str | None = None) -> list[EventRecord]:
        condition, values = "", {}
        if after is not None:
            cursor = self._get_item("events", {"id": after}, ("seq",))
            if cursor is None:
                return []
            condition, values = "#seq > :after", {":after": _int(cursor["seq"])}
        statuses = [status] if status is not None else list(EVENT_STATUSES)
        partitions = [f"{s}#{shard}" for s in statuses for shard in range(EVENT_SHARDS)]
        keys = self._query_partitions("events", "by_status", partitions, condition, values, limit)
        by_id = {item["id"]: item for item in self._get_items("events", [{"id": k["id"]} for k in keys])}
        return [_event(by_id[k["id"]]) for k in keys if k["id"] in by_id]

    def get_event(self, event_id: str) -> EventRecord | None:
        item = self._get_item("events", {"id": event_id})
        return None if item is None else _event(item)

    def attempts_for(self, event_id: str) -> list[Attempt]:
        items = self._query(TableName=self._tables["attempts"], ConsistentRead=True,
                            **_expression({":e": event_id}, KeyConditionExpression="#event_id = :e"))
        return [Attempt(i["event_id"], from_ms(_int(i["attempted_at"])), _int(i.get("status")), i.get("error"),
                        _int(i["duration_ms"])) for i in items]

    def record_superseded(self, superseded: Sequence[Superseded], at: datetime) -> None:
        def supersede(item: Superseded) -> None:
            update, values = _set_or_remove({
                "status": SUPERSEDED, "status_shard": f"{SUPERSEDED}#{_shard(item.event_id, EVENT_SHARDS)}",
                "last_error": item.reason, "superseded_by": item.transition_id, "next_attempt_at": None,
                "claimed_by": None, "claimed_until": None, "claimable": None, "retrying_contact": None,
            })
            self._conditional(self._client.update_item, TableName=self._tables["events"],
                              Key=_to_item({"id": item.event_id}),
                              **_expression({**values, ":pending": "pending"}, UpdateExpression=update,
                                            ConditionExpression="#status = :pending"))

        self._in_parallel(supersede, list(superseded))

    def replay_event(self, event_id: str, now: datetime) -> bool:
        item = self._get_item("events", {"id": event_id}, ("seq", "status"))
        if item is None:
            return False
        at = to_ms(now)
        # The retry schedule starts over (attempts 0, so it holds no later event back); the history stays.
        update, values = _set_or_remove({
            "status": "pending", "status_shard": f"pending#{_shard(event_id, EVENT_SHARDS)}", "next_attempt_at": at,
            "claimable": _claim_key(at, _int(item["seq"])), "attempts": 0, "claimed_by": None, "claimed_until": None,
            "retrying_contact": None, "recheck": False if item.get("status") == SUPERSEDED else None,
        })
        # never a held-out event: its customer is in the control group (the condition holds against a race too)
        return self._conditional(self._client.update_item, TableName=self._tables["events"],
                                 Key=_to_item({"id": event_id}),
                                 **_expression({**values, ":held_out": HELD_OUT}, UpdateExpression=update,
                                               ConditionExpression="attribute_exists(#id) AND "
                                                                   "#status <> :held_out"))

    def renew_claims(self, event_ids: Sequence[str], holder: str, until: datetime) -> int:
        at = to_ms(until)
        seqs = {item["id"]: _int(item["seq"]) for item in self._get_items("events", [{"id": i} for i in event_ids],
                                                                          ("id", "seq"))}

        def renew(event_id: str) -> bool:
            return self._conditional(
                self._client.update_item, TableName=self._tables["events"], Key=_to_item({"id": event_id}),
                **_expression({":until": at, ":claimable": _claim_key(at, seqs[event_id]), ":holder": holder,
                               ":pending": "pending"},
                              UpdateExpression="SET #claimed_until = :until, #claimable = :claimable",
                              ConditionExpression="#claimed_by = :holder AND #status = :pending"))

        return sum(self._in_parallel(renew, [i for i in event_ids if i in seqs]))

    def release_claims(self, event_ids: Sequence[str], now: datetime) -> None:
        """Unsent events back to the queue, due now, attempts untouched (unlike replay)."""
        at = to_ms(now)
        for event_id in event_ids:
            item = self._get_item("events", {"id": event_id}, ("seq",))
            if item is None:
                continue
            update, values = _set_or_remove({"next_attempt_at": at, "claimable": _claim_key(at, _int(item["seq"])),
                                             "claimed_by": None, "claimed_until": None})
            self._conditional(self._client.update_item, TableName=self._tables["events"],
                              Key=_to_item({"id": event_id}),
                              **_expression({**values, ":pending": "pending"}, UpdateExpression=update,
                                            ConditionExpression="#status = :pending"))

    def replay_dead_events(self, now: datetime, campaign: str | None = None, limit: int = BULK_REPLAY_LIMIT) -> int:
        """Dead events oldest first from the status index, read from the table (the index may trail; the campaign
        is only there), each replayed by an update conditional on it still being dead: one replay wins each event.
        Reads O(dead events up to the last one replayed): dead events of other campaigns are read and passed over."""
        at, replayed, after = to_ms(now), 0, None
        partitions = [f"{DEAD}#{shard}" for shard in range(EVENT_SHARDS)]
        while replayed < limit:
            want = limit - replayed
            condition, values = ("#seq > :after", {":after": after}) if after is not None else ("", {})
            keys = self._query_partitions("events", "by_status", partitions, condition, values, want)
            items = self._get_items("events", [{"id": k["id"]} for k in keys], ("id", "seq", "status", "campaign"))
            chosen = sorted((i for i in items if i.get("status") == DEAD
                             and (campaign is None or i.get("campaign") == campaign)), key=lambda i: _int(i["seq"]))
            replayed += sum(self._in_parallel(lambda item: self._replay_dead(item, at), chosen[:want]))
            if len(keys) < want:
                break
            after = _int(keys[-1]["seq"])
        return replayed

    def _replay_dead(self, item: dict[str, Any], at: int) -> bool:
        event_id = item["id"]
        update, values = _set_or_remove({
            "status": "pending", "status_shard": f"pending#{_shard(event_id, EVENT_SHARDS)}", "next_attempt_at": at,
            "claimable": _claim_key(at, _int(item["seq"])), "attempts": 0, "claimed_by": None, "claimed_until": None,
            "retrying_contact": None, "recheck": None,
        })
        return self._conditional(self._client.update_item, TableName=self._tables["events"],
                                 Key=_to_item({"id": event_id}),
                                 **_expression({**values, ":dead": DEAD}, UpdateExpression=update,
                                               ConditionExpression="#status = :dead"))

    def count_events(self, status: str, campaign: str | None = None) -> int:
        """Keys counted on the status index; for one campaign, the events of that status read from the table too
        (the index does not hold the campaign): O(events of that status)."""
        partitions = [f"{status}#{shard}" for shard in range(EVENT_SHARDS)]
        if campaign is None:
            return sum(self._count(TableName=self._tables["events"], IndexName="by_status",
                                   **_expression({":p": p}, KeyConditionExpression="#status_shard = :p"))
                       for p in partitions)
        keys = self._query_partitions("events", "by_status", partitions, "", {})
        items = self._get_items("events", [{"id": k["id"]} for k in keys], ("id", "status", "campaign"))
        return sum(item.get("status") == status and item.get("campaign") == campaign for item in items)

    def events_for(self, contact_id: str, limit: int = 100) -> list[EventRecord]:
        keys = list(islice(self._query(
            TableName=self._tables["events"], IndexName="by_contact", ScanIndexForward=False, Limit=limit,
            **_expression({":c": contact_id}, KeyConditionExpression="#contact_id = :c")), limit))
        items = sorted(self._get_items("events", [{"id": k["id"]} for k in keys]), key=lambda item: _int(item["seq"]))
        return [_event(item) for item in items if item["contact_id"] == contact_id]

    def campaign_outcomes(self, campaign: str, now: datetime) -> list[OutcomeCell]:
        """From the sharded `by_campaign` index, which holds the measured events only and projects what is summed
        here: O(measured events of the campaign), a few dozen bytes each. Summed as the SQLite store's GROUP BY."""
        closed_by = to_ms(now)

        def cells(shard: int) -> dict[tuple[str, bool, bool], list[int]]:
            sums: dict[tuple[str, bool, bool], list[int]] = {}
            for item in self._query(TableName=self._tables["events"], IndexName="by_campaign", **_expression(
                    {":p": f"{campaign}#{shard}"}, KeyConditionExpression="#campaign_shard = :p",
                    ProjectionExpression=_projection(("occurred_at", "status", "outcome_until", "outcome_orders",
                                                      "outcome_cents")))):
                if "outcome_until" not in item:
                    continue
                month = from_ms(_int(item["occurred_at"])).strftime("%Y-%m")
                key = (month, item.get("status") == HELD_OUT, _int(item["outcome_until"]) <= closed_by)
                orders, cents = _int(item.get("outcome_orders", 0)), _int(item.get("outcome_cents", 0))
                row = sums.setdefault(key, [0] * 5)  # events, converted, orders, cents, cents squared
                for i, value in enumerate((1, int(orders > 0), orders, cents, cents * cents)):
                    row[i] += value
            return sums

        merged: dict[tuple[str, bool, bool], list[int]] = {}
        for part in self._in_parallel(cells, list(range(EVENT_SHARDS))):
            for key, sums in part.items():
                merged[key] = [a + b for a, b in zip(merged.get(key, [0] * 5), sums, strict=True)]
        return [OutcomeCell(month, held_out, closed, *sums)
                for (month, held_out, closed), sums in sorted(merged.items())]

    def segment_entries(self, segment: str, after: datetime, until: datetime) -> list[tuple[str, datetime]]:
        """From the sharded `by_time` index: the transitions of the span, not all of them."""
        first: dict[str, int] = {}
        for item in self._query_partitions("transitions", "by_time", range(EVENT_SHARDS),
                                           "#occurred_at BETWEEN :after AND :until",
                                           {":after": to_ms(after) + 1, ":until": to_ms(until)}):
            if item.get("to_segment") == segment:
                at = _int(item["occurred_at"])
                first[item["contact_id"]] = min(at, first.get(item["contact_id"], at))
        return [(contact_id, from_ms(first[contact_id])) for contact_id in sorted(first)]

    def orders_in_windows(self, windows: Sequence[tuple[str, datetime, datetime]]) -> list[tuple[int, int]]:
        """The orders of each customer of the windows, read once per customer (its order_refs, then the orders)."""
        contacts = sorted({contact_id for contact_id, _, _ in windows})

        def orders_of(contact_id: str) -> list[dict[str, Any]]:
            customer = self._get_item("customers", {"contact_id": contact_id}, ("order_refs",))
            return [] if customer is None else self._orders_of(contact_id, _refs(customer))

        owned = dict(zip(contacts, self._in_parallel(orders_of, contacts), strict=True))
        return [_outcome({"occurred_at": to_ms(start), "outcome_until": to_ms(end)}, owned[contact_id])
                for contact_id, start, end in windows]

    def spend_between(self, after: datetime, until: datetime) -> list[tuple[str, int, int]]:
        """A parallel scan of the orders (a few attributes each): O(orders), as the model's fit reads them."""
        after_ms, until_ms = to_ms(after), to_ms(until)

        Seen = tuple[int, list[tuple[int, int]]]  # the first counted order's time, the orders of the span

        def per_customer(items: Iterator[dict[str, Any]]) -> dict[str, Seen]:
            seen: dict[str, Seen] = {}
            for item in items:
                at = _int(item["order_at"])
                if item.get("cancelled") or at > until_ms:
                    continue
                first, inside = seen.get(item["contact_id"], (at, []))
                if at > after_ms:
                    inside.append((at, _int(item["total_cents"])))
                seen[item["contact_id"]] = (min(first, at), inside)
            return seen

        merged: dict[str, Seen] = {}
        for part in self._parallel_scan("orders", ("contact_id", "order_at", "total_cents", "cancelled"), {},
                                        per_customer):
            for contact_id, (first, inside) in part.items():  # a customer's orders are spread over every segment
                known_first, known = merged.get(contact_id, (first, []))
                merged[contact_id] = (min(first, known_first), known + inside)
        rows = []
        for contact_id in sorted(merged):
            first, inside = merged[contact_id]
            cents = [c for at, c in inside if at > first]
            rows.append((contact_id, len(cents), sum(cents)))
        return rows

    def event_counts(self, now: datetime) -> dict[str, float]:
        """Counts from the status index (keys only, so cheap per event; still O(events) per call)."""
        pending = [item for shard in range(EVENT_SHARDS) for item in self._query(
            TableName=self._tables["events"], IndexName="by_status",
            **_expression({":p": f"pending#{shard}"}, KeyConditionExpression="#status_shard = :p",
                          ProjectionExpression="#created_at"))]
        counts: dict[str, float] = {"pending": len(pending)}
        for status in EVENT_STATUSES[1:]:
            counts[status] = sum(self._count(
                TableName=self._tables["events"], IndexName="by_status",
                **_expression({":p": f"{status}#{shard}"}, KeyConditionExpression="#status_shard = :p"))
                for shard in range(EVENT_SHARDS))
        oldest = min((_int(item["created_at"]) for item in pending), default=None)
        counts["oldest_pending_age_seconds"] = 0.0 if oldest is None else max(0.0, (to_ms(now) - oldest) / 1000)
        return counts

    def transition_count(self) -> int:
        """Counted on the `by_time` index: keys and a segment name per transition, not whole items."""
        return sum(self._count(TableName=self._tables["transitions"], IndexName="by_time",
                               **_expression({":s": shard}, KeyConditionExpression="#shard = :s"))
                   for shard in range(EVENT_SHARDS))

    def attempt_counts(self) -> dict[str, int]:
        counter = self._get_item("meta", {"key": ATTEMPT_COUNTER_KEY}) or {}
        return {outcome: _int(counter.get(outcome, 0)) for outcome in ATTEMPT_OUTCOMES}

    # leases ------------------------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, now: datetime, ttl_seconds: float) -> bool:
        now_ms = to_ms(now)
        return self._conditional(
            self._client.put_item, TableName=self._tables["leases"],
            Item=_to_item({"name": name, "holder": holder, "expires_at": now_ms + int(ttl_seconds * 1000)}),
            **_expression({":holder": holder, ":now": now_ms},
                          ConditionExpression="attribute_not_exists(#name) OR #holder = :holder OR "
                                              "#expires_at <= :now"))

    def release_lease(self, name: str, holder: str) -> None:
        self._conditional(self._client.delete_item, TableName=self._tables["leases"], Key=_to_item({"name": name}),
                          **_expression({":holder": holder}, ConditionExpression="#holder = :holder"))

    def leases(self, prefix: str, now: datetime) -> dict[str, str]:
        # the leases table holds a few dozen items (one per shard and kind of work, one per live process)
        now_ms = to_ms(now)
        return {item["name"]: item["holder"] for item in self._scan("leases", ("name", "holder", "expires_at"))
                if item["name"].startswith(prefix) and _int(item["expires_at"]) > now_ms}

    # requests ----------------------------------------------------------------------------------------------

    def _get_item(self, noun: str, key: dict[str, Any], fields: Sequence[str] = ()) -> dict[str, Any] | None:
        request: dict[str, Any] = {"TableName": self._tables[noun], "Key": _to_item(key), "ConsistentRead": True}
        if fields:
            request.update(_expression(ProjectionExpression=_projection(fields)))
        item = self._client.get_item(**request).get("Item")
        return None if item is None else _from_item(item)

    def _get_items(self, noun: str, keys: Sequence[dict[str, Any]], fields: Sequence[str] = ()) -> list[dict[str, Any]]:
        """BatchGetItem in chunks of 100, strongly consistent, retrying unprocessed keys with backoff."""
        table = self._tables[noun]
        found: list[dict[str, Any]] = []
        unique = list({tuple(sorted(k.items())): k for k in keys}.values())
        for start in range(0, len(unique), BATCH_GET_KEYS):
            request: dict[str, Any] = {"Keys": [_to_item(k) for k in unique[start:start + BATCH_GET_KEYS]],
                                       "ConsistentRead": True}
            if fields:
                request.update(_expression(ProjectionExpression=_projection(fields)))
            pending = {table: request}
            for attempt in range(RETRIES + 1):
                answer = self._client.batch_get_item(RequestItems=pending)
                found += [_from_item(item) for item in answer.get("Responses", {}).get(table, [])]
                pending = answer.get("UnprocessedKeys") or {}
                if not pending:
                    break
                if attempt == RETRIES:
                    raise RuntimeError(f"{table}: {len(pending[table]['Keys'])} keys still unprocessed after "
                                       f"{RETRIES} retries (throttled?)")
                _pause(attempt)
        return found

    def _write_items(self, noun: str, items: Sequence[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25, retrying unprocessed items with exponential backoff and jitter."""
        table = self._tables[noun]
        chunks = [items[start:start + BATCH_WRITE_ITEMS] for start in range(0, len(items), BATCH_WRITE_ITEMS)]
        self._in_parallel(lambda chunk: self._write_chunk(table, chunk), chunks)

    def _write_chunk(self, table: str, chunk: Sequence[dict[str, Any]]) -> None:
        pending = {table: [{"PutRequest": {"Item": _to_item(item)}} for item in chunk]}
        for attempt in range(RETRIES + 1):
            pending = self._client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            if not pending:
                return
            if attempt == RETRIES:
                raise RuntimeError(f"{table}: {len(pending[table])} items still unprocessed after {RETRIES} "
                                   "retries (throttled?); nothing is lost by sending the batch again")
            _pause(attempt)

    def _transact(self, items: Sequence[dict[str, Any]]) -> list[str] | None:
        """None when written; else why each item was refused (its cancellation code, 'None' for the innocent)."""
        try:
            self._client.transact_write_items(TransactItems=list(items))
        except ClientError as exc:
            if _code(exc) != "TransactionCanceledException":
                raise
            return [reason.get("Code", "None") for reason in exc.response.get("CancellationReasons", [])] or [""]
        return None

    def _conditional(self, call: Callable[..., Any], **request: Any) -> bool:
        """A conditional write: False when its condition did not hold (someone else got there first)."""
        try:
            call(**request)
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _query(self, **request: Any) -> Iterator[dict[str, Any]]:
        return _read(self._client.query, request)

    def _count(self, **request: Any) -> int:
        call = self._client.query if "KeyConditionExpression" in request else self._client.scan
        return sum(answer["Count"] for answer in _paginate(call, {"Select": "COUNT", **request}))

    def _scan(self, noun: str, fields: Sequence[str]) -> Iterator[dict[str, Any]]:
        return _read(self._client.scan, {"TableName": self._tables[noun], "ConsistentRead": True,
                                         **(_expression(ProjectionExpression=_projection(fields)) if fields else {})})

    def _parallel_scan(self, noun: str, fields: Sequence[str], request: dict[str, Any],
                       reduce_segment: Callable[[Iterator[dict[str, Any]]], R]) -> list[R]:
        """Every item (strongly consistent) read by SCAN_SEGMENTS segments at once, each segment's items handed to
        `reduce_segment` as they arrive; `request` adds a filter."""
        projection = _expression(ProjectionExpression=_projection(fields))
        names = {**projection.pop("ExpressionAttributeNames"), **request.get("ExpressionAttributeNames", {})}

        def segment(number: int) -> R:
            return reduce_segment(_read(self._client.scan, {
                "TableName": self._tables[noun], "ConsistentRead": True, **projection, **request,
                "ExpressionAttributeNames": names, "Segment": number, "TotalSegments": SCAN_SEGMENTS}))

        return self._in_parallel(segment, list(range(SCAN_SEGMENTS)))

    def _query_partitions(self, noun: str, index: str, partitions: Iterable[Any], condition: str,
                          values: dict[str, Any], limit: int | None = None,
                          descending: bool = False) -> list[dict[str, Any]]:
        """The first `limit` entries, in the index's sort order (or its reverse), across several partitions of a
        sharded index."""
        design = next(i for d in TABLES if d.noun == noun for i in d.indexes if i.name == index)
        hash_name, sort_name = design.hash_key[0], design.range_key[0]
        key_condition = f"#{hash_name} = :partition" + (f" AND {condition}" if condition else "")

        def one(partition: Any) -> list[dict[str, Any]]:
            request = {"TableName": self._tables[noun], "IndexName": index,
                       **_expression({**values, ":partition": partition}, KeyConditionExpression=key_condition)}
            if limit is not None:
                request["Limit"] = limit
            if descending:
                request["ScanIndexForward"] = False
            rows = []
            for item in self._query(**request):
                rows.append(item)
                if limit is not None and len(rows) >= limit:
                    break
            return rows

        merged = heapq.merge(*self._in_parallel(one, list(partitions)), key=lambda item: item[sort_name],
                             reverse=descending)
        return list(merged if limit is None else islice(merged, limit))

    def _in_parallel(self, work: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Per-item requests on a small thread pool (boto3 clients are thread-safe), results in order."""
        if len(items) <= 1:
            return [work(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="dynamodb")
            pool = self._pool
        return list(pool.map(work, items))


@dataclass
class _CustomerChange:
    arrived: dict[str, dict[str, Any]] = field(default_factory=dict)  # orders now owned by the customer
    left: set[str] = field(default_factory=set)  # references that moved to another customer


@dataclass(frozen=True)
class _HistoryPlan:
    evaluation: Evaluation
    items: list[dict[str, Any]]  # the transaction: state update first, then new transition and events
    transitions: int
    events: int
    overflow: list[dict[str, Any]]  # events beyond one transaction
    measured: bool  # new events with an outcome window among them


class _Sequence:
    """Increasing numbers standing for insertion order (the SQLite store's autoincrement): the wall clock in
    microseconds, bumped past the last number handed out so that one process never repeats or goes back."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return self._last


def _packs(plans: Sequence[_HistoryPlan]) -> Iterator[list[_HistoryPlan]]:
    pack: list[_HistoryPlan] = []
    size = 0
    for plan in plans:
        if pack and size + len(plan.items) > TRANSACTION_ITEMS:
            yield pack
            pack, size = [], 0
        pack.append(plan)
        size += len(plan.items)
    if pack:
        yield pack


def _add_results(a: SaveResult, b: SaveResult) -> SaveResult:
    return SaveResult(a.saved + b.saved, a.transitions + b.transitions, a.events + b.events, a.skipped + b.skipped)


def _pause(attempt: int) -> None:
    """Exponential backoff with full jitter, so that writers who collided do not collide again in step."""
    time.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_SECONDS * 2**attempt)))


def _attempt_outcome(status: int | None) -> str:
    if status is None:
        return "network_error"
    return "delivered" if 200 <= status <= 299 else "http_error"
