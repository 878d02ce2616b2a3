"""Opaque, cursor-based page tokens (AIP-158).

A token encodes the sort key of the last item returned and a fingerprint of
the query, so that it is stable under concurrent inserts and cannot be
replayed against another query.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence

from paymesh_runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

Cursor = list[str | int]


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("VALIDATION_FAILED", "page_size must not be negative", field="page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _fingerprint(query: Sequence[str]) -> str:
    return hashlib.sha256("\x1f".join(query).encode()).hexdigest()[:16]


def encode_token(cursor: Cursor, query: Sequence[str]) -> str:
    raw = json.dumps({"c": cursor, "q": _fingerprint(query)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str, query: Sequence[str]) -> Cursor | None:
    """Returns the cursor of a token, None for the first page."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor, fingerprint = data["c"], data["q"]
        valid = isinstance(cursor, list) and fingerprint == _fingerprint(query)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise InvalidArgument(
            "INVALID_PAGE_TOKEN", "page_token is malformed or belongs to another query", field="page_token"
        )
    return list(cursor)
