"""Against a real n8n (opt-in: --run-n8n; ../shared/n8n-peer/setup.sh installs n8n 1.123 once, ~5 min).

Our community node package (n8n/nodes, built if need be) is loaded into a fresh n8n with N8N_CUSTOM_EXTENSIONS.
A workflow "Segment Worker Trigger -> No Operation" and its Segment Worker API credential are imported with n8n's
CLI and activated; then, with the worker's API and n8n both running as real processes on 127.0.0.1:

- activation makes the trigger subscribe itself (POST /api/webhooks) with its production webhook URL;
- a first order's welcome, delivered by `python -m worker deliver`, runs the workflow once, the trigger's one item
  being the event exactly as the worker sent it (read back from n8n's own SQLite);
- a delivery signed with another secret is answered 401 and runs nothing;
- deactivating the workflow through n8n's REST API, as the editor does, deletes the subscription on the worker.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from tests.conftest import ADMIN_KEY, OUTBOX_SECRET, READ_KEY
from tests.factories import rules_text
from tests.receiver import Receiver
from tests.server_process import ROOT, free_port, running_server, stop

pytestmark = pytest.mark.n8n

PEER = Path(__file__).resolve().parents[2] / "shared" / "n8n-peer"
PACKAGE = ROOT / "n8n" / "nodes"
BUILT = ("dist/nodes/SegmentWorkerTrigger/SegmentWorkerTrigger.node.js",
         "dist/nodes/SegmentWorker/SegmentWorker.node.js", "dist/credentials/SegmentWorkerApi.credentials.js")

WORKFLOW_ID = "swLiveTrigger01"
CREDENTIAL_ID = "swLiveApiCred01"
WEBHOOK_ID = "5e9f0000-0000-4000-8000-00000000a11e"
TRIGGER = "Segment Worker Trigger"
NOOP = "No Operation, do nothing"
OWNER = {"email": "owner@example.com", "firstName": "Live", "lastName": "Test", "password": "Live-test-passw0rd"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

# n8n with the peer's settings (env.sh: loopback only, nothing phones home), but its own user folder (a fresh
# database), port and extensions. `exec` so that the process the test started is n8n itself.
N8N = ('. "$TEST_N8N_PEER/env.sh" && export N8N_USER_FOLDER="$TEST_N8N_USER_FOLDER" '
       'N8N_CUSTOM_EXTENSIONS="$TEST_N8N_EXTENSIONS" && exec n8n "$@"')
CLI_SECONDS = 120  # one n8n CLI command; the first also runs the migrations of the fresh database
START_SECONDS = 120
WAIT_SECONDS = 30  # for a delivery, an execution, a subscription to show

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], detail: Callable[[], str] = str, seconds: float = WAIT_SECONDS,
             every: float = 0.2) -> T:
    """probe() until it gives something else than None; fails with detail() after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {seconds:g}s\n{detail()}")
        time.sleep(every)


# --- n8n ------------------------------------------------------------------------------------------------------

def peer_install_dir() -> Path:
    """$N8N_PEER_DIR as env.sh resolves it (default ~/.cache/n8n-peer); fails the test when n8n is not there."""
    resolved = subprocess.run(["bash", "-c", '. "$1/env.sh" && printf %s "$N8N_PEER_DIR"', "bash", str(PEER)],
                              capture_output=True, text=True, timeout=10, check=True).stdout
    install = Path(resolved)
    if not (install / "node_modules" / ".bin" / "n8n").exists():
        pytest.fail(f"n8n is not installed in {install}: run {PEER / 'setup.sh'} once (~5 min), then run this again")
    return install


def build_package(install: Path) -> None:
    """Build n8n/nodes when dist/ is missing or older than its sources (npm ci first if node_modules is missing)."""
    built = [PACKAGE / name for name in BUILT]
    sources = [*PACKAGE.glob("nodes/**/*.ts"), *PACKAGE.glob("credentials/*.ts"), PACKAGE / "package.json"]
    newest_source = max(p.stat().st_mtime for p in sources)
    if all(p.exists() and p.stat().st_mtime >= newest_source for p in built):
        return
    script = "npm run --silent build"
    if not (PACKAGE / "node_modules").exists():
        script = f"npm ci --prefer-offline --no-audit --no-fund && {script}"
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:{install / 'node' / 'bin'}"}  # any node >= 20 will do
    done = subprocess.run(["bash", "-c", script], cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not all(p.exists() for p in built):
        pytest.fail(f"building {PACKAGE} failed ({script}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def unflatten(flat: list[Any]) -> Any:
    """n8n keeps execution data in `flatted` form: objects, arrays and strings in one list, a reference to another
    entry written as its index in a string."""
    done: dict[int, Any] = {}

    def value(index: int) -> Any:
        if index in done:
            return done[index]
        raw = flat[index]
        if isinstance(raw, str):
            return raw
        out: Any = {} if isinstance(raw, dict) else []
        done[index] = out
        for key, item in (raw.items() if isinstance(raw, dict) else enumerate(raw)):
            item = value(int(item)) if isinstance(item, str) else item
            if isinstance(out, dict):
                out[key] = item
            else:
                out.append(item)
        return out

    return value(0)


@dataclass(frozen=True)
class Execution:
    id: int
    workflow_id: str
    status: str
    finished: bool  # stoppedAt is set
    run_data: dict[str, Any]  # node name -> its runs

    def items(self, node: str) -> list[dict[str, Any]]:
        """The JSON of the items the node's first run put out on its first output."""
        return [item["json"] for item in self.run_data[node][0]["data"]["main"][0]]


class N8n:
    """One n8n of the test: CLI commands while stopped, then `n8n start` as a process; always stopped at the end."""

    def __init__(self, install: Path, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.log_path = folder / "n8n.log"
        self.env = {**os.environ, "N8N_PEER_DIR": str(install), "N8N_PORT": str(self.port),
                    "N8N_RUNNERS_BROKER_PORT": str(free_port()), "TEST_N8N_PEER": str(PEER),
                    "TEST_N8N_USER_FOLDER": str(folder), "TEST_N8N_EXTENSIONS": str(PACKAGE)}
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def production_url(self, webhook_id: str, path: str = "webhook") -> str:
        return f"{self.base}/webhook/{webhook_id}/{path}"

    def cli(self, *args: str, expect: str) -> str:
        done = subprocess.run(["bash", "-c", N8N, "bash", *args], env=self.env, capture_output=True, text=True,
                              timeout=CLI_SECONDS)
        said = done.stdout + done.stderr
        if done.returncode != 0 or expect not in said:
            pytest.fail(f"n8n {' '.join(args)} (exit {done.returncode}) did not say {expect!r}:\n{said[-3000:]}")
        return said

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(["bash", "-c", N8N, "bash", "start"], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while "Editor is now accessible" not in self.log() or not self._healthy():  # printed once workflows are active
            if self.process.poll() is not None:
                pytest.fail(f"n8n exited with {self.process.returncode}; {self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"n8n did not come up within {START_SECONDS}s; {self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self) -> str:
        return f"n8n's log ({self.log_path}) ends:\n{self.log()[-4000:]}"

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def executions(self, workflow_id: str) -> list[Execution]:
        """The workflow's executions, oldest first, from n8n's own SQLite (read-only; n8n may be running)."""
        database = self.folder / ".n8n" / "database.sqlite"
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as connection:
            rows = connection.execute(
                "select e.id, e.workflowId, e.status, e.stoppedAt, d.data from execution_entity e "
                "left join execution_data d on d.executionId = e.id where e.workflowId = ? order by e.id",
                (workflow_id,)).fetchall()
        return [Execution(int(eid), wid, status, stopped is not None,
                          unflatten(json.loads(data))["resultData"]["runData"] if data else {})
                for eid, wid, status, stopped, data in rows]

    def signed_in(self) -> requests.Session:
        """A session of the instance owner (set up now: the fresh database has none), as the editor has."""
        session = requests.Session()
        session.headers["browser-id"] = "test-n8n-live"
        answer = session.post(f"{self.base}/rest/owner/setup", json=OWNER, timeout=30)
        assert answer.status_code == 200, answer.text
        return session


def credential_json(worker: str) -> list[dict[str, Any]]:
    """The Segment Worker API credential as `n8n import:credentials` reads it (plain data; n8n encrypts it with
    N8N_ENCRYPTION_KEY from env.sh)."""
    return [{"id": CREDENTIAL_ID, "name": "segment worker (live test)", "type": "segmentWorkerApi",
             "data": {"baseUrl": worker, "apiKey": ADMIN_KEY}}]


def workflow_json() -> dict[str, Any]:
    """Segment Worker Trigger (campaign welcome, the credential bound by id) -> No Operation. Node types loaded
    through N8N_CUSTOM_EXTENSIONS are named CUSTOM.<name>."""
    return {
        "id": WORKFLOW_ID, "name": "segment worker trigger (live test)", "active": False,
        "nodes": [
            {"parameters": {"campaigns": ["welcome"]}, "id": str(uuid.uuid4()), "name": TRIGGER,
             "type": "CUSTOM.segmentWorkerTrigger", "typeVersion": 1, "position": [0, 0], "webhookId": WEBHOOK_ID,
             "credentials": {"segmentWorkerApi": {"id": CREDENTIAL_ID, "name": "segment worker (live test)"}}},
            {"parameters": {}, "id": str(uuid.uuid4()), "name": NOOP, "type": "n8n-nodes-base.noOp",
             "typeVersion": 1, "position": [220, 0]},
        ],
        "connections": {TRIGGER: {"main": [[{"node": NOOP, "type": "main", "index": 0}]]}},
        "settings": {"saveDataSuccessExecution": "all", "saveDataErrorExecution": "all"},
    }


# --- the worker and n8n, started once for the module ---------------------------------------------------------

@dataclass
class Live:
    worker: str  # the worker's base URL
    worker_env: dict[str, str]
    receiver: Receiver  # the rules.yaml webhook of the welcome campaign
    n8n: N8n

    def subscriptions(self) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.worker}/api/webhooks", headers=ADMIN, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def events(self) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.worker}/api/events", headers=ADMIN, params={"limit": 1000}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def event(self, event_id: str) -> dict[str, Any]:
        answer = requests.get(f"{self.worker}/api/events/{event_id}", headers=ADMIN, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def deliver(self) -> str:
        done = subprocess.run([sys.executable, "-m", "worker", "deliver"], cwd=ROOT, env=self.worker_env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    install = peer_install_dir()
    build_package(install)
    work = tmp_path_factory.mktemp("n8n-live")
    with ExitStack() as stack:
        receiver = stack.enter_context(Receiver(OUTBOX_SECRET, path="/rules-webhook"))
        rules = work / "rules.yaml"  # the webhook named n8n in the test rules is the receiver here
        rules.write_text(rules_text(first_run="emit", campaigns="  welcome: {on: {entered: New}, webhook: n8n}\n"),
                         encoding="utf-8")
        port = free_port()
        worker_env = {**os.environ, "DATABASE_URL": f"sqlite:///{work}/segments.db", "RULES_FILE": str(rules),
                      "API_KEYS": READ_KEY, "ADMIN_API_KEYS": ADMIN_KEY, "PORT": str(port),
                      "WEBHOOK_SECRET": OUTBOX_SECRET, "N8N_WEBHOOK_URL": receiver.url}
        command = [sys.executable, "-m", "worker", "api", "--workers", "1", "--host", "127.0.0.1"]
        worker = stack.enter_context(running_server(command, worker_env, work / "worker.log", port))

        n8n = N8n(install, work / "n8n")
        n8n.folder.mkdir()
        (work / "credentials.json").write_text(json.dumps(credential_json(worker)), encoding="utf-8")
        (work / "workflow.json").write_text(json.dumps([workflow_json()]), encoding="utf-8")
        n8n.cli("import:credentials", f"--input={work / 'credentials.json'}", expect="imported 1 credential")
        n8n.cli("import:workflow", f"--input={work / 'workflow.json'}", expect="imported 1 workflow")
        n8n.cli("update:workflow", f"--id={WORKFLOW_ID}", "--active=true", expect=f"workflow with ID: {WORKFLOW_ID}")
        stack.callback(n8n.stop)
        n8n.start()
        yield Live(worker, worker_env, receiver, n8n)


# --- the tests, in the order of a workflow's life --------------------------------------------------------------

def test_activation_subscribes_the_trigger_with_its_production_url(live: Live) -> None:
    [subscription] = wait_for("subscription", lambda: live.subscriptions() or None, live.n8n.log_tail)
    assert subscription["url"] == live.n8n.production_url(WEBHOOK_ID)
    assert subscription["campaigns"] == ["welcome"]
    assert "segment worker trigger (live test)" in subscription["description"]
    assert "Unrecognized node type" not in live.n8n.log()
    print(f"\nsubscription {subscription['id']} for {subscription['url']}")


def test_a_welcome_runs_the_workflow_with_the_event_as_the_trigger_item(live: Live) -> None:
    [subscription] = live.subscriptions()
    before = live.n8n.executions(WORKFLOW_ID)
    contact = f"C-LIVE-{uuid.uuid4().hex[:8]}"
    order = {"contactID": contact, "orderReference": f"{contact}-ORD-1", "total": "120.00", "name": "Live Test",
             "email": "live@example.com", "orderDate": (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()}
    posted = requests.post(f"{live.worker}/api/orders", json=order, headers=ADMIN, timeout=30)
    assert posted.status_code == 200, posted.text
    assert posted.json()["transitions"] == 1

    ours = [e for e in live.events() if e["contactID"] == contact]
    assert sorted(e["webhook"] for e in ours) == sorted(["n8n", f"subscription:{subscription['id']}"])
    [copy] = [e for e in ours if e["webhook"].startswith("subscription:")]
    assert copy["campaign"] == "welcome"

    def delivered() -> dict[str, Any] | None:
        said = live.deliver()
        event = live.event(copy["id"])
        assert event["status"] in ("pending", "delivered"), f"{event}\n{said}"
        return event if event["status"] == "delivered" else None

    event = wait_for("delivery to n8n", delivered, lambda: json.dumps(live.event(copy["id"])), every=1)
    assert event["lastStatus"] == 200

    def finished() -> Execution | None:
        new = [e for e in live.n8n.executions(WORKFLOW_ID) if e.id not in {b.id for b in before}]
        return new[0] if new and new[0].finished else None

    execution = wait_for("finished execution", finished, live.n8n.log_tail)
    assert execution.status == "success", execution
    assert len(live.n8n.executions(WORKFLOW_ID)) == len(before) + 1
    [item] = execution.items(TRIGGER)
    assert item["id"] == copy["id"]  # the webhook-id of a one-event delivery is the event's id
    assert (item["campaign"], item["type"], item["customer"]["contactID"]) == ("welcome", "segment.entered", contact)
    assert item["transition"] == {"from": None, "to": "New"}
    # The same event as the rules.yaml webhook got, but for its own id: the copy of the subscription.
    [rules_delivery] = [r for r in live.receiver.wait_for(1) if r.json and r.json["customer"]["contactID"] == contact]
    assert rules_delivery.signature_valid
    assert item == {**rules_delivery.json, "id": copy["id"]}
    assert execution.items(NOOP) == [item]
    print(f"\nexecution {execution.id} ({execution.status}) of event {copy['id']} for {contact}")


def test_a_forged_delivery_is_refused_and_runs_nothing(live: Live) -> None:
    before = live.n8n.executions(WORKFLOW_ID)
    body = json.dumps({"id": "evt_forged", "type": "segment.entered", "campaign": "welcome",
                       "customer": {"contactID": "C-FORGED"}}, separators=(",", ":"))
    now = datetime.now(timezone.utc)
    forger = Webhook("whsec_" + base64.b64encode(b"not-the-subscription-secret").decode())
    headers = {"content-type": "application/json", "webhook-id": "evt_forged", "webhook-timestamp": str(int(
        now.timestamp())), "webhook-signature": forger.sign("evt_forged", now, body)}
    answer = requests.post(live.n8n.production_url(WEBHOOK_ID), data=body.encode(), headers=headers, timeout=30)
    assert answer.status_code == 401, answer.text
    assert "error" in answer.json()
    time.sleep(1)  # an execution, were one started, would be in the database by now
    assert [e.id for e in live.n8n.executions(WORKFLOW_ID)] == [e.id for e in before]
    print(f"\nforged delivery: HTTP {answer.status_code} {answer.text}")


def test_deactivating_the_workflow_deletes_the_subscription(live: Live) -> None:
    assert len(live.subscriptions()) == 1
    session = live.n8n.signed_in()
    answer = session.post(f"{live.n8n.base}/rest/workflows/{WORKFLOW_ID}/deactivate", json={}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["active"] is False
    wait_for("empty subscription list", lambda: True if not live.subscriptions() else None, live.n8n.log_tail)
    print("\nworkflow deactivated: the worker lists no subscription")
