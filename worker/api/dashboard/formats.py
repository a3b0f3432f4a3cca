"""How the dashboard shows times, days, money, counts and ages to people."""

from __future__ import annotations

from datetime import datetime, timezone

from rules.money import format_cents


def when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def day(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d")


def amount(cents: int, currency: str) -> str:
    """Money for people in the rules' currency: $12,450.00 (the API keeps the plain '12450.00')."""
    return format_cents(cents, currency)


def number(value: float) -> str:
    return f"{int(value):,}"


def age(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"
