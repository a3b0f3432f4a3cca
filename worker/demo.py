"""A realistic, deterministic sample of a wholesaler's customers and orders for the demo."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from worker.store.base import Order

FIRST_NAMES = ("Ava", "Ben", "Chloe", "Dan", "Ella", "Finn", "Grace", "Hugo", "Iris", "Jack", "Kara", "Liam",
               "Maya", "Noah", "Olga", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Zoe")
COMPANIES = ("Boxworks", "Cartonia", "PackRight", "ShipShape", "WrapCo", "Crate & Co", "Tape House", "Pallet Pro",
             "Fold Ltd", "Bubble Supply", "Corrugate Inc", "Parcel Point")

# (kind, share of customers, mean days between orders, orders range, typical order value, days since last order)
_PROFILES = (
    ("weekly", 0.12, 6, (8, 40), 180, (0, 10)),
    ("monthly", 0.25, 24, (3, 20), 260, (0, 45)),
    ("quarterly", 0.17, 70, (2, 8), 420, (0, 85)),
    ("occasional", 0.10, 150, (2, 5), 380, (0, 89)),
    ("one-time", 0.12, 0, (1, 1), 240, (31, 400)),
    ("new", 0.08, 7, (1, 3), 220, (0, 20)),
    ("big-account", 0.06, 20, (10, 40), 900, (0, 60)),
    ("lapsed", 0.10, 30, (2, 8), 300, (91, 700)),
)


def generate_orders(customers: int, as_of: datetime, seed: int = 7) -> Iterator[Order]:
    """Customers of every buying pattern (weekly to one-time, new, big accounts, lapsed); a few cancelled orders."""
    rng = random.Random(seed)
    shares = [p[1] for p in _PROFILES]
    for number in range(1, customers + 1):
        kind, _, gap, (low, high), value, (recent, oldest) = rng.choices(_PROFILES, weights=shares)[0]
        contact = f"C-{number:05d}"
        first = rng.choice(FIRST_NAMES)
        name = f"{first} {rng.choice(('Smith', 'Jones', 'Garcia', 'Chen', 'Novak', 'Okafor', 'Rossi'))}"
        domain = rng.choice(COMPANIES).lower().replace(" & ", "").replace(" ", "")
        email = f"{first.lower()}.{number}@{domain}.example"
        last = as_of - timedelta(days=rng.randint(recent, oldest), hours=rng.randint(0, 10))
        moments = [last]
        for _ in range(rng.randint(low, high) - 1):
            step = rng.expovariate(1 / gap) if kind != "new" else rng.uniform(1, 4)
            moments.append(moments[-1] - timedelta(days=max(1.0, step), hours=rng.randint(-3, 3)))
        for index, moment in enumerate(reversed(moments)):
            cents = max(500, int(rng.lognormvariate(0, 0.6) * value * 100))
            status = "cancelled" if rng.random() < 0.02 else "completed"
            when = moment.replace(second=0, microsecond=0)
            yield Order(contact, f"ORD-{number:05d}-{index + 1:03d}", when, cents, status, email, name)

