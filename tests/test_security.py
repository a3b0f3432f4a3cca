"""No one gets in and nothing leaks: keys compared in constant time, bodies limited, CORS closed unless configured,
webhook hosts restricted, security headers everywhere, and no secret in any log line, error or health answer
across a whole story of ingest, evaluation, failing deliveries (a receiver echoing our headers) and bad rules."""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rules import RulesError
from tests.conftest import ADMIN_KEY, READ_KEY, RULES_YAML, FixedClock
from tests.factories import rules_text
from worker.api import create_app
from worker.api.auth import key_matches
from worker.logs import JsonFormatter, RedactingFilter, configure_logging, resolve_format, secret_values
from worker.rules_file import RulesSource, load_rules_file
from worker.scheduler import Jobs
from worker.settings import Settings, SettingsError

# --- keys ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("presented", ["key-one", "key-two", "key-three", "wrong", "k", "key-three-and-more"])
def test_a_key_is_compared_with_every_configured_key_in_constant_time(monkeypatch, presented):
    compared = []
    real = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr("worker.api.auth.hmac.compare_digest", compare_digest)

    matched = key_matches(presented, ("key-one", "key-two", "key-three"))

    assert matched == (presented in ("key-one", "key-two", "key-three"))
    assert compared == [b"key-one", b"key-two", b"key-three"], "no early exit tells which key was close"


def test_read_and_admin_keys_are_distinct_on_every_write_route(app, client):
    writes = [(method, rule.rule) for rule in app.url_map.iter_rules() if rule.rule.startswith("/api")
              for method in rule.methods - {"HEAD", "OPTIONS", "GET"}]
    assert len(writes) >= 3
    for method, rule in writes:
        url = rule.replace("<event_id>", "x").replace("<contact_id>", "x")
        response = client.open(url, method=method, headers={"X-API-Key": READ_KEY}, json=[])
        assert response.status_code == 403, (method, rule)
        assert client.open(url, method=method, headers={"X-API-Key": ADMIN_KEY}, json=[]).status_code != 403


# --- request bodies -----------------------------------------------------------------------------------------


@pytest.fixture
def small_app(settings, store, rules_source, clock):
    return create_app(replace(settings, max_request_bytes=2048), store=store, rules_source=rules_source, clock=clock)


def big_orders(count: int = 100) -> bytes:
    order = {"contactID": "C-1", "orderReference": "R", "orderDate": "2026-01-01", "total": "1.00"}
    return json.dumps([order] * count).encode()


def test_a_body_over_the_limit_is_refused_with_413_and_nothing_is_stored(small_app, store, admin_headers):
    response = small_app.test_client().post("/api/orders", data=big_orders(), headers=admin_headers,
                                            content_type="application/json")

    assert response.status_code == 413
    assert response.get_json() == {"error": "the body is larger than 2048 bytes"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert store.count_customers() == 0


@pytest.mark.parametrize("path", ["/api/orders", "/api/rules/preview"])
def test_a_chunked_body_over_the_limit_is_refused_not_cut_short(small_app, store, admin_headers, path):
    response = small_app.test_client().post(
        path, input_stream=io.BytesIO(big_orders()), content_type="application/json",
        headers={**admin_headers, "Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})

    assert response.status_code == 413
    assert store.count_customers() == 0


def test_a_strangers_body_is_never_read(small_app):
    response = small_app.test_client().post("/api/orders", data=b"x" * 10_000)

    assert response.status_code == 401


# --- CORS ---------------------------------------------------------------------------------------------------

ORIGIN = "https://crm.example.com"


def cors_app(settings, store, rules_source, clock, origins: str):
    env = {**settings.env, "CORS_ORIGINS": origins}
    configured = replace(settings, cors_origins=Settings.from_env(env).cors_origins, env=env)
    return create_app(configured, store=store, rules_source=rules_source, clock=clock).test_client()


def test_cors_is_off_unless_configured(client, read_headers):
    response = client.get("/api/customers", headers={**read_headers, "Origin": ORIGIN})
    preflight = client.options("/api/customers", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})

    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert preflight.status_code == 401 and "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_allows_exactly_the_configured_origins(settings, store, rules_source, clock, read_headers):
    client = cors_app(settings, store, rules_source, clock, f"{ORIGIN}, http://localhost:3000")

    allowed = client.get("/api/customers", headers={**read_headers, "Origin": ORIGIN})
    other = client.get("/api/customers", headers={**read_headers, "Origin": "https://evil.example.com"})
    refused = client.get("/api/customers", headers={"Origin": ORIGIN})
    preflight = client.options("/api/orders", headers={"Origin": "http://localhost:3000",
                                                       "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "authorization, content-type"})
    stranger_preflight = client.options("/api/orders", headers={"Origin": "https://evil.example.com",
                                                                "Access-Control-Request-Method": "POST"})

    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in allowed.headers["Vary"]
    assert "Access-Control-Allow-Origin" not in other.headers
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert {"authorization", "content-type", "x-api-key"} <= {
        h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert stranger_preflight.status_code == 401 and "Access-Control-Allow-Origin" not in stranger_preflight.headers
    for response in (allowed, preflight):
        assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize("origins", ["*", "crm.example.com", "https://crm.example.com/app", "ftp://x.example.com"])
def test_cors_origins_must_be_exact_origins(origins):
    with pytest.raises(SettingsError, match="CORS_ORIGINS"):
        Settings.from_env({"CORS_ORIGINS": origins})


# --- webhook hosts ------------------------------------------------------------------------------------------

HOOK_ENV = {"WEBHOOK_SECRET": "whsec-test-secret-do-not-log"}


def rules_at(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text().replace("${N8N_WEBHOOK_URL}", url), encoding="utf-8")
    return path


def test_webhooks_may_go_anywhere_over_http_while_no_allow_list_is_set(tmp_path):
    assert load_rules_file(rules_at(tmp_path, "https://n8n.example.com/webhook/x"), HOOK_ENV).webhooks


def test_the_allow_list_refuses_other_hosts_naming_webhook_and_host(tmp_path):
    env = {**HOOK_ENV, "WEBHOOK_ALLOWED_HOSTS": "n8n.example.com, hooks.internal"}
    assert load_rules_file(rules_at(tmp_path, "https://N8N.example.com./webhook/x"), env).webhooks

    with pytest.raises(RulesError) as refused:
        load_rules_file(rules_at(tmp_path, "https://collector.evil.example/webhook/x"), env)

    assert refused.value.problems == [
        "webhooks.n8n: host 'collector.evil.example' is not allowed; WEBHOOK_ALLOWED_HOSTS permits only "
        "n8n.example.com, hooks.internal"]


def test_a_running_worker_keeps_its_rules_when_an_env_change_points_a_webhook_elsewhere(tmp_path):
    path = rules_at(tmp_path, "${HOOK_URL}")
    env = {**HOOK_ENV, "WEBHOOK_ALLOWED_HOSTS": "n8n.example.com", "HOOK_URL": "https://n8n.example.com/x"}
    source = RulesSource(path, env)
    good = source.current()

    env["HOOK_URL"] = "https://elsewhere.example.com/x"
    os.utime(path, (path.stat().st_mtime + 1, path.stat().st_mtime + 1))

    assert source.current() is good
    assert "host 'elsewhere.example.com' is not allowed" in source.error


@pytest.mark.parametrize("url", ["ftp://n8n.example.com/x", "file:///etc/passwd", "gopher://n8n.example.com/",
                                 "javascript:alert(1)", "//n8n.example.com/x"])
def test_webhook_urls_are_http_or_https_only(tmp_path, url):
    with pytest.raises(RulesError, match="http:// or https://"):
        load_rules_file(rules_at(tmp_path, url), HOOK_ENV)


@pytest.mark.parametrize("hosts", ["https://n8n.example.com", "n8n.example.com:5678", "user@n8n.example.com"])
def test_the_allow_list_holds_host_names_only(hosts):
    with pytest.raises(SettingsError, match="WEBHOOK_ALLOWED_HOSTS"):
        Settings.from_env({"WEBHOOK_ALLOWED_HOSTS": hosts})


def test_a_previewed_candidate_cannot_read_a_secret_out_of_the_environment(settings, store, rules_source, clock):
    env = {**settings.env, "WEBHOOK_SECRET": STORY_SECRET, "N8N_HEADER_TOKEN": HEADER_TOKEN}
    app = create_app(replace(settings, env=env), store=store, rules_source=rules_source, clock=clock)
    candidate = RULES_YAML.replace("{name: Active}", '{name: "${WEBHOOK_SECRET}"}').replace(
        "no_orders_segment: New", 'no_orders_segment: "${WEBHOOK_SECRET}"').replace(
        "timezone: UTC", 'timezone: "${N8N_HEADER_TOKEN}"')
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    client = app.test_client()

    refused = client.post("/api/rules/preview", data=candidate, headers=headers, content_type="text/yaml")
    accepted = client.post("/api/rules/preview", data=candidate.replace('timezone: "${N8N_HEADER_TOKEN}"',
                                                                        "timezone: UTC"),
                           headers=headers, content_type="text/yaml")

    assert (refused.status_code, accepted.status_code) == (400, 200)
    for answer in (refused, accepted):
        text = answer.get_data(as_text=True)
        assert STORY_SECRET not in text and HEADER_TOKEN not in text
    assert "***" in accepted.get_json()["data"]["segments"]


# --- security headers ---------------------------------------------------------------------------------------


def test_security_headers_are_on_errors_too(app, client, read_headers, small_app, admin_headers):
    @app.get("/api/boom")
    def boom():
        raise RuntimeError("boom")

    answers = [
        client.get("/api/customers"),  # 401
        client.post("/api/orders", json=[], headers=read_headers),  # 403
        client.get("/api/customers/nobody", headers=read_headers),  # 404
        client.delete("/api/customers", headers=read_headers),  # 405
        client.get("/api/customers?limit=0", headers=read_headers),  # 400
        client.get("/api/boom", headers=read_headers),  # 500
        small_app.test_client().post("/api/orders", data=big_orders(), headers=admin_headers),  # 413
    ]

    assert [a.status_code for a in answers] == [401, 403, 404, 405, 400, 500, 413]
    for answer in answers:
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.is_json


# --- logs -------------------------------------------------------------------------------------------------


def record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("worker.delivery", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_json_log_lines_carry_event_and_customer_ids():
    line = JsonFormatter().format(record("delivered %s", "evt_1", event_ids=["evt_1"], contact_ids=["C-1"]))

    parsed = json.loads(line)
    assert parsed["message"] == "delivered evt_1"
    assert (parsed["level"], parsed["logger"]) == ("WARNING", "worker.delivery")
    assert (parsed["event_ids"], parsed["contact_ids"]) == (["evt_1"], ["C-1"])
    assert parsed["time"].endswith("Z")


def test_json_log_lines_carry_the_traceback():
    try:
        raise ValueError("bad")
    except ValueError:
        made = logging.LogRecord("w", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info())
    assert "ValueError: bad" in json.loads(JsonFormatter().format(made))["exception"]


def test_known_secrets_are_masked_in_message_extras_and_traceback():
    secrets = secret_values({"WEBHOOK_SECRET": "whsec_c2VjcmV0LXNpZ25pbmc=", "API_KEYS": "read-key-1,read-key-2",
                             "N8N_HEADER_TOKEN": "token-abcdef", "PORT": "8000", "DEBUG_TOKEN": "1"})
    try:
        raise ConnectionError("http://user:token-abcdef@n8n/x failed")
    except ConnectionError:
        made = record("sent with %s", "read-key-2", url="c2VjcmV0LXNpZ25pbmc=")
        made.exc_info = __import__("sys").exc_info()

    RedactingFilter(secrets).filter(made)
    line = JsonFormatter().format(made)

    for secret in ("read-key-2", "token-abcdef", "c2VjcmV0LXNpZ25pbmc="):
        assert secret not in line
    assert "8000" not in secrets and "1" not in secrets
    assert "sent with ***" in line and "user:***@n8n" in line and '"url": "***"' in line


def test_log_format_follows_log_format_or_the_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert Settings.from_env({}).log_format == "auto"
    assert Settings.from_env({"LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        Settings.from_env({"LOG_FORMAT": "xml"})
    assert resolve_format("auto", Terminal()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"


def test_configure_logging_writes_json_lines_with_secrets_masked(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    out = io.StringIO()

    configure_logging("INFO", "json", {"WEBHOOK_SECRET": "a-webhook-secret"}, stream=out)
    logging.getLogger("worker.test").info("leaking %s", "a-webhook-secret", extra={"contact_id": "C-9"})

    parsed = json.loads(out.getvalue())
    assert parsed == {**parsed, "message": "leaking ***", "contact_id": "C-9"}


# --- a whole story, and not one secret anywhere --------------------------------------------------------------

STORY_SECRET = "whsec_" + base64.b64encode(b"story-signing-secret-0123456789").decode()
HEADER_TOKEN = "n8n-header-token-6b1f9d"
URL_PASSWORD = "url-password-93c2e7"
SECRETS = (READ_KEY, ADMIN_KEY, STORY_SECRET, STORY_SECRET.removeprefix("whsec_"), HEADER_TOKEN, URL_PASSWORD,
           base64.b64encode(f"n8n:{URL_PASSWORD}".encode()).decode())


class EchoReceiver:
    """An n8n that has a bad day: answers with every request header echoed back in the body and a header."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                body = json.dumps({"message": "rejected", "youSent": dict(self.headers.items())}).encode()
                self.send_response(status)
                self.send_header("X-Echo", self.headers.get("X-Segment-Token", ""))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo() -> Iterator[EchoReceiver]:
    running = EchoReceiver()
    yield running
    running.stop()


def story_rules(port: int) -> str:
    return (RULES_YAML.replace('url: "${N8N_WEBHOOK_URL}"', f'url: "http://n8n:${{URL_PASSWORD}}@127.0.0.1:{port}/hook"')
            .replace("timeout_seconds: 10}", 'timeout_seconds: 5, headers: {X-Segment-Token: "${N8N_HEADER_TOKEN}"}, '
                     "retry_schedule_seconds: [1, 1, 1]}"))


def test_no_secret_reaches_a_log_an_error_or_healthz_in_a_whole_story(tmp_path, store, echo, caplog, capfd):
    env = {"WEBHOOK_SECRET": STORY_SECRET, "N8N_HEADER_TOKEN": HEADER_TOKEN, "URL_PASSWORD": URL_PASSWORD,
           "API_KEYS": READ_KEY, "ADMIN_API_KEYS": ADMIN_KEY}
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(story_rules(echo.port), encoding="utf-8")
    settings = replace(Settings.from_env(env), rules_file=str(rules_file))
    clock = FixedClock()
    source = RulesSource(rules_file, env)
    client = create_app(settings, store=store, rules_source=source, clock=clock).test_client()
    worker = Jobs(store, RulesSource(rules_file, env), clock=clock, holder="story")
    admin, reader = {"Authorization": f"Bearer {ADMIN_KEY}"}, {"X-API-Key": READ_KEY}
    seen: list[str] = []

    def call(method: str, url: str, **kwargs: Any) -> Any:
        response = client.open(url, method=method, **kwargs)
        seen.append(f"{response.status_code} {dict(response.headers)} {response.get_data(as_text=True)}")
        return response

    with caplog.at_level(logging.DEBUG):
        assert worker.evaluate_once().baseline
        order = {"contactID": "C-1", "orderReference": "ORD-1", "orderDate": "2026-02-20T09:00:00Z",
                 "total": "150.00", "email": "ann@example.com"}
        assert call("POST", "/api/orders", json=[order], headers=admin).status_code == 200
        call("POST", "/api/orders", json=[{**order, "total": "lots"}], headers=admin)  # a bad record
        call("GET", "/api/customers", headers={"X-API-Key": f"{READ_KEY}x"})  # a wrong key
        call("POST", "/api/orders", json=[order], headers=reader)  # a read key writing
        echo.statuses = [500, 429, 400]  # retried, retried, dead
        for _ in range(3):
            worker.deliver_once()
            clock.advance(seconds=2)
        (dead,) = store.list_events("dead", 10)
        call("GET", "/api/events?status=dead", headers=reader)
        call("GET", f"/api/events/{dead.id}", headers=reader)
        call("POST", f"/api/events/{dead.id}/replay", headers=admin)
        assert worker.deliver_once().delivered == 1
        echo.stop()  # n8n gone: connection refused, to a URL with a password in it
        call("POST", "/api/orders", json=[{**order, "contactID": "C-2", "orderReference": "ORD-2"}], headers=admin)
        worker.deliver_once()
        rules_file.write_text(story_rules(echo.port).replace("timezone: UTC", 'timezone: "${WEBHOOK_SECRET}"')
                              .replace("{gt: 90}", '{gt: "${N8N_HEADER_TOKEN}"}'), encoding="utf-8")
        os.utime(rules_file, (rules_file.stat().st_mtime + 5, rules_file.stat().st_mtime + 5))
        worker.evaluate_once()
        health = call("GET", "/healthz")
        call("GET", "/metrics", headers=reader)
        call("POST", "/api/rules/preview", data=rules_file.read_bytes(), headers=admin, content_type="text/yaml")
        worker.close()

    captured = capfd.readouterr()
    attempts = [a.error or "" for e in store.list_events(None, 10) for a in store.attempts_for(e.id)]
    everything = "\n".join([caplog.text, captured.out, captured.err, *seen, *attempts, source.error or "",
                            *(JsonFormatter().format(r) for r in caplog.records)])
    assert health.get_json()["status"] == "degraded" and "timezone" in health.get_json()["rulesError"]
    assert "HTTP 500 from n8n" in everything and "connection refused" in everything  # the story did happen
    assert "youSent" in everything  # the echoed body was logged and stored, with the secrets masked
    leaks = [everything[max(0, i - 120):i] for secret in SECRETS if (i := everything.find(secret)) >= 0]
    assert leaks == [], "secrets leaked after: " + " | ".join(leaks)
