"""SourceTable: another system's DynamoDB orders table, only read, page by page, for `sync-orders`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from worker.store.dynamodb.items import _code, _from_item, _paginate
from worker.store.dynamodb.tables import make_client


class SourceTable:
    """Another system's DynamoDB table, only read, with a parallel scan (`python -m worker sync-orders`)."""

    def __init__(self, name: str, region: str | None = None, endpoint_url: str | None = None, client: Any = None):
        self.name = name
        self._client = client or make_client(region, endpoint_url)

    def approximate_items(self) -> int | None:
        """DynamoDB's item count, refreshed about every six hours: good enough for a progress bar."""
        try:
            return int(self._client.describe_table(TableName=self.name)["Table"].get("ItemCount", 0)) or None
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise LookupError(f"DynamoDB table {self.name!r} not found") from None
            raise

    def pages(self, segment: int, total_segments: int, start_key: dict[str, Any] | None,
              page_size: int | None = None) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any] | None]]:
        """(items as plain values, the key to resume after this page or None at the end) for one scan segment."""
        request: dict[str, Any] = {"TableName": self.name, "Segment": segment, "TotalSegments": total_segments}
        if page_size:
            request["Limit"] = page_size
        if start_key:
            request["ExclusiveStartKey"] = start_key
        for answer in _paginate(self._client.scan, request):
            yield [_from_item(item) for item in answer.get("Items", [])], answer.get("LastEvaluatedKey")
