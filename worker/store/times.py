"""How both stores keep instants: integer milliseconds since the epoch (UTC), and back to aware datetimes; UTC ISO
text (the wire format, and the store's meta) both ways."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Below 2**33 seconds either side of the epoch (the year 2242; ingest accepts orders up to 2200) one float division
# is exact: fromtimestamp rounds to the microsecond, and a double is within half a microsecond of every millisecond.
_FLOAT_EXACT_MS = 2**33 * 1000


def to_ms(moment: datetime | None) -> int | None:
    """Instants are stored as integer milliseconds since the epoch (UTC): exact, compact and fast to compare."""
    if moment is None:
        return None
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    if -_FLOAT_EXACT_MS < ms < _FLOAT_EXACT_MS:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)  # the cheaper way, for the instants we meet
    return _EPOCH + timedelta(milliseconds=ms)


def iso(moment: datetime | None) -> str | None:
    """UTC ISO 8601 with milliseconds and Z, like the original Lambda: 2025-10-15T08:30:00.000Z."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_iso(text: str) -> datetime | None:
    """An instant `iso` wrote (a time without offset means UTC); None for text that is not one."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        return None


_UNIX_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()
_MS_PER_DAY = 86_400_000


def local_day_function(timezone_name: str) -> Callable[[int | None], int | None]:
    """Instant in epoch milliseconds -> its calendar day in `timezone_name`, as `date.toordinal()`: how both
    stores count an order's purchase day (the model counts repeat purchases per day). UTC needs no conversion."""
    if timezone_name == "UTC":
        return lambda ms: None if ms is None else ms // _MS_PER_DAY + _UNIX_EPOCH_ORDINAL
    tz = ZoneInfo(timezone_name)

    def local_day(ms: int | None) -> int | None:
        if ms is None:
            return None
        return from_ms(ms).astimezone(tz).date().toordinal()  # type: ignore[union-attr]

    return local_day
