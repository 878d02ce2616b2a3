"""The Idempotency-Key header of paymesh's public API, for every service that takes one.

A key is 1 to 255 printable ASCII characters (surrounding spaces dropped); each
service scopes it to the caller. A replayed answer carries the metadata
`idempotent-replayed: true`, initial and trailing.
"""

from __future__ import annotations

from typing import Any

HEADER = "idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"
MAX_LENGTH = 255


def values_in(context: Any) -> list[str]:
    """Every value the call's metadata carries for the header."""
    return [v for k, v in context.invocation_metadata() or () if k.lower() == HEADER and isinstance(v, str)]


def normalized(raw: str) -> str | None:
    """The key without surrounding spaces, or None if it is not 1 to 255 printable ASCII characters."""
    key = raw.strip()
    if not 0 < len(key) <= MAX_LENGTH or not all(" " <= ch <= "~" for ch in key):
        return None
    return key


async def mark_replayed(context: Any) -> None:
    """Tells the client that this answer was recorded earlier, not produced now."""
    await context.send_initial_metadata(((REPLAYED_HEADER, "true"),))
    context.set_trailing_metadata(((REPLAYED_HEADER, "true"),))
