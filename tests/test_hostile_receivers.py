"""Webhook transport against receivers that misbehave: every attempt ends by its deadline, in bounded memory."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from types import TracebackType

import pytest

from rules import webhooks
from tests.hostile_receiver import (
    Behaviour,
    HostileReceiver,
    answer,
    drip_body,
    drip_headers,
    drip_tls_handshake,
    huge_body,
    never_answer,
)
from worker.transport import BODY_EXCERPT_CHARS, DeliveryError, WebhookSender

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = json.dumps({"id": "evt_1", "campaign": "welcome"}).encode()
TIMEOUT = 1.0
SLACK = 0.5  # the attempt's own overhead on 127.0.0.1 is milliseconds
CUT_OFF = "no complete answer from n8n within 1s"
MAX_RSS_GROWTH = 8 * 1024 * 1024  # reading one 50 MB body whole would grow it by 50 MB at least


def webhook(url: str) -> webhooks.Webhook:
    """A rules.yaml webhook, checked as when the rules are read."""
    return webhooks.Webhook(url=url, secret=WHSEC, timeout_seconds=TIMEOUT)


@pytest.fixture
def hostile() -> Iterator[HostileReceiver]:
    with HostileReceiver() as running:
        yield running


@pytest.fixture
def sender(hostile: HostileReceiver) -> Iterator[WebhookSender]:
    with WebhookSender("n8n", webhook(url=hostile.url)) as built:
        yield built


def now() -> datetime:
    return datetime.now(timezone.utc)


def timed_failure(sender: WebhookSender, msg_id: str = "evt_1") -> tuple[DeliveryError, float]:
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        sender.send(msg_id, BODY, now())
    return caught.value, time.monotonic() - started


def assert_cut_off_at_the_deadline(error: DeliveryError, elapsed: float) -> None:
    assert TIMEOUT - 0.05 <= elapsed <= TIMEOUT + SLACK
    assert error.message == CUT_OFF
    assert not error.permanent
    assert error.status is None
    assert TIMEOUT * 1000 - 50 <= error.duration_ms <= (TIMEOUT + SLACK) * 1000


class PeakRssGrowth:
    """How far this process's resident memory rose above its level at entry, sampled every 2 ms."""

    def __init__(self) -> None:
        self.bytes = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def __enter__(self) -> PeakRssGrowth:
        self._start = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.bytes = max(self.bytes, _rss_bytes() - self._start)

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.bytes = max(self.bytes, _rss_bytes() - self._start)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Receivers that never finish their answer


def test_a_receiver_that_drips_its_body_is_cut_off_at_the_deadline(
    hostile: HostileReceiver, sender: WebhookSender
) -> None:
    hostile.play(drip_body())
    assert_cut_off_at_the_deadline(*timed_failure(sender))


def test_a_receiver_that_drips_its_headers_is_cut_off_at_the_deadline(
    hostile: HostileReceiver, sender: WebhookSender
) -> None:
    hostile.play(drip_headers())
    assert_cut_off_at_the_deadline(*timed_failure(sender))


def test_a_receiver_that_accepts_and_never_answers_is_cut_off_at_the_deadline(
    hostile: HostileReceiver, sender: WebhookSender
) -> None:
    hostile.play(never_answer())
    assert_cut_off_at_the_deadline(*timed_failure(sender))


def test_a_tls_handshake_that_drips_is_cut_off_at_the_deadline(hostile: HostileReceiver) -> None:
    hostile.play(drip_tls_handshake())
    with WebhookSender("n8n", webhook(url=hostile.https_url)) as sender:
        assert_cut_off_at_the_deadline(*timed_failure(sender))


def test_time_spent_waiting_for_headers_counts_against_the_same_deadline(
    hostile: HostileReceiver, sender: WebhookSender
) -> None:
    hostile.play(drip_body(after=0.8))
    error, elapsed = timed_failure(sender)
    assert error.message == CUT_OFF
    assert elapsed <= TIMEOUT + 0.3  # not 0.8 s of headers plus a fresh second for the body


def test_the_deadline_holds_through_an_http_proxy(hostile: HostileReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, f"http://{hostile.address}")
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    hostile.play(drip_body())
    with WebhookSender("n8n", webhook(url="http://n8n.invalid/webhook/segment-events")) as sender:
        assert_cut_off_at_the_deadline(*timed_failure(sender))
    assert hostile.webhook_ids == ["evt_1"]  # the request did go through the "proxy"


# Huge bodies


def test_a_2xx_with_a_50_mb_body_succeeds_without_reading_it_whole(
    hostile: HostileReceiver, sender: WebhookSender
) -> None:
    hostile.play(*[huge_body(200)] * 6)
    sender.send("evt_warmup", BODY, now())
    with PeakRssGrowth() as growth:
        started = time.monotonic()
        results = [sender.send(f"evt_{n}", BODY, now()) for n in range(5)]
        elapsed = time.monotonic() - started
    assert [r.status for r in results] == [200] * 5
    assert growth.bytes < MAX_RSS_GROWTH
    assert elapsed < 5 * TIMEOUT
    assert hostile.connections == 6  # each cut-off connection was closed, not pooled half-read


def test_an_error_with_a_50_mb_body_quotes_a_short_excerpt_in_bounded_memory(
    hostile: HostileReceiver, sender: WebhookSender
) -> None:
    hostile.play(*[huge_body(500)] * 6)
    timed_failure(sender, "evt_warmup")
    with PeakRssGrowth() as growth:
        failures = [timed_failure(sender, f"evt_{n}") for n in range(5)]
    assert growth.bytes < MAX_RSS_GROWTH
    for error, elapsed in failures:
        assert error.status == 500
        assert not error.permanent
        excerpt = error.message.removeprefix("HTTP 500 from n8n: ")
        assert excerpt.startswith("lorem ipsum dolor sit amet")
        assert len(excerpt) <= BODY_EXCERPT_CHARS
        assert elapsed < TIMEOUT


def test_a_small_body_keeps_its_connection_and_one_past_the_drain_cap_closes_it(
    hostile: HostileReceiver, sender: WebhookSender
) -> None:
    hostile.play(huge_body(200, size=10_000), huge_body(200, size=200_000))
    for n in range(3):
        assert sender.send(f"evt_{n}", BODY, now()).status == 200
    assert hostile.connections == 2  # the 10 kB answer's connection carried the 200 kB one, then was closed


# Back to normal on the same sender


def test_a_500_then_a_200_is_retryable_and_keeps_the_connection(
    hostile: HostileReceiver, sender: WebhookSender
) -> None:
    hostile.play(answer(500, b"busy"))
    error, _ = timed_failure(sender)
    assert error.message == "HTTP 500 from n8n: busy"
    assert not error.permanent
    assert sender.send("evt_1", BODY, now()).status == 200
    assert hostile.connections == 1


@pytest.mark.parametrize("behaviour", [drip_body, drip_headers, never_answer], ids=lambda b: b.__name__)
def test_a_normal_answer_after_a_cut_off_one_works_on_a_fresh_connection(
    hostile: HostileReceiver, sender: WebhookSender, behaviour: Callable[[], Behaviour]
) -> None:
    hostile.play(behaviour())
    error, _ = timed_failure(sender)
    assert error.message == CUT_OFF
    started = time.monotonic()
    assert sender.send("evt_2", BODY, now()).status == 200
    assert time.monotonic() - started < 0.5
    assert hostile.webhook_ids == ["evt_1", "evt_2"]
    assert hostile.connections == 2


def test_a_cut_off_attempt_leaves_other_sends_on_the_same_sender_alone(
    hostile: HostileReceiver, sender: WebhookSender
) -> None:
    hostile.play(drip_body())
    failures: list[tuple[DeliveryError, float]] = []
    dripped = threading.Thread(target=lambda: failures.append(timed_failure(sender, "evt_dripped")))
    dripped.start()
    while not hostile.webhook_ids:
        time.sleep(0.01)
    statuses = []
    until = time.monotonic() + TIMEOUT + 0.3  # on both sides of the dripped attempt's deadline
    while time.monotonic() < until:
        statuses.append(sender.send(f"evt_{len(statuses)}", BODY, now()).status)
    dripped.join(timeout=TIMEOUT + SLACK)
    assert_cut_off_at_the_deadline(*failures[0])
    assert set(statuses) == {200}
    assert len(statuses) > 10
