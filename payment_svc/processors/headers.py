"""Header lookup for webhook deliveries, which reach us two ways.

Directly over HTTP (any capitalisation) or through Envoy's transcoder as gRPC
metadata (lowercase keys): either way a name is matched case-insensitively.
"""

from __future__ import annotations

from collections.abc import Mapping


def header(headers: Mapping[str, str], name: str) -> str:
    """The value of header `name`, or "" if absent."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return ""
