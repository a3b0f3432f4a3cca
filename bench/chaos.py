"""Crash recovery under kill -9: the real scheduler (`python -m worker scheduler`) and bulk import
(`python -m worker import-orders`) are killed at random moments during ingest, evaluation and delivery, restarted,
and at the end every promise is checked against what really happened.

    python -m bench.chaos --rounds 50 --seed 7        # the long run; tests/test_chaos.py runs 10 rounds in CI

Checked at the end: every expected transition recorded exactly once, every event delivered at least once (a
duplicate only ever under the same webhook-id), the aggregates equal a recomputation from the orders, and
`PRAGMA integrity_check` says ok. Exit status 1 if anything does not hold.

A killed scheduler's lease and claims would lapse after their TTL (20 seconds); instead of waiting, the harness
expires exactly the dead process's leases and claims before restarting, which is what the passing time would do.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from tests.receiver import Receiver, _Response

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_" + base64.b64encode(b"chaos-signing-secret-0123456789ab").decode()
PHASES = ("ingest", "evaluation", "delivery")
EVALUATE_EVERY, DELIVER_EVERY = 0.3, 0.1
MAX_CONCURRENCY = 2  # sends in flight at once: all a kill -9 can leave sent but not recorded
# Never dead during a run: retries go on for minutes, much longer than any outage the harness makes.
RETRY_SCHEDULE = [0.2, 0.5, 1, 1, 2, 2, 3, 3, 5, 5, 5, 5, 10, 10, 10, 10, 30, 30, 30, 30, 60, 60, 60]

RULES = f"""\
version: 1
timezone: UTC
segments:
  - {{name: VIP, when: {{totalSpend: {{gt: 5000}}}}}}
  - {{name: Dormant, when: {{lastOrderDaysAgo: {{gt: 90}}}}}}
  - {{name: New, when: {{firstOrderDaysAgo: {{lte: 30}}}}}}
  - {{name: Active}}
no_orders_segment: New
purchase_frequency:
  - {{name: Weekly, max_avg_days: 7}}
  - {{name: Monthly, max_avg_days: 30}}
  - {{name: Quarterly, max_avg_days: 90}}
  - {{name: Occasional}}
campaigns:
  welcome:  {{on: {{entered: New}}, webhook: n8n}}
  vip:      {{on: {{entered: VIP}}, webhook: n8n}}
  win-back: {{on: {{entered: Dormant}}, webhook: n8n}}
webhooks:
  n8n:
    url: "${{CHAOS_WEBHOOK_URL}}"
    secret: "${{WEBHOOK_SECRET}}"
    timeout_seconds: 5
    max_concurrency: {MAX_CONCURRENCY}
    retry_schedule_seconds: {RETRY_SCHEDULE}
schedule: {{evaluate_every_seconds: {EVALUATE_EVERY}, deliver_every_seconds: {DELIVER_EVERY}}}
first_run: emit
"""
CAMPAIGN_OF = {"New": "welcome", "VIP": "vip", "Dormant": "win-back"}


@dataclass
class ChaosReport:
    rounds: int
    seed: int
    kills: Counter = field(default_factory=Counter)  # by phase the kill was aimed at
    customers: int = 0
    orders: int = 0
    transitions: int = 0
    events: int = 0
    requests: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)  # event id -> times delivered (only those > 1)
    lost: list[str] = field(default_factory=list)  # events never delivered
    superseded: int = 0  # welcomes not sent because the customer was VIP by their turn (the re-check)
    duplicate_bound: int = 0  # at most this many extra copies: the sends in flight at each kill
    retried: int = 0  # deliveries answered 503 by the receiver and tried again
    cut_off: int = 0  # requests whose body never fully arrived because the sender was killed mid-send
    integrity: str = ""
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        kills = ", ".join(f"{phase} {self.kills[phase]}" for phase in PHASES)
        dupes = ", ".join(f"{i} x{n}" for i, n in sorted(self.duplicates.items())) or "none"
        return (f"chaos seed {self.seed}: {self.rounds} rounds survived in {self.seconds:.0f}s; "
                f"kill -9 during {kills}\n"
                f"  {self.customers} customers, {self.orders} orders, {self.transitions} transitions, "
                f"{self.events} events, {self.requests} webhook requests ({self.retried} answered 503 and retried, "
                f"{self.cut_off} cut off by a kill)\n"
                f"  events lost: {len(self.lost)}; superseded (welcome of a customer already VIP): "
                f"{self.superseded}; delivered more than once (same webhook-id): "
                f"{len(self.duplicates)}, {sum(n - 1 for n in self.duplicates.values())} extra copies "
                f"(bound: {self.duplicate_bound}) ({dupes})\n"
                f"  PRAGMA integrity_check: {self.integrity}; problems: {len(self.problems)}"
                + "".join(f"\n    - {p}" for p in self.problems[:20]))


class FlakyReceiver(Receiver):
    """n8n on a bad day: answers take 5-30 ms (so kills land mid-send) and one in twenty is a 503."""

    def __init__(self, secret: str, seed: int):
        super().__init__(secret)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def start(self) -> FlakyReceiver:
        super().start()
        # A killed sender leaves connections reset mid-request: expected here, not worth a traceback on stderr.
        self._running().handle_error = lambda request, client_address: None
        return self

    def _next_response(self, headers):
        with self._rng_lock:
            status = 503 if self._rng.random() < 0.05 else 200
            delay = self._rng.uniform(0.005, 0.03)
        return _Response(status, 1, delay=delay)


@dataclass
class Ledger:
    """Every order the harness sent (the last version of each reference) and the moves it must cause."""

    orders: dict[str, dict] = field(default_factory=dict)
    expected: dict[str, list[tuple[str | None, str]]] = field(default_factory=lambda: defaultdict(list))
    new_customers: list[str] = field(default_factory=list)
    upgraded: set[str] = field(default_factory=set)

    def add(self, record: dict) -> None:
        self.orders[record["orderReference"]] = record


class Harness:
    def __init__(self, rounds: int, seed: int, work_dir: Path, log: Callable[[str], None]):
        self.rounds = rounds
        self.rng = random.Random(seed)  # the orders (which customers get upgraded also depends on timing)
        self.kills = random.Random(seed)  # which phase each round's kill aims at and when: the same for a seed
        self.work = work_dir
        self.log = log
        self.report = ChaosReport(rounds=rounds, seed=seed)
        self.ledger = Ledger()
        self.db_path = work_dir / "chaos.db"
        self.started: list[subprocess.Popen] = []
        self.scheduler: subprocess.Popen | None = None
        self.schedulers = 0
        self.now = datetime.now(timezone.utc)
        self.receiver = FlakyReceiver(SECRET, seed)
        self.env: dict[str, str] = {}

    # the run -------------------------------------------------------------------------------------------------

    def run(self) -> ChaosReport:
        began = time.monotonic()
        self.receiver.start()
        try:
            (self.work / "rules.yaml").write_text(RULES, encoding="utf-8")
            self.env = {**os.environ, "DATABASE_URL": f"sqlite:///{self.db_path}",
                        "RULES_FILE": str(self.work / "rules.yaml"), "WEBHOOK_SECRET": SECRET,
                        "CHAOS_WEBHOOK_URL": self.receiver.url, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
            self.start_scheduler()
            for number in range(1, self.rounds + 1):
                self.round(number)
            self.drain()
            self.stop_scheduler()
            self.verify()
        finally:
            for process in self.started:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=10)
            self.receiver.stop()
        self.report.seconds = time.monotonic() - began
        return self.report

    def round(self, number: int) -> None:
        phase = self.kills.choice(PHASES)
        batch = self.next_orders(number)
        if phase == "ingest":
            importer = self.import_orders(batch, number)
            time.sleep(self.kills.uniform(0.2, 1.2))  # python starts in ~0.5 s, then validates and writes
            self.kill(importer)
            self.import_orders(batch, number, again=True).wait(timeout=60)  # the operator runs it again
        else:
            self.import_orders(batch, number).wait(timeout=60)
        if phase == "evaluation":
            time.sleep(self.kills.uniform(0.0, EVALUATE_EVERY))  # the next evaluation run picks the batch up
        elif phase == "delivery":
            self.wait_for(lambda: self.receiver_saw_any(batch), 10)
            time.sleep(self.kills.uniform(0.0, 0.15))
        self.kill(self.scheduler)
        self.report.kills[phase] += 1
        self.expire_dead_holders()
        self.start_scheduler()
        self.log(f"round {number}: {len(batch)} orders, kill -9 during {phase}")

    def drain(self) -> None:
        """Let the last scheduler finish: everything evaluated and nothing left to deliver."""
        def settled() -> bool:
            with self.db() as db:
                dirty = db.execute("SELECT count(*) FROM customers WHERE dirty = 1").fetchone()[0]
                pending = db.execute("SELECT count(*) FROM events WHERE status = 'pending'").fetchone()[0]
            return dirty == 0 and pending == 0 and self.upgrades_settled()
        self.wait_for(settled, 90)

    # orders ----------------------------------------------------------------------------------------------------

    def next_orders(self, number: int) -> list[dict]:
        """New customers (welcome), old ones (win-back), VIP upgrades of customers already New, re-sent orders."""
        batch = []
        for n in range(self.rng.randint(15, 30)):
            contact = f"R{number:03d}-{n:02d}"
            dormant = self.rng.random() < 0.25
            days = self.rng.uniform(120, 300) if dormant else self.rng.uniform(1, 5)
            batch.append(self.order(contact, f"{contact}-1", days, self.rng.randint(20, 900)))
            self.ledger.expected[contact].append((None, "Dormant" if dormant else "New"))
            if not dormant:
                self.ledger.new_customers.append(contact)
        for contact in self.rng.sample(self.stored_new(), k=min(3, len(self.stored_new()))):
            batch.append(self.order(contact, f"{contact}-vip", 0.05, 6000))
            self.ledger.expected[contact].append(("New", "VIP"))
            self.ledger.upgraded.add(contact)
        for reference in self.rng.sample(sorted(self.ledger.orders), k=min(5, len(self.ledger.orders))):
            batch.append(dict(self.ledger.orders[reference]))  # an idempotent re-send: must change nothing
        for record in batch:
            self.ledger.add(record)
        return batch

    def order(self, contact: str, reference: str, days_ago: float, total: int) -> dict:
        at = self.now - timedelta(days=days_ago)
        return {"contactID": contact, "orderReference": reference, "orderDate": at.isoformat(),
                "total": f"{total}.{self.rng.randint(0, 99):02d}", "email": f"{contact.lower()}@example.com",
                "name": f"Customer {contact}"}

    def stored_new(self) -> list[str]:
        """Customers the store has evaluated as New and that were never upgraded: their VIP move is certain."""
        if not self.db_path.exists():
            return []
        with self.db() as db:
            new = {r[0] for r in db.execute("SELECT contact_id FROM customers WHERE segment = 'New' AND dirty = 0")}
        return sorted(c for c in self.ledger.new_customers if c in new and c not in self.ledger.upgraded)

    def upgrades_settled(self) -> bool:
        with self.db() as db:
            vip = {r[0] for r in db.execute("SELECT contact_id FROM customers WHERE segment = 'VIP'")}
        return self.ledger.upgraded <= vip

    def import_orders(self, batch: list[dict], number: int, again: bool = False) -> subprocess.Popen:
        path = self.work / f"orders-{number:03d}.jsonl"
        if not again:
            path.write_text("".join(json.dumps(r) + "\n" for r in batch), encoding="utf-8")
        return self.spawn(f"import-{number:03d}{'-again' if again else ''}",
                          [sys.executable, "-m", "worker", "import-orders", str(path)])

    # processes -------------------------------------------------------------------------------------------------

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        with (self.work / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def start_scheduler(self) -> None:
        self.schedulers += 1
        self.scheduler = self.spawn(f"scheduler-{self.schedulers:03d}", [sys.executable, "-m", "worker", "scheduler"])

    def stop_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.send_signal(signal.SIGTERM)
        if self.scheduler.wait(timeout=30) != 0:
            self.report.problems.append(f"the last scheduler exited with {self.scheduler.returncode} on SIGTERM")

    @staticmethod
    def kill(process: subprocess.Popen | None) -> None:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
        if process is not None:
            process.wait(timeout=10)

    def expire_dead_holders(self) -> None:
        """What 20 seconds would do: the dead processes' leases and claims lapse (and only theirs)."""
        dead = [p.pid for p in self.started if p.poll() is not None]
        with self.db() as db:
            for pid in dead:
                db.execute("UPDATE leases SET expires_at = 0 WHERE holder LIKE ?", (f"%:{pid}:%",))
                db.execute("UPDATE events SET claimed_until = 0 WHERE claimed_by LIKE ?", (f"%:{pid}:%",))

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        return _Closing(conn)

    def receiver_saw_any(self, batch: list[dict]) -> bool:
        contacts = {r["contactID"] for r in batch}
        return any(r.json and r.json.get("customer", {}).get("contactID") in contacts for r in self.receiver.requests)

    @staticmethod
    def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.05)
        return False

    # the verdict -----------------------------------------------------------------------------------------------

    def verify(self) -> None:
        report, problems = self.report, self.report.problems
        with self.db() as db:
            report.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            transitions = db.execute("SELECT contact_id, from_segment, to_segment FROM transitions "
                                     "ORDER BY contact_id, occurred_at, detected_at").fetchall()
            events = db.execute("SELECT id, contact_id, campaign, status FROM events ORDER BY seq").fetchall()
            customers = {r[0]: r[1:] for r in db.execute(
                "SELECT contact_id, order_count, total_cents, first_order_at, last_order_at FROM customers")}
            from_orders = {r[0]: r[1:] for r in db.execute(
                "SELECT contact_id, count(*), sum(total_cents), min(order_at), max(order_at) FROM orders "
                "WHERE cancelled = 0 GROUP BY contact_id")}
        if report.integrity != "ok":
            problems.append(f"PRAGMA integrity_check: {report.integrity}")
        self.check_transitions(transitions)
        self.check_events(events)
        self.check_aggregates(customers, from_orders)
        report.customers, report.orders = len(self.ledger.expected), len(self.ledger.orders)
        report.transitions, report.events = len(transitions), len(events)

    def check_transitions(self, transitions: list[tuple]) -> None:
        recorded: dict[str, list[tuple]] = defaultdict(list)
        for contact, from_segment, to_segment in transitions:
            recorded[contact].append((from_segment, to_segment))
        for contact in sorted(set(recorded) | set(self.ledger.expected)):
            if recorded.get(contact, []) != self.ledger.expected.get(contact, []):
                self.report.problems.append(f"{contact}: transitions {recorded.get(contact, [])}, "
                                            f"expected {self.ledger.expected.get(contact, [])}")

    def check_events(self, events: list[tuple]) -> None:
        report = self.report
        expected = Counter((c, CAMPAIGN_OF[to]) for c, moves in self.ledger.expected.items() for _, to in moves)
        queued = Counter((contact, campaign) for _, contact, campaign, _ in events)
        if queued != expected:
            report.problems.append(f"events queued differ from expected: extra {queued - expected}, "
                                   f"missing {expected - queued}")
        requests = self.receiver.requests
        report.requests = len(requests)
        report.retried = sum(1 for r in requests if r.status == 503)
        whole = []
        for request in requests:
            if len(request.body) < int(request.headers["Content-Length"] or 0):
                report.cut_off += 1  # the sender was killed mid-body: n8n would reject it, and it is re-sent
                continue
            whole.append(request)
            if not request.signature_valid or request.json is None or \
                    request.json.get("id") != request.headers["webhook-id"]:
                report.problems.append(f"request {request.headers['webhook-id']}: body id or signature wrong")
        delivered = Counter(r.headers["webhook-id"] for r in whole if 200 <= r.status < 300)
        report.duplicates = {event_id: n for event_id, n in delivered.items() if n > 1}
        # Outcomes are recorded as soon as each send returns: a kill can only leave the sends in flight unrecorded.
        report.duplicate_bound = sum(report.kills.values()) * MAX_CONCURRENCY
        copies = sum(n - 1 for n in report.duplicates.values())
        if copies > report.duplicate_bound:
            report.problems.append(f"{copies} extra copies delivered, more than the {report.duplicate_bound} sends "
                                   f"that can be in flight at {sum(report.kills.values())} kills")
        # A customer upgraded to VIP before its welcome went out is no longer New: the re-check before the send
        # supersedes that welcome (the VIP event tells the news). Any other event must be delivered.
        may_be_superseded = {event_id for event_id, contact, campaign, _ in events
                             if campaign == CAMPAIGN_OF["New"] and contact in self.ledger.upgraded}
        report.superseded = sum(1 for event_id, _, _, status in events
                                if status == "superseded" and event_id in may_be_superseded)
        report.lost = [event_id for event_id, _, _, status in events
                       if delivered[event_id] == 0 and not (status == "superseded" and event_id in may_be_superseded)]
        for event_id, _, _, status in events:
            if status != "delivered" and not (status == "superseded" and event_id in may_be_superseded):
                report.problems.append(f"{event_id} ended {status}")
        unknown = set(delivered) - {e[0] for e in events}
        if unknown:
            report.problems.append(f"the receiver got events the store does not know: {sorted(unknown)[:5]}")
        if report.lost:
            report.problems.append(f"{len(report.lost)} event(s) never delivered: {report.lost[:5]}")

    def check_aggregates(self, customers: dict[str, tuple], from_orders: dict[str, tuple]) -> None:
        ledger: dict[str, list[dict]] = defaultdict(list)
        for record in self.ledger.orders.values():
            ledger[record["contactID"]].append(record)
        for contact, records in ledger.items():
            times = [_ms(r["orderDate"]) for r in records]
            cents = sum(int(Decimal(r["total"]) * 100) for r in records)
            recomputed = (len(records), cents, min(times), max(times))
            if customers.get(contact) != recomputed:
                self.report.problems.append(f"{contact}: aggregates {customers.get(contact)}, orders say {recomputed}")
            if from_orders.get(contact) != recomputed:
                self.report.problems.append(f"{contact}: orders table {from_orders.get(contact)} != sent {recomputed}")
        if set(customers) != set(ledger):
            self.report.problems.append(f"customers differ: {sorted(set(customers) ^ set(ledger))[:5]}")


class _Closing:
    """sqlite3's context manager commits but does not close; this one closes."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _ms(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


def run_chaos(rounds: int, seed: int, work_dir: Path, log: Callable[[str], None] = print) -> ChaosReport:
    return Harness(rounds, seed, work_dir, log).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, help="keep the database and the processes' logs here")
    args = parser.parse_args(argv)
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        report = run_chaos(args.rounds, args.seed, args.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="chaos-") as work:
            report = run_chaos(args.rounds, args.seed, Path(work))
    print(report.summary())
    return 1 if report.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
