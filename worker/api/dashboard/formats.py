"""How the dashboard shows times, days, money, counts, shares, differences in points and ages to people."""

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


def share(fraction: float | None, places: int = 1) -> str:
    """A 0..1 share as people read it: 0.296 -> '29.6 %'; None (nobody to count) -> '—'."""
    return "—" if fraction is None else f"{fraction * 100:.{places}f} %"


def signed_share(fraction: float | None) -> str:
    """A relative change in whole percent with its sign: 0.4217 -> '+42 %', -0.05 -> '-5 %'."""
    if fraction is None:
        return "—"
    value = round(fraction * 100)
    return f"{value:+d} %" if value else "0 %"


def points(difference: float | None) -> str:
    """A difference of two shares in percentage points, signed: 0.087 -> '+8.7'; one that rounds to nothing -> '0.0'
    (never '-0.0')."""
    if difference is None:
        return "—"
    value = round(difference * 100, 1)
    return f"{value:+.1f}" if value else "0.0"


def age(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"
