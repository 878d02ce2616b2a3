"""Secrets at rest: AES-256-GCM with a key from the environment.

For secrets a service must read back in clear (a webhook signing secret is
needed to sign every delivery, so it cannot be hashed). The sealed form is
nonce ‖ ciphertext ‖ tag and is bound to a context string (e.g. the row's id)
as associated data, so a sealed value copied onto another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


def parse_aes256_key(value: str, setting: str) -> bytes:
    """32 bytes from base64 (url-safe or standard, padding optional); fails fast otherwise."""
    text = value.strip()
    if not text:
        raise ValueError(f"{setting} is not set (32 random bytes, base64)")
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{setting} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{setting} must decode to 32 bytes (AES-256)")
    return raw


class SecretSealer:
    """Seals and opens small secrets with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretSealer(<key hidden>)"

    def seal(self, context: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, context: str, sealed: bytes) -> bytes:
        """Raises cryptography's InvalidTag for a wrong key, context or tampered data."""
        return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode())
