"""`python -m worker demo` as a newcomer runs it: a process on a free port with the shipped rules.yaml and no
settings but a temporary DATABASE_URL. What it prints must work, its 90 days of history must fill the dashboard, and
its events must go to its own receiver only; the built-in receiver itself checks signatures."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from tests.server_process import ROOT, free_port, running_server
from worker.cli import main
from worker.demo_receiver import DemoReceiver
from worker.serialize import event_body
from worker.store import open_store
from worker.store.base import Order
from worker.transport import sign_headers

CUSTOMERS = "200"
DRAIN_SECONDS = 20
N8N_DEFAULT = ("127.0.0.1", 5678)  # where the shipped rules.yaml sends events when N8N_WEBHOOK_URL is unset
# Settings a developer's shell may hold; the demo must work without any of them.
SETTINGS = ("DATABASE_URL", "RULES_FILE", "API_KEYS", "ADMIN_API_KEYS", "PORT", "N8N_WEBHOOK_URL", "WEBHOOK_SECRET",
            "N8N_HEADER_TOKEN", "WEBHOOK_ALLOWED_HOSTS", "SESSION_SECRET", "DASHBOARD_INSECURE_COOKIE", "LOG_LEVEL",
            "LOG_FORMAT")
SECRET = "whsec_" + "ZGVtby1yZWNlaXZlci10ZXN0LXNlY3JldC0wMTIz"


def demo_env(database_url: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS}
    return {**env, "DATABASE_URL": database_url, "LOG_FORMAT": "text"}


def run_demo(database_url: str, *args: str) -> str:
    """The demo with --no-serve: what it printed."""
    done = subprocess.run([sys.executable, "-m", "worker", "demo", "--customers", CUSTOMERS, "--no-serve", *args],
                          cwd=ROOT, env=demo_env(database_url), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def printed(output: str, label: str) -> str:
    """The first word after `label: ` in the demo's lines."""
    found = re.search(rf"^{re.escape(label)}: (\S+)", output, re.MULTILINE)
    assert found, f"no '{label}:' line in:\n{output}"
    return found.group(1)


def line_with(output: str, text: str) -> str:
    return next(line.strip() for line in output.splitlines() if text in line)


@dataclass
class Demo:
    base: str
    port: int
    database_url: str
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def wait_for(self, text: str, seconds: float = DRAIN_SECONDS) -> str:
        deadline = time.monotonic() + seconds
        while text not in self.output:
            if time.monotonic() > deadline:
                pytest.fail(f"the demo never printed {text!r}:\n{self.output}")
            time.sleep(0.1)
        return self.output


@contextmanager
def serving_demo(database_url: str, log: Path, *args: str) -> Iterator[Demo]:
    port = free_port()
    command = [sys.executable, "-m", "worker", "demo", "--customers", CUSTOMERS, "--port", str(port), *args]
    with running_server(command, demo_env(database_url), log, port) as base:
        demo = Demo(base, port, database_url, log)
        demo.wait_for("Stop with Ctrl-C")  # the last of the lines printed once it answers
        yield demo


@pytest.fixture(scope="module")
def n8n_default_port() -> Iterator[socket.socket | None]:
    """A listener where the shipped rules would send events with no N8N_WEBHOOK_URL; None if something has it."""
    listener = socket.socket()
    try:
        listener.bind(N8N_DEFAULT)
    except OSError:
        listener.close()
        yield None
        return
    listener.listen()
    listener.setblocking(False)
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, n8n_default_port: socket.socket | None) -> Iterator[Demo]:
    """One demo on a new database, served until the module ends, once the history's events have gone out."""
    folder = tmp_path_factory.mktemp("demo")
    with serving_demo(f"sqlite:///{folder}/demo.db", folder / "demo.log") as running:
        running.wait_for("queued events went through")
        yield running


def signed_in(demo: Demo, key: str) -> requests.Session:
    browser = requests.Session()
    page = browser.get(f"{demo.base}/signin", timeout=5)
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = browser.post(f"{demo.base}/signin", data={"csrf_token": token, "api_key": key}, allow_redirects=False,
                          timeout=5)
    assert (answer.status_code, answer.headers.get("Location")) == (302, "/"), answer.text
    return browser


def test_the_printed_dashboard_url_and_key_sign_in_and_call_the_api(demo):
    url, key = printed(demo.output, "Dashboard"), printed(demo.output, "API key")
    assert url == f"http://127.0.0.1:{demo.port}/"
    assert requests.get(f"{url}signin", timeout=5).status_code == 200
    signed_in(demo, key)
    assert "dashboard sign-in with a write key" in demo.output  # replay works from the dashboard
    segments_line = line_with(demo.output, "/api/segments")
    assert f"'Authorization: Bearer {key}'" in segments_line
    answer = requests.get(f"{demo.base}/api/segments", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert answer.status_code == 200 and answer.json()["customers"] == int(CUSTOMERS)


def test_the_printed_command_lines_reach_the_demos_database(demo):
    show = line_with(demo.output, "customers show")
    assert show.startswith(f"DATABASE_URL={demo.database_url} ")
    done = subprocess.run(["bash", "-c", show], cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in os.environ.items() if k not in SETTINGS})
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["data"]["contactID"] == show.split()[-1]


def test_the_history_fills_the_transitions_chart_of_the_last_90_days(demo):
    overview = signed_in(demo, printed(demo.output, "API key")).get(f"{demo.base}/", timeout=5).text
    rows = re.findall(r'<tr data-day="([\d-]+)"><td>[^<]*</td><td class="num">(\d+)</td><td>([^<]*)</td>', overview)
    days = sorted(date.fromisoformat(day) for day, _, _ in rows)
    today = datetime.now(timezone.utc).date()
    assert len(days) >= 45, rows
    assert days[0] <= today - timedelta(days=80) and days[-1] >= today - timedelta(days=10)
    detail = " ".join(text for _, _, text in rows)
    assert all(f"to {segment}" in detail for segment in ("VIP", "Dormant", "New", "Active"))


def test_history_events_go_to_the_built_in_receiver_and_undone_moves_are_superseded(demo):
    counts = open_store(demo.database_url).event_counts(datetime.now(timezone.utc))
    assert counts["pending"] == 0 and counts["dead"] == 0
    assert counts["delivered"] > 0 and counts["superseded"] > 0
    output = demo.output
    one_by_one = len(re.findall(r"worker\.demo_receiver: n8n would get: \S+  C-\d{5}  ", output))
    summed = sum(int(n) for n in re.findall(r"worker\.demo_receiver: n8n would get (\d+) events", output))
    assert one_by_one + summed == counts["delivered"]  # each delivered event arrived, its signature checked
    assert f"{int(counts['superseded'])} superseded" in line_with(output, "queued events went through")
    assert "WARNING" not in output


def test_without_settings_nothing_is_sent_to_n8ns_default_port(demo, n8n_default_port):
    if n8n_default_port is None:
        pytest.skip(f"{N8N_DEFAULT[0]}:{N8N_DEFAULT[1]} is in use here: cannot watch it")
    with pytest.raises(BlockingIOError):
        n8n_default_port.accept()
    assert "localhost:5678" not in demo.output


def test_it_listens_on_127_0_0_1_only(demo):
    assert f"serving on http://127.0.0.1:{demo.port} " in demo.output
    with pytest.raises(OSError) as refused:
        socket.create_connection(("127.0.0.2", demo.port), timeout=2).close()  # loopback, but another address
    assert refused.value.errno in (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EADDRNOTAVAIL, None)


@dataclass(frozen=True)
class TwoRuns:
    """A new database loaded by the demo (--no-serve) twice: what each run printed, and the store after each."""

    database_url: str
    first: str
    second: str
    runs: tuple[int, int]
    transitions: tuple[int, int]
    customers: int


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    database_url = f"sqlite:///{tmp_path_factory.mktemp('rerun')}/demo.db"
    store = open_store(database_url)
    first = run_demo(database_url)
    after_first = store.last_run().runs, store.transition_count()
    second = run_demo(database_url)
    after_second = store.last_run().runs, store.transition_count()
    customers = store.count_customers()
    store.close()
    return TwoRuns(database_url, first, second, (after_first[0], after_second[0]),
                   (after_first[1], after_second[1]), customers)


def test_a_second_run_prints_the_same_key_and_adds_no_history(two_runs):
    assert printed(two_runs.first, "API key").startswith("demo-")
    assert printed(two_runs.second, "API key") == printed(two_runs.first, "API key")
    assert two_runs.runs[0] == 91  # the baseline 90 days ago, then one run a day up to now
    assert two_runs.runs[1] == two_runs.runs[0] + 1  # then evaluated once, now
    assert two_runs.customers == int(CUSTOMERS) and "(0 new)" in two_runs.second
    assert two_runs.transitions[1] - two_runs.transitions[0] <= 5  # at most a midnight's moves, not the history


def test_key_chooses_the_api_key_over_the_one_kept_in_the_database(two_runs, tmp_path):
    kept, chosen = printed(two_runs.second, "API key"), "chosen-key-for-the-demo-0123"
    with serving_demo(two_runs.database_url, tmp_path / "demo.log", "--key", chosen) as running:
        assert printed(running.output, "API key") == chosen
        ask = f"{running.base}/api/segments"
        assert requests.get(ask, headers={"X-API-Key": chosen}, timeout=5).status_code == 200
        assert requests.get(ask, headers={"X-API-Key": kept}, timeout=5).status_code == 401


def test_the_demo_refuses_a_database_that_holds_other_customers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    database_url = f"sqlite:///{tmp_path}/segments.db"
    store = open_store(database_url)
    store.upsert_orders([Order("REAL-1", "INV-1", datetime(2026, 1, 5, tzinfo=timezone.utc), 1000)],
                        datetime(2026, 1, 5, tzinfo=timezone.utc))
    result = CliRunner().invoke(main, ["demo", "--no-serve", "--customers", "5"],
                                env={"DATABASE_URL": database_url, "RULES_FILE": str(ROOT / "rules.yaml")})
    assert result.exit_code == 1 and "that are not the demo's" in result.output
    assert store.count_customers() == 1


def test_the_demo_refuses_rules_that_would_send_its_events_off_the_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rules = tmp_path / "rules.yaml"
    rules.write_text((ROOT / "rules.yaml").read_text().replace(
        "${N8N_WEBHOOK_URL:-http://localhost:5678/webhook}/segment-vip", "https://n8n.example.com/webhook/vip"))
    database_url = f"sqlite:///{tmp_path}/demo.db"
    result = CliRunner().invoke(main, ["demo", "--customers", "5", "--port", str(free_port())],
                                env={"DATABASE_URL": database_url, "RULES_FILE": str(rules)})
    assert result.exit_code == 1
    assert "webhook(s) vip send to their own URLs" in result.output and "--n8n URL" in result.output
    assert open_store(database_url).count_customers() == 0  # refused before anything was loaded


def test_the_demo_refuses_a_database_that_has_run_without_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    database_url = f"sqlite:///{tmp_path}/segments.db"
    store = open_store(database_url)
    store.mark_first_run(datetime(2026, 1, 5, tzinfo=timezone.utc))  # a deployment evaluated, with no customers yet
    result = CliRunner().invoke(main, ["demo", "--no-serve", "--customers", "5"],
                                env={"DATABASE_URL": database_url, "RULES_FILE": str(ROOT / "rules.yaml")})
    assert result.exit_code == 1 and "not the demo's" in result.output
    assert store.count_customers() == 0


def post_event(receiver: DemoReceiver, body: str, secret: str) -> int:
    headers = sign_headers(secret, "msg_1", datetime.now(timezone.utc), body.encode())
    return requests.post(f"{receiver.url}/segment-vip", data=body.encode(), headers=headers, timeout=5).status_code


def test_the_receiver_answers_200_to_signed_events_and_401_to_others(caplog):
    caplog.set_level(logging.INFO, logger="worker.demo_receiver")
    body = event_body("evt_1", "segment.entered", "vip", datetime(2026, 2, 1, tzinfo=timezone.utc),
                      "2026-02-01T00:05:00.000Z", ("Active", "VIP"), {"contactID": "C-00042"}, "v1")
    with DemoReceiver(SECRET) as receiver:
        assert post_event(receiver, body, SECRET) == 200
        assert post_event(receiver, body, "whsec_" + "b3RoZXItc2VjcmV0LW9mLTMyLWJ5dGVzLTAxMjM0") == 401
    reported = [r.getMessage() for r in caplog.records if "n8n would get" in r.getMessage()]
    assert reported == ["n8n would get: vip  C-00042  Active -> VIP  (occurred 2026-02-01)"]
    assert any("signature does not verify" in r.getMessage() for r in caplog.records)
