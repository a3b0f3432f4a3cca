"""Storage behind one interface; `open_store` picks the backend from DATABASE_URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from worker.store.base import Store


def open_store(database_url: str) -> Store:
    """sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:///:memory:;
    dynamodb://?region=...&endpoint_url=...&table_prefix=... (tables made by `python -m worker init-db`)."""
    parts = urlsplit(database_url)
    if parts.scheme == "sqlite":
        from worker.store.sqlite import SQLiteStore

        path = database_url[len("sqlite:///"):] if database_url.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"DATABASE_URL {database_url!r}: expected sqlite:///path/to/file.db")
        return SQLiteStore(path)
    if parts.scheme == "dynamodb":
        from worker.store.dynamodb import DynamoConfig, DynamoDBStore  # imports boto3: only when asked for

        return DynamoDBStore.open(DynamoConfig.from_url(database_url))
    raise ValueError(f"DATABASE_URL {database_url!r}: unsupported scheme {parts.scheme!r} "
                     "(use sqlite:///... or dynamodb://?...)")


__all__ = ["Store", "open_store"]
