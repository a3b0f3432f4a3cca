"""Storage behind one interface; `open_store` picks the backend from DATABASE_URL."""

from __future__ import annotations

import sqlite3
from urllib.parse import urlsplit

from worker.store.base import Store, StoreUnavailable


def open_store(database_url: str, create: bool = True) -> Store:
    """sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:///:memory:;
    dynamodb://?region=...&endpoint_url=...&table_prefix=... (tables made by `python -m worker init-db`).

    With `create=False` a SQLite file that does not exist yet is refused instead of created (commands that only
    read must not leave an empty database behind a mistyped or unset DATABASE_URL). Raises StoreUnavailable.
    """
    parts = urlsplit(database_url)
    if parts.scheme == "sqlite":
        return _open_sqlite(database_url, create)
    if parts.scheme == "dynamodb":
        from worker.store.dynamodb.store import open_dynamodb  # imports boto3: only when asked for

        return open_dynamodb(database_url)
    raise StoreUnavailable(f"DATABASE_URL {database_url!r}: unsupported scheme {parts.scheme!r} "
                           "(use sqlite:///path/to/file.db or dynamodb://?region=...)")


def _open_sqlite(database_url: str, create: bool) -> Store:
    from pathlib import Path

    from worker.store.sqlite import SQLiteStore

    path = database_url[len("sqlite:///"):] if database_url.startswith("sqlite:///") else ""
    if not path:
        raise StoreUnavailable(f"DATABASE_URL {database_url!r}: expected sqlite:///path/to/file.db")
    if not create and path != ":memory:" and not Path(path).exists():
        raise StoreUnavailable(f"no database at {path} (DATABASE_URL={database_url}): import orders first, or set "
                               "DATABASE_URL to the database you mean (the demo's is sqlite:///data/demo.db)")
    try:
        return SQLiteStore(path)
    except RuntimeError as exc:  # a database of a newer program
        raise StoreUnavailable(f"DATABASE_URL {database_url!r}: {exc}") from None
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnavailable(f"DATABASE_URL {database_url!r}: cannot open the SQLite file: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None


__all__ = ["Store", "StoreUnavailable", "open_store"]
