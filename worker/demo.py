"""The demo's data: a realistic, deterministic sample of a wholesaler's customers and orders, loaded through 90 days
of history (orders arriving day by day, one evaluation run a day) so that every chart of the dashboard has data."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from rules import Rules
from worker.evaluate import evaluate_due
from worker.ingest import BATCH, ingest_orders
from worker.prediction import refresh_model_safely, summarize_after_evaluation
from worker.rfm_boundaries import refresh_rfm
from worker.serialize import iso
from worker.store.base import Order, Store
from worker.store.times import from_iso

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

HISTORY_DAYS = 90  # as many days as the dashboard's transitions chart shows
# The scheduler recomputes the RFM boundaries daily; in the replay once a week will do: each computation is a pass
# over every customer, and would take most of the replay's time.
RFM_EVERY_DAYS = 7

# Meta keys of a demo database. The anchor is the moment the sample's order dates count back from: kept, so that a
# re-run generates the very same orders (upserted unchanged) instead of shifting every date by the time since.
ANCHOR_KEY = "demo:sample_generated_at"
API_KEY_KEY = "demo:api_key"
WEBHOOK_SECRET_KEY = "demo:webhook_secret"


class NotADemoStore(ValueError):
    """The database holds customers the demo did not make: it loads its sample only into its own database."""


@dataclass(frozen=True)
class Loaded:
    """What load_sample did: `history` is True when it replayed HISTORY_DAYS (a new demo database), False when the
    database already had runs and it evaluated once, now."""

    customers: int
    orders: int
    inserted: int
    runs: int
    transitions: int
    events: int
    history: bool
    seconds: float


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


def sample_anchor(store: Store, now: datetime) -> datetime:
    """When the store's sample was generated (`now` on a new demo database, kept from then on).

    Raises NotADemoStore when the store holds customers but no anchor: data the demo must not mix its sample into.
    """
    kept = from_iso(store.get_meta(ANCHOR_KEY) or "")
    if kept is not None:
        return kept
    if store.count_customers() or store.has_run():
        raise NotADemoStore("this database already holds customers or evaluation runs that are not the demo's; the "
                            "demo loads its sample only into a new database or one it made (set DATABASE_URL to "
                            "another file)")
    anchor = now.replace(microsecond=0)  # whole seconds: kept as text, read back exactly
    store.set_meta(ANCHOR_KEY, iso(anchor) or "")
    return anchor


def kept_secret(store: Store, key: str, make: Callable[[], str]) -> str:
    """The secret kept under `key` in the store's meta; made and kept on first use, so every run prints the same."""
    kept = store.get_meta(key)
    if kept:
        return kept
    made = make()
    store.set_meta(key, made)
    return made


def load_sample(store: Store, rules: Rules, customers: int, anchor: datetime, now: datetime) -> Loaded:
    """Load `customers` generated customers (orders dated back from `anchor`) and evaluate them up to `now`.

    A database without runs gets HISTORY_DAYS of history: the first run (the rules' `first_run`, a baseline with the
    shipped rules) HISTORY_DAYS before `now` with only the orders placed by then, then one run a day, each after the
    orders placed since, the last at `now`. Moves are dated when they happened, and campaigns queue events dated so
    (detectedAt: the day of their run), due at once. A database with runs is evaluated once at `now`: time only
    moves forward in a store, and the orders, upserted by reference, are the ones it holds already.
    """
    started = time.perf_counter()
    orders = sorted(generate_orders(customers, anchor), key=lambda order: order.order_at)
    history = not store.has_run()
    steps = history_steps(now) if history else [now]
    inserted = transitions = events = placed = 0
    for day, moment in enumerate(steps):
        upto = placed
        while upto < len(orders) and orders[upto].order_at <= moment:
            upto += 1
        for start in range(placed, upto, BATCH):
            inserted += ingest_orders(store, orders[start:min(upto, start + BATCH)], moment, rules.orders).inserted
        placed = upto
        if day % RFM_EVERY_DAYS == 0 or moment == now:
            refresh_rfm(store, rules, moment)
        fitted = refresh_model_safely(store, rules, moment) if moment == now else None  # as the scheduler would
        run = evaluate_due(store, rules, moment)
        summarize_after_evaluation(store, rules, fitted, moment)
        transitions += run.transitions
        events += run.events
    return Loaded(customers, len(orders), inserted, len(steps), transitions, events, history,
                  time.perf_counter() - started)


def history_steps(now: datetime) -> list[datetime]:
    """The moments of the replay's evaluation runs: one a day from HISTORY_DAYS before `now` up to `now` itself."""
    return [now - timedelta(days=HISTORY_DAYS - day) for day in range(HISTORY_DAYS + 1)]
