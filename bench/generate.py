"""A deterministic order history for N customers: mixed buying patterns over three years, lognormal order values.

    python -m bench.generate --customers 100000 --out orders.csv [--seed 42]

The same customers, seed and `as_of` always give the same file, byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

AS_OF = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc)
HISTORY_DAYS = 3 * 365
HEADER = ("contactID", "orderReference", "orderDate", "total", "email", "name", "status")
CANCELLED_SHARE = 0.02
RECENCY_MEAN_DAYS = 110
FIRST_NAMES = ("Ava", "Ben", "Chloe", "Dan", "Ella", "Finn", "Grace", "Hugo", "Iris", "Jack", "Kara", "Liam",
               "Maya", "Noah", "Olga", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Zoe")
LAST_NAMES = ("Smith", "Jones", "Garcia", "Chen", "Novak", "Okafor", "Rossi", "Kim", "Silva", "Berg")
DOMAINS = ("boxworks", "cartonia", "packright", "shipshape", "wrapco", "crateco", "tapehouse", "palletpro")


@dataclass(frozen=True)
class Profile:
    """One kind of buyer: how often they order, how many orders they place at most, what an order is worth."""

    name: str
    share: float
    mean_gap_days: float
    orders: tuple[int, int]  # uniform range, before the history window cuts the run short
    median_value: float  # dollars; values are lognormal around it
    sigma: float = 0.6


PROFILES = (
    Profile("weekly", 0.07, 6, (40, 180), 140),
    Profile("monthly", 0.28, 24, (8, 36), 160, 0.7),
    Profile("quarterly", 0.22, 75, (3, 14), 300),
    Profile("occasional", 0.18, 200, (2, 6), 380, 0.8),
    Profile("one-time", 0.25, 0, (1, 1), 230, 0.8),
)


def customer_id(number: int) -> str:
    return f"C{number:07d}"


def generate(customers: int, out: Path, seed: int = 42, as_of: datetime = AS_OF) -> int:
    """Write the orders of `customers` customers to `out` (CSV with header); returns the number of orders."""
    rng = random.Random(seed)
    today = as_of.date()
    days = _day_texts(today)
    minutes = [f"T{m // 60:02d}:{m % 60:02d}:00Z" for m in range(1440)]
    profiles = list(PROFILES)
    weights = [p.share for p in profiles]
    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(HEADER)
        for number in range(1, customers + 1):
            profile = rng.choices(profiles, weights)[0]
            rows = _customer_orders(rng, number, profile, days, minutes)
            writer.writerows(rows)
            written += len(rows)
    return written


def _customer_orders(rng: random.Random, number: int, profile: Profile, days: list[str],
                     minutes: list[str]) -> list[tuple[str, ...]]:
    contact = customer_id(number)
    first = rng.choice(FIRST_NAMES)
    name = f"{first} {rng.choice(LAST_NAMES)}"
    email = f"{first.lower()}.{number}@{rng.choice(DOMAINS)}.example"
    # Work backwards from the last order: how long ago that was is roughly exponential (most customers bought
    # recently, a long tail lapsed), which puts about 1% of customers on a day threshold on any given day.
    last = HISTORY_DAYS - 1 - rng.expovariate(1 / RECENCY_MEAN_DAYS)
    count = rng.randint(*profile.orders)
    moments = [last]
    for _ in range(count - 1):
        day = moments[-1] - max(1.0, rng.gammavariate(4.0, profile.mean_gap_days / 4.0))
        if day < 0:
            break
        moments.append(day)
    rows = []
    for index, day in enumerate(reversed(moments)):
        minute = rng.randrange(0, 6 * 60) if int(day) == HISTORY_DAYS - 1 else rng.randrange(6 * 60, 20 * 60)
        cents = max(100, round(rng.lognormvariate(0.0, profile.sigma) * profile.median_value * 100))
        status = "cancelled" if rng.random() < CANCELLED_SHARE else "completed"
        rows.append((contact, f"O{number:07d}-{index + 1:04d}", days[int(day)] + minutes[minute],
                     f"{cents // 100}.{cents % 100:02d}", email, name, status))
    return rows


def _day_texts(today: date) -> list[str]:
    """Index 0 is the first day of the history, the last index is today."""
    start = today - timedelta(days=HISTORY_DAYS - 1)
    return [(start + timedelta(days=n)).isoformat() for n in range(HISTORY_DAYS)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    written = generate(args.customers, args.out, args.seed)
    print(f"{args.out}: {args.customers} customers, {written} orders")


if __name__ == "__main__":
    main()
