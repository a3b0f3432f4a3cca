"""DynamoDB store: the SQLite store's data in tables keyed for its queries, written with conditional writes so that
several worker processes can share it. The only package that imports boto3 (see docs/dynamodb.md)."""

from worker.store.dynamodb.items import CUSTOMER_SHARDS, EVENT_SHARDS
from worker.store.dynamodb.source import SourceTable
from worker.store.dynamodb.store import DynamoDBStore
from worker.store.dynamodb.tables import (
    DEFAULT_TABLE_PREFIX,
    SCHEMA_VERSION,
    TABLES,
    DynamoConfig,
    Index,
    TableDesign,
    create_tables,
    make_client,
)

__all__ = [
    "CUSTOMER_SHARDS",
    "DEFAULT_TABLE_PREFIX",
    "EVENT_SHARDS",
    "SCHEMA_VERSION",
    "TABLES",
    "DynamoConfig",
    "DynamoDBStore",
    "Index",
    "SourceTable",
    "TableDesign",
    "create_tables",
    "make_client",
]
