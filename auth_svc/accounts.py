"""Accounts: what a valid sign-up is, and how passwords are kept.

Pure rules (no gRPC, SQL or Redis). Passwords are hashed with Argon2id
(argon2-cffi's RFC 9106 low-memory profile); the hash is the only form a
password is ever stored in, and neither is logged nor returned.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from paymesh_runtime.errors import InvalidArgument, validation_failed
from paymesh_runtime.identity import Role

MIN_PASSWORD_LENGTH = 10
# Argon2 cost grows with the input; a cap keeps one request from burning CPU.
MAX_PASSWORD_LENGTH = 1024
MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit
MAX_DISPLAY_NAME_LENGTH = 100
# Deliberately loose: one @, no spaces, a dot in the domain. Deliverability
# is the mail system's business, not a regex's.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Roles the public API may grant; ADMIN only comes from `create-admin`.
SIGNUP_ROLES = frozenset({Role.CUSTOMER, Role.MERCHANT})


@dataclass(frozen=True)
class Account:
    """A stored user account (the password hash stays in the store)."""

    user_id: str
    email: str
    display_name: str
    role: Role
    created_at: datetime


@dataclass(frozen=True)
class SignUp:
    """A validated, normalised request for a new account."""

    email: str
    password: str = field(repr=False)
    display_name: str
    role: Role
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def normalise_email(raw: str) -> str:
    """Trimmed and lower-cased: the one spelling stored, looked up and unique."""
    return raw.strip().lower()


def validate_email(raw: str) -> str:
    email = normalise_email(raw)
    if not email:
        raise validation_failed("email", "is required")
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise validation_failed("email", "is not an email address")
    return email


def validate_password(password: str, email: str) -> None:
    """At least 10 characters, at most 1024, and not the email itself."""
    if len(password) > MAX_PASSWORD_LENGTH:
        raise validation_failed("password", f"must be at most {MAX_PASSWORD_LENGTH} characters")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidArgument(
            "WEAK_PASSWORD", f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    if normalise_email(password) == email:
        raise InvalidArgument("WEAK_PASSWORD", "password must not be the email address", field="password")


def validate_display_name(raw: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= MAX_DISPLAY_NAME_LENGTH:
        raise validation_failed("display_name", f"must be 1 to {MAX_DISPLAY_NAME_LENGTH} characters")
    return name


def sign_up(email: str, password: str, display_name: str, role: Role | None, *, allowed: frozenset[Role]) -> SignUp:
    """Validates a sign-up; `allowed` is SIGNUP_ROLES for the public API."""
    if role is None or role not in allowed:
        names = " or ".join(sorted(r.value for r in allowed))
        raise validation_failed("account_type", f"must be {names}")
    normalised = validate_email(email)
    validate_password(password, normalised)
    return SignUp(normalised, password, validate_display_name(display_name), role)


class Passwords:
    """Argon2id hashing with a constant-cost answer for unknown accounts."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()  # Argon2id, RFC 9106 low-memory profile
        # Verified against when the email is unknown, so that a miss costs
        # the same time as a wrong password and timing reveals nothing.
        self._dummy_hash = self._hasher.hash("paymesh-dummy-password")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if `password` matches; `stored_hash` None means "no such account"."""
        try:
            self._hasher.verify(stored_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with weaker parameters than today's."""
        return self._hasher.check_needs_rehash(stored_hash)
