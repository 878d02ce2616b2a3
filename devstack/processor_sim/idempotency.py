"""Idempotency keys, the way processors implement them (Stripe's rules).

The first request with a key runs; its answer is stored with a fingerprint
of the request (method, path, canonical JSON body). A later request with the
key and the same fingerprint gets the stored answer back without running; a
different fingerprint is refused (409 idempotency_key_reused); a request
arriving while the first still runs is refused (409 idempotency_key_in_use).
5xx answers are not stored: nothing happened, so the key may be retried.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from devstack.processor_sim.ledger import ApiError, JsonObject

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Stored:
    status: int
    body: JsonObject


@dataclass
class _Entry:
    fingerprint: str
    answer: Stored | None = None  # None while the first request runs


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def begin(self, key: str, request_fingerprint: str) -> Stored | None:
        """The stored answer to replay, or None if this request should run (and then `finish`)."""
        if len(key) > MAX_KEY_LENGTH:
            raise ApiError(400, "invalid_request_error", "idempotency_key_invalid", "Idempotency-Key is too long")
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(request_fingerprint)
                return None
            if entry.fingerprint != request_fingerprint:
                raise ApiError(
                    409,
                    "idempotency_error",
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                )
            if entry.answer is None:
                raise ApiError(
                    409,
                    "idempotency_error",
                    "idempotency_key_in_use",
                    "a request with this Idempotency-Key is still being processed; retry later",
                )
            return entry.answer

    def finish(self, key: str, status: int, body: JsonObject) -> None:
        with self._lock:
            if status >= 500:
                self._entries.pop(key, None)
            else:
                self._entries[key].answer = Stored(status, body)

    def abandon(self, key: str) -> None:
        """The request died without an answer (a bug): free the key."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.answer is None:
                del self._entries[key]
