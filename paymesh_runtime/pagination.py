"""Opaque, signed, cursor-based page tokens (AIP-158).

A token carries the sort key of the last item returned (a cursor, so pages
are stable under concurrent inserts) and an expiry, signed with HMAC-SHA256
over the cursor, the expiry and the query it pages (the list and whose items:
the caller's user id, or "*" for an admin's). A client can neither forge a
cursor nor replay a token against another query: tampered, expired, foreign
and undecodable tokens alike fail with INVALID_ARGUMENT, reason
INVALID_PAGE_TOKEN, naming `page_token`. The cursor of a token that verifies
is still checked (types, ranges) before any query uses it.

Format: `base64url(JSON {"c": cursor, "e": expiry}) "." base64url(mac[:16])`.

The key is the service's PAGE_TOKEN_KEY setting (<P>_PAGE_TOKEN_KEY, at
least 32 characters; a Secret key in the Helm chart). Without one it is
derived from SERVICE_TOKEN_SECRET, which every replica of every service
shares, with HMAC under a fixed label (so a page token's key never reveals
the service token secret); without either, each process draws a random key
and its tokens stop verifying after a restart or at another replica (logged
as a warning at start).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from paymesh_runtime.errors import InvalidArgument
from paymesh_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
TOKEN_LIFETIME = timedelta(hours=24)
MIN_KEY_LENGTH = 32
_VERSION = "v1"
_MAC_BYTES = 16
_MAX_TOKEN_LENGTH = 512  # far above any token this module issues; longer ones are not even decoded
_DERIVATION_LABEL = b"paymesh page-token key v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MICROS = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_MAX_INT64 = 2**63 - 1

# The sort key of a row listed by (create time, id).
Position = tuple[datetime, uuid.UUID]


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("VALIDATION_FAILED", "page_size must not be negative", field="page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def invalid_page_token() -> InvalidArgument:
    # One answer for every way a token can be wrong: nothing tells a forger which check failed.
    return InvalidArgument(
        "INVALID_PAGE_TOKEN",
        "page_token is malformed, expired or belongs to another query; list again from the first page",
        field="page_token",
    )


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    # Strict: a character outside the alphabet is an error, not skipped (no two spellings of one token).
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


class PageTokens:
    """Issues and verifies the page tokens of one service."""

    def __init__(
        self, key: bytes, *, lifetime: timedelta = TOKEN_LIFETIME, clock: Callable[[], float] = time.time
    ) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(f"the page token key must be at least {MIN_KEY_LENGTH} bytes")
        self._key = key
        self._lifetime = int(lifetime.total_seconds())
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> PageTokens:
        """PAGE_TOKEN_KEY; else a key derived from SERVICE_TOKEN_SECRET; else a random key of this process."""
        own = settings.page_token_key.get_secret_value()
        if own:
            return cls(own.encode())
        shared = settings.service_token_secret.get_secret_value()
        if shared:
            return cls(hmac.new(shared.encode(), _DERIVATION_LABEL, hashlib.sha256).digest())
        log.warning(
            "neither PAGE_TOKEN_KEY nor SERVICE_TOKEN_SECRET is set: page tokens are signed with a key of this"
            " process only and stop verifying after a restart or at another replica"
        )
        return cls(secrets.token_bytes(32))

    # --- cursors of (create time, id) ---------------------------------------------------

    def encode_position(self, position: Position, query: Sequence[str]) -> str:
        moment, row_id = position
        return self._encode([(moment - _EPOCH) // timedelta(microseconds=1), row_id.hex], query)

    def decode_position(self, token: str, query: Sequence[str]) -> Position | None:
        """The position a token continues after, None for the first page."""
        cursor = self._decode(token, query)
        if cursor is None:
            return None
        if len(cursor) == 2 and _is_int(cursor[0], 0, _MAX_MICROS) and isinstance(cursor[1], str):
            try:
                return _EPOCH + timedelta(microseconds=cursor[0]), uuid.UUID(hex=cursor[1])
            except ValueError:
                pass
        raise invalid_page_token()

    # --- cursors of a sequence number -------------------------------------------------

    def encode_sequence(self, sequence: int, query: Sequence[str]) -> str:
        return self._encode([sequence], query)

    def decode_sequence(self, token: str, query: Sequence[str]) -> int | None:
        """The sequence number (a bigint) a token continues from, None for the first page."""
        cursor = self._decode(token, query)
        if cursor is None:
            return None
        if len(cursor) == 1 and _is_int(cursor[0], 0, _MAX_INT64):
            return int(cursor[0])
        raise invalid_page_token()

    # --- the signed envelope ------------------------------------------------------------

    def _mac(self, query: Sequence[str], payload: str) -> bytes:
        signed = json.dumps([_VERSION, list(query), payload], separators=(",", ":")).encode()
        return hmac.new(self._key, signed, hashlib.sha256).digest()[:_MAC_BYTES]

    def _encode(self, cursor: list[Any], query: Sequence[str]) -> str:
        body = {"c": cursor, "e": int(self._clock()) + self._lifetime}
        payload = _b64encode(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{_b64encode(self._mac(query, payload))}"

    def _decode(self, token: str, query: Sequence[str]) -> list[Any] | None:
        if not token:
            return None
        if len(token) > _MAX_TOKEN_LENGTH:
            raise invalid_page_token()
        payload, _, mac = token.partition(".")
        # Compared as text: base64 ignores the spare low bits of a last character, and a token
        # must have one spelling only.
        if not hmac.compare_digest(mac.encode(), _b64encode(self._mac(query, payload)).encode()):
            raise invalid_page_token()
        try:
            body = json.loads(_b64decode(payload))
        except (ValueError, binascii.Error, UnicodeError):
            raise invalid_page_token() from None
        if not isinstance(body, dict) or not isinstance(body.get("c"), list):
            raise invalid_page_token()
        expiry = body.get("e")
        if not _is_int(expiry, 0, _MAX_INT64) or expiry < self._clock():
            raise invalid_page_token()
        return list(body["c"])


def _is_int(value: object, low: int, high: int) -> TypeGuard[int]:
    # bool is an int in Python, never in a cursor.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
