"""Where the DynamoDB tables are and how they are laid out: the DATABASE_URL config, the table and index design
with `init-db`'s create_tables, and make_client, the boto3 client every request goes through."""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from worker.store.base import DEFAULT_EXCLUDED_JSON, EXCLUDED_STATUSES_KEY, ORDER_DAYS_TIMEZONE_KEY
from worker.store.dynamodb.items import _code, _expression, _to_item

log = logging.getLogger(__name__)

# 2: optional attributes segment_since, superseded_by, recheck; the superseded status. 3: the events index
# by_contact (a customer's events), which `init-db` adds to tables made before it. 4: optional attributes order_day
# (orders) and purchase_days, first_day_cents, purchase_day_set (customers): no table change, but a version 3 program
# must no longer start against the tables (its orders would have no day); the first evaluation's apply_timezone
# gives the orders stored before their day and recounts their customers. 5: the events index by_campaign (a
# campaign's measured events, for its outcomes), which `init-db` adds; optional attributes holdouts and
# measured_events (customers), outcome_until, outcome_orders, outcome_cents, campaign_shard (events) and the status
# held_out. Events stored before have no outcome window: they are not measured, and not in the new index.
SCHEMA_VERSION = 5
DEFAULT_TABLE_PREFIX = "segment_worker_"
WORKERS = 8  # concurrent requests for per-item writes (conditional updates cannot be batched)
INDEX_WAIT_SECONDS = 3600  # how long init-db waits for DynamoDB to fill an index it added to a table with data
_URL_OPTIONS = ("region", "endpoint_url", "table_prefix")


@dataclass(frozen=True)
class DynamoConfig:
    """Where the tables are: `dynamodb://?region=...&endpoint_url=...&table_prefix=...` (all optional)."""

    region: str | None = None
    endpoint_url: str | None = None
    table_prefix: str = DEFAULT_TABLE_PREFIX

    @classmethod
    def from_url(cls, url: str) -> DynamoConfig:
        parts = urlsplit(url)
        if parts.scheme != "dynamodb" or parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"DATABASE_URL {url!r}: expected dynamodb://?region=...&endpoint_url=...&table_prefix=...")
        options = {name: values[-1] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = sorted(set(options) - set(_URL_OPTIONS))
        if unknown:
            raise ValueError(f"DATABASE_URL {url!r}: unknown option(s) {', '.join(unknown)} "
                             f"(use {', '.join(_URL_OPTIONS)})")
        prefix = options.get("table_prefix", DEFAULT_TABLE_PREFIX)
        if not re.fullmatch(r"[A-Za-z0-9_.-]*", prefix):
            raise ValueError(f"DATABASE_URL {url!r}: table_prefix may hold letters, digits, '_', '-' and '.' only")
        return cls(region=options.get("region") or None, endpoint_url=options.get("endpoint_url") or None,
                   table_prefix=prefix)

    def table(self, noun: str) -> str:
        return self.table_prefix + noun


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: tuple[str, str]  # (attribute, S|N)
    range_key: tuple[str, str]
    include: tuple[str, ...] = ()  # projected besides the keys; nothing else, so updates rarely touch an index


@dataclass(frozen=True)
class TableDesign:
    noun: str
    hash_key: tuple[str, str]
    range_key: tuple[str, str] | None = None
    indexes: tuple[Index, ...] = ()


# One table per noun of the SQLite schema, with the indexes its queries need (docs/dynamodb.md explains each).
TABLES = (
    TableDesign("customers", ("contact_id", "S"), indexes=(
        Index("due", ("shard", "N"), ("due_at", "N")),  # changed (due_at 0) or due for a re-check
        Index("by_id", ("shard", "N"), ("contact_id", "S")),  # everyone, paged in contact_id order
        Index("by_segment", ("segment_key", "S"), ("contact_id", "S")),
        Index("by_frequency", ("frequency_key", "S"), ("contact_id", "S")),
    )),
    TableDesign("orders", ("order_ref", "S")),
    TableDesign("transitions", ("contact_id", "S"), ("id", "S"), indexes=(
        Index("by_time", ("shard", "N"), ("occurred_at", "N"), include=("to_segment",)),  # per day, counts
    )),
    TableDesign("events", ("id", "S"), indexes=(
        Index("due", ("shard", "N"), ("claimable", "S"), include=("contact_id",)),  # pending, by when takeable
        Index("retrying_by_contact", ("retrying_contact", "S"), ("seq", "N")),  # failed, waiting for a retry
        Index("by_status", ("status_shard", "S"), ("seq", "N"), include=("created_at",)),
        Index("by_contact", ("contact_id", "S"), ("seq", "N")),  # a customer's events, newest first
        # a campaign's measured events (only they carry campaign_shard), with what its outcome report sums
        Index("by_campaign", ("campaign_shard", "S"), ("occurred_at", "N"),
              include=("status", "outcome_until", "outcome_orders", "outcome_cents")),
    )),
    TableDesign("attempts", ("event_id", "S"), ("at", "S")),
    TableDesign("leases", ("name", "S")),
    TableDesign("meta", ("key", "S")),
)


def create_tables(config: DynamoConfig, client: Any = None) -> list[tuple[str, bool]]:
    """Create the missing tables (on-demand billing), add the indexes that tables made by an older version lack,
    and record the schema version; (table, created) pairs.

    Idempotent: existing tables keep their data, so running `init-db` again is harmless. The schema version moves
    up only once every index is in place, which is what lets this version's processes open the tables.
    """
    client = client or make_client(config.region, config.endpoint_url)
    existing = set()
    for page in client.get_paginator("list_tables").paginate():
        existing.update(page["TableNames"])
    report, creating = [], []
    for design in TABLES:
        name = config.table(design.noun)
        report.append((name, name not in existing))
        if name in existing:
            _add_missing_indexes(client, name, design)
            continue
        answer = client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **_table_definition(design))
        if answer["TableDescription"].get("TableStatus") != "ACTIVE":
            creating.append(name)
    for name in creating:
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    if (config.table("orders"), True) in report:  # new orders: counted under the defaults from the first one
        _record_defaults(client, config.table("meta"))
    _record_schema_version(client, config.table("meta"))
    return report


def _record_defaults(client: Any, meta: str) -> None:
    """The settings a new store's orders are stored under (UTC days, the default excluded statuses), so that the
    first evaluation applying the same ones has nothing to recount. Never over a value already there."""
    for key, value in ((ORDER_DAYS_TIMEZONE_KEY, "UTC"), (EXCLUDED_STATUSES_KEY, DEFAULT_EXCLUDED_JSON)):
        try:
            client.put_item(TableName=meta, Item=_to_item({"key": key, "value": value}),
                            **_expression({}, ConditionExpression="attribute_not_exists(#key)"))
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise


def _add_missing_indexes(client: Any, table: str, design: TableDesign) -> None:
    """One UpdateTable per missing index (DynamoDB creates one at a time), each waited for: DynamoDB fills a new
    index from the items already in the table, which can take minutes on a large one."""
    present = {index["IndexName"] for index in client.describe_table(TableName=table)["Table"].get(
        "GlobalSecondaryIndexes", [])}
    for index in design.indexes:
        if index.name in present:
            continue
        log.warning("adding index %s to table %s; DynamoDB fills it from the existing items", index.name, table)
        client.update_table(TableName=table, AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": kind} for name, kind in (index.hash_key, index.range_key)],
            GlobalSecondaryIndexUpdates=[{"Create": _index_definition(index)}])
        _wait_for_index(client, table, index.name)


def _wait_for_index(client: Any, table: str, name: str) -> None:
    deadline = time.monotonic() + INDEX_WAIT_SECONDS
    while True:
        indexes = client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])
        if any(index["IndexName"] == name and index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes):
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"index {name} of {table} is still being built after {INDEX_WAIT_SECONDS} s; run "
                               "`python -m worker init-db` again once DynamoDB shows it ACTIVE")
        time.sleep(5)


def _record_schema_version(client: Any, meta: str) -> None:
    """This version's number on fresh tables and on tables of an older version; a newer one is left alone (the
    store then refuses to open them)."""
    found = client.get_item(TableName=meta, Key=_to_item({"key": "schema_version"}), ConsistentRead=True).get("Item")
    seen = found["value"]["S"] if found else None
    if seen is not None and int(seen) >= SCHEMA_VERSION:
        return
    condition = ("attribute_not_exists(#key)", {}) if seen is None else ("#value = :seen", {":seen": seen})
    try:  # conditional on what was read: two init-db at once write it once
        client.put_item(TableName=meta, Item=_to_item({"key": "schema_version", "value": str(SCHEMA_VERSION)}),
                        **_expression(condition[1], ConditionExpression=condition[0]))
    except ClientError as exc:
        if _code(exc) != "ConditionalCheckFailedException":
            raise


def _table_definition(design: TableDesign) -> dict[str, Any]:
    attributes = {design.hash_key[0]: design.hash_key[1]}
    schema = [{"AttributeName": design.hash_key[0], "KeyType": "HASH"}]
    if design.range_key:
        attributes[design.range_key[0]] = design.range_key[1]
        schema.append({"AttributeName": design.range_key[0], "KeyType": "RANGE"})
    indexes = []
    for index in design.indexes:
        attributes.update(dict((index.hash_key, index.range_key)))
        indexes.append(_index_definition(index))
    definition: dict[str, Any] = {
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t} for n, t in sorted(attributes.items())],
        "KeySchema": schema,
    }
    if indexes:
        definition["GlobalSecondaryIndexes"] = indexes
    return definition


def _index_definition(index: Index) -> dict[str, Any]:
    projection: dict[str, Any] = {"ProjectionType": "INCLUDE" if index.include else "KEYS_ONLY"}
    if index.include:
        projection["NonKeyAttributes"] = list(index.include)
    return {"IndexName": index.name, "Projection": projection, "KeySchema": [
        {"AttributeName": index.hash_key[0], "KeyType": "HASH"},
        {"AttributeName": index.range_key[0], "KeyType": "RANGE"}]}


_SESSION: list[Any] = []
_SESSION_LOCK = threading.Lock()


def make_client(region: str | None, endpoint_url: str | None) -> Any:
    """A low-level client (thread-safe, unlike resources) with botocore's own retries for throttling.

    Clients come from one shared session, which parses DynamoDB's service model once instead of per client;
    a session itself is not thread-safe, hence the lock.
    """
    with _SESSION_LOCK:
        if not _SESSION:
            _SESSION.append(boto3.session.Session())
        return _SESSION[0].client(
            "dynamodb", region_name=region, endpoint_url=endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=WORKERS * 2 + 4))
