"""The wall clock, read only at the edges (commands, the scheduler, the API's default clock); everything below
takes the moment as an argument."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
