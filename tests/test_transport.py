"""Webhook transport: signing, status policy and keep-alive, through a real receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import random
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from standardwebhooks.webhooks import Webhook

from rules import webhooks
from rules.webhooks import DEFAULT_RETRY_SCHEDULE
from tests.receiver import Receiver
from worker.transport import (
    BODY_KEEP_BYTES,
    DeliveryError,
    SendResult,
    WebhookSender,
    next_attempt_at,
    sign_headers,
)

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
RAW_SECRET = "plain text secret"
BODY = json.dumps({"id": "evt_1", "campaign": "welcome"}).encode()
T0 = datetime(2026, 2, 21, tzinfo=timezone.utc)


def webhook(url: str, secret: str = WHSEC, timeout_seconds: float = 2.0, **settings: object) -> webhooks.Webhook:
    """A rules.yaml webhook, checked as when the rules are read."""
    return webhooks.Webhook(url=url, secret=secret, timeout_seconds=timeout_seconds, **settings)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(WHSEC) as running:
        yield running


@pytest.fixture
def sender(receiver: Receiver) -> Iterator[WebhookSender]:
    with WebhookSender("n8n", webhook(url=receiver.url)) as built:
        yield built


def now() -> datetime:
    # Receivers reject timestamps more than 5 minutes from their clock, so signing uses the real time.
    return datetime.now(timezone.utc)


def send_error(sender: WebhookSender, msg_id: str = "evt_1") -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        sender.send(msg_id, BODY, now())
    return caught.value


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/webhook/segment-events"


# Signing


@pytest.mark.parametrize("secret", [WHSEC, RAW_SECRET])
def test_signature_verifies_with_standardwebhooks(secret: str) -> None:
    with Receiver(secret) as receiver, WebhookSender("n8n", webhook(url=receiver.url, secret=secret)) as sender:
        sender.send("evt_1", BODY, now())
        (request,) = receiver.wait_for(1)
    assert request.signature_valid
    assert request.body == BODY
    assert request.json == {"id": "evt_1", "campaign": "welcome"}


def test_signature_with_another_secret_does_not_verify(receiver: Receiver) -> None:
    with WebhookSender("n8n", webhook(url=receiver.url, secret="some other secret")) as sender:
        sender.send("evt_1", BODY, now())
    assert not receiver.wait_for(1)[0].signature_valid


@pytest.mark.parametrize(
    ("secret", "key"),
    [(WHSEC, WHSEC), (RAW_SECRET, RAW_SECRET.encode()), ("whsec_unpadded", "whsec_unpadded")],
)
def test_headers_are_byte_identical_to_standardwebhooks(secret: str, key: str | bytes) -> None:
    headers = sign_headers(secret, "evt_1", T0, BODY)
    assert headers == {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(int(T0.timestamp())),
        "webhook-signature": Webhook(key).sign("evt_1", T0, BODY.decode()),
    }


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    headers = sign_headers(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        datetime.fromtimestamp(1614265330, timezone.utc),
        b'{"test": 2432232314}',
    )
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_timestamp_in_another_zone_is_signed_as_the_same_instant() -> None:
    paris = T0.astimezone(timezone(timedelta(hours=1)))
    assert sign_headers(WHSEC, "evt_1", paris, BODY) == sign_headers(WHSEC, "evt_1", T0, BODY)


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sign_headers(WHSEC, "evt_1", datetime(2026, 2, 21), BODY)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not base64!"])
def test_empty_or_malformed_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        sign_headers(secret, "evt_1", T0, BODY)


# Configuration


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "127.0.0.1:5678/webhook", "http:///no-host"])
def test_sender_refuses_a_non_http_url(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookSender("n8n", webhook(url=url))


def test_sender_refuses_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        WebhookSender("n8n", webhook(url="http://127.0.0.1/x", timeout_seconds=0))


def test_static_headers_may_not_override_signature_headers() -> None:
    with pytest.raises(ValueError, match="(?i)webhook-signature"):
        WebhookSender("n8n", webhook(url="http://127.0.0.1/x", headers={"Webhook-Signature": "v1,forged"}))


# Status policy


def test_2xx_returns_a_send_result(receiver: Receiver, sender: WebhookSender) -> None:
    receiver.respond_with(202)
    result = sender.send("evt_1", BODY, now())
    assert isinstance(result, SendResult)
    assert result.status == 202
    assert result.duration_ms >= 0
    assert receiver.delivered_ids() == ["evt_1"]


def test_request_carries_json_content_type_user_agent_and_signature(
    receiver: Receiver, sender: WebhookSender
) -> None:
    sender.send("evt_1", BODY, now())
    headers = receiver.wait_for(1)[0].headers
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "segment-worker/1"
    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 404, 408, 429])
def test_server_errors_timeouts_and_inactive_workflows_are_retryable(
    receiver: Receiver, sender: WebhookSender, status: int
) -> None:
    receiver.respond_with(status, body="try later")
    error = send_error(sender)
    assert not error.permanent
    assert error.status == status
    assert error.message == f"HTTP {status} from n8n" + (
        " (is the n8n workflow active?)" if status == 404 else ""
    ) + ": try later"


@pytest.mark.parametrize("status", [400, 401, 403, 410, 422])
def test_client_errors_are_permanent(receiver: Receiver, sender: WebhookSender, status: int) -> None:
    receiver.respond_with(status)
    error = send_error(sender)
    assert error.permanent
    assert error.status == status
    assert receiver.delivered_ids() == []


def test_redirect_is_permanent_and_not_followed(receiver: Receiver, sender: WebhookSender) -> None:
    receiver.respond_with(307, headers={"Location": receiver.url + "-moved"})
    error = send_error(sender)
    assert error.permanent
    assert "redirects are not followed" in error.message
    assert len(receiver.requests) == 1


def test_error_message_quotes_at_most_200_chars_of_the_body_on_one_line(
    receiver: Receiver, sender: WebhookSender
) -> None:
    receiver.respond_with(500, body="line one\nline two " + "x" * 500)
    error = send_error(sender)
    excerpt = error.message.removeprefix("HTTP 500 from n8n: ")
    assert excerpt.startswith("line one line two x")
    assert len(excerpt) == 200


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_reported(receiver: Receiver, sender: WebhookSender, status: int) -> None:
    receiver.respond_with(status, headers={"Retry-After": "120"})
    assert send_error(sender).retry_after == 120


def test_retry_after_as_http_date_is_reported_in_seconds(receiver: Receiver, sender: WebhookSender) -> None:
    receiver.respond_with(429, headers={"Retry-After": format_datetime(now() + timedelta(seconds=90), usegmt=True)})
    assert 85 <= send_error(sender).retry_after <= 90


def test_unreadable_retry_after_is_ignored(receiver: Receiver, sender: WebhookSender) -> None:
    receiver.respond_with(429, headers={"Retry-After": "soon"})
    assert send_error(sender).retry_after is None


def test_a_secret_cut_off_at_the_kept_part_of_the_body_is_not_quoted_in_part(receiver: Receiver) -> None:
    config = webhook(url=receiver.url, headers={"X-Segment-Token": "tok-123456789"})
    receiver.respond_with(500, body="error " + " " * (BODY_KEEP_BYTES - 10) + "tok-123456789 and more")
    with WebhookSender("n8n", config) as sender:
        error = send_error(sender)
    assert error.message == "HTTP 500 from n8n: error"


# Network failures


def test_connection_refused_is_retryable() -> None:
    with WebhookSender("n8n", webhook(url=closed_port_url())) as sender:
        error = send_error(sender)
    assert not error.permanent
    assert error.status is None
    assert error.message == "connection refused by n8n"


def test_timeout_is_retryable(receiver: Receiver) -> None:
    receiver.respond_with(200, delay=0.5)
    with WebhookSender("n8n", webhook(url=receiver.url, timeout_seconds=0.1)) as sender:
        error = send_error(sender)
    assert not error.permanent
    assert error.message == "no complete answer from n8n within 0.1s"
    assert error.duration_ms >= 100


# Authentication


def test_static_headers_pass_n8n_header_auth(receiver: Receiver) -> None:
    receiver.require_header("X-Segment-Token", "tok-123")
    with WebhookSender("n8n", webhook(url=receiver.url, headers={"X-Segment-Token": "tok-123"})) as sender:
        assert sender.send("evt_1", BODY, now()).status == 200


def test_missing_static_header_is_a_permanent_403(receiver: Receiver, sender: WebhookSender) -> None:
    receiver.require_header("X-Segment-Token", "tok-123")
    error = send_error(sender)
    assert error.permanent
    assert error.status == 403


def test_basic_auth_in_url_is_sent_as_authorization_and_kept_out_of_errors(receiver: Receiver) -> None:
    url = receiver.url.replace("http://", "http://alice:p%40ss-word@")
    receiver.respond_with(500, body="boom")
    with WebhookSender("n8n", webhook(url=url)) as sender:
        error = send_error(sender)
    request = receiver.wait_for(1)[0]
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:p@ss-word").decode()
    assert request.path == "/webhook/segment-events"
    assert "p@ss-word" not in error.message
    assert "p%40ss-word" not in error.message


def test_secrets_echoed_by_the_receiver_are_redacted_from_errors(receiver: Receiver) -> None:
    config = webhook(url=receiver.url, secret=RAW_SECRET, headers={"X-Segment-Token": "tok-123"})
    receiver.respond_with(400, body=f"bad token tok-123 for secret {RAW_SECRET}")
    with WebhookSender("n8n", config) as sender:
        error = send_error(sender)
    assert "tok-123" not in error.message
    assert RAW_SECRET not in error.message
    assert error.message == "HTTP 400 from n8n: bad token *** for secret ***"


# Keep-alive


def test_100_sends_reuse_one_tcp_connection(receiver: Receiver, sender: WebhookSender) -> None:
    for n in range(100):
        sender.send(f"evt_{n}", BODY, now())
    assert len(receiver.delivered_ids()) == 100
    assert receiver.connections == 1


# Retry schedule


@pytest.mark.parametrize("attempts", range(1, len(DEFAULT_RETRY_SCHEDULE) + 1))
def test_next_attempt_follows_the_schedule_within_20_percent(attempts: int) -> None:
    base = DEFAULT_RETRY_SCHEDULE[attempts - 1]
    rng = random.Random(attempts)
    for _ in range(200):
        delay = (next_attempt_at(attempts, T0, DEFAULT_RETRY_SCHEDULE, rng) - T0).total_seconds()
        assert base * 0.8 <= delay <= base * 1.2


def test_jitter_spreads_retries_and_is_reproducible_with_a_seed() -> None:
    first = [next_attempt_at(3, T0, DEFAULT_RETRY_SCHEDULE, random.Random(7)) for _ in range(3)]
    rng = random.Random(7)
    spread = {next_attempt_at(3, T0, DEFAULT_RETRY_SCHEDULE, rng) for _ in range(20)}
    assert len(set(first)) == 1
    assert len(spread) == 20


def test_exhausted_schedule_means_dead() -> None:
    assert next_attempt_at(len(DEFAULT_RETRY_SCHEDULE) + 1, T0, DEFAULT_RETRY_SCHEDULE, random.Random(0)) is None
    assert next_attempt_at(1, T0, (), random.Random(0)) is None


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError):
        next_attempt_at(0, T0, DEFAULT_RETRY_SCHEDULE, random.Random(0))


def test_retry_after_wins_when_larger_than_the_schedule() -> None:
    assert next_attempt_at(1, T0, (5,), random.Random(0), retry_after=300) == T0 + timedelta(seconds=300)


def test_retry_after_smaller_than_the_schedule_is_ignored() -> None:
    at = next_attempt_at(1, T0, (600,), random.Random(0), retry_after=1)
    assert T0 + timedelta(seconds=480) <= at <= T0 + timedelta(seconds=720)


def test_retry_after_is_capped_at_a_day() -> None:
    assert next_attempt_at(1, T0, (5,), random.Random(0), retry_after=10**9) == T0 + timedelta(days=1)
