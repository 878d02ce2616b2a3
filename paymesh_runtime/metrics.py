"""Prometheus metrics of the event pipeline, and the helpers every paymesh metric uses.

Names follow Prometheus conventions (`paymesh_` prefix, base units, `_total`
on counters, `_seconds` on durations); labels take values from small closed
sets. A label fed from outside (a currency, a processor's failure code) goes
through `BoundedLabel`, which keeps at most a fixed number of distinct values
per process and reports the rest as `other`: no id, amount or free text ever
becomes a label value.

The catalogue (what each metric means, which alert and dashboard reads it) is
docs/observability.md; tests/e2e/test_metrics_catalog.py checks that every
metric the dashboards and alert rules name is one the running services export.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter, Gauge, Histogram

OTHER = "other"
_LABEL_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,40}")

K = TypeVar("K", bound=Hashable)


class BoundedLabel:
    """At most `limit` distinct values of one label per process; any further value, or one that is not a
    short token (letters, digits, `_ . : -`), is reported as `other`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if not _LABEL_VALUE.fullmatch(value):
            return OTHER if value else ""
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
        return value


class Children(Generic[K]):
    """A metric's label children by key, made once each: prometheus_client's `labels()` takes a lock and
    builds a tuple on every call, which a hot path should not pay per event."""

    def __init__(self, make: Callable[[K], Any]) -> None:
        self._make = make
        self._children: dict[K, Any] = {}

    def __getitem__(self, key: K) -> Any:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._make(key)
        return child


# --- the transactional outbox (paymesh_runtime.outbox) -----------------------------------------------
OUTBOX_OLDEST_AGE = Gauge(
    "paymesh_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest outbox row not yet published to Kafka (0 when none), as this replica's relay last measured.",
)
OUTBOX_PUBLISHED = Counter("paymesh_outbox_published_total", "Outbox rows published to Kafka.", ["topic"])
OUTBOX_RELAY_PAUSES = Counter(
    "paymesh_outbox_relay_pauses_total", "Times the outbox relay stopped on an error (Kafka or PostgreSQL away)."
)

# --- Kafka consumers (notify_svc) ---------------------------------------------------------------------
CONSUMER_LAG = Gauge(
    "paymesh_kafka_consumer_lag_messages",
    "Records not yet consumed on the partitions this consumer owns (high watermark minus position), by topic.",
    ["topic"],
)
EVENTS_CONSUMED = Counter(
    "paymesh_events_consumed_total",
    "Event records handled: stored, duplicate (seen before) or dead_lettered.",
    ["topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "paymesh_dead_letters_total",
    "Records and deliveries sent to a dead-letter topic, by what dead-lettered them (consumer, delivery) and why.",
    ["source", "reason"],
)

# --- notification delivery (notify_svc) -----------------------------------------------------------------
DELIVERIES = Counter(
    "paymesh_notification_deliveries_total",
    "Delivery attempts of emails and webhooks, by outcome: delivered, retry, dead_lettered, canceled.",
    ["channel", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "paymesh_notification_delivery_duration_seconds",
    "Time of one delivery attempt (SMTP send or webhook POST), whatever its outcome.",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class ConsumerLag:
    """Measures a Kafka consumer's lag into paymesh_kafka_consumer_lag_messages, at most every
    `every_seconds`: for each partition it owns, the last stable offset (the high watermark under
    read_committed) minus its position, both as of its last fetch (no request to the broker)."""

    def __init__(self, every_seconds: float = 1.0) -> None:
        self._every = every_seconds
        self._next = 0.0

    async def measure(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._every
        lag = dict.fromkeys(consumer.subscription(), 0)
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            if end is None:
                end = consumer.highwater(tp)
            if end is None:
                continue  # nothing fetched from it yet
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - await consumer.position(tp))
        for topic, messages in lag.items():
            CONSUMER_LAG.labels(topic).set(messages)


def consumed(topic: str, outcome: str) -> None:
    """One event record handled: stored, duplicate or dead_lettered."""
    _consumed[topic, outcome].inc()


_consumed: Children[tuple[str, str]] = Children(lambda key: EVENTS_CONSUMED.labels(*key))


# Delivery states (notify_svc.store) as the outcome label says them.
_DELIVERY_OUTCOMES = {"DELIVERED": "delivered", "PENDING": "retry", "DEAD_LETTERED": "dead_lettered"}


def delivery_attempted(channel: str, state: str, seconds: float | None) -> None:
    """One delivery attempt of `channel` ended in `state` after `seconds` (None: none was made, e.g. canceled)."""
    _deliveries[channel, _DELIVERY_OUTCOMES.get(state, state.lower())].inc()
    if seconds is not None:
        _delivery_seconds[channel].observe(seconds)
    if state == "DEAD_LETTERED":
        _dead_lettered[channel].inc()


_deliveries: Children[tuple[str, str]] = Children(lambda key: DELIVERIES.labels(*key))
_delivery_seconds: Children[str] = Children(lambda channel: DELIVERY_SECONDS.labels(channel))
_dead_lettered: Children[str] = Children(
    lambda channel: DEAD_LETTERS.labels("delivery", f"{channel}_attempts_exhausted")
)
