"""auth_svc tables and queries (SQLAlchemy Core).

PostgreSQL keeps users and signing keys; sessions and login throttling live
in Redis (sessions.py). Invariants sit in the schema: one account per
normalised email (UNIQUE + CHECK), roles and key algorithm by CHECK.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth_svc import events
from auth_svc.accounts import Account, SignUp
from auth_svc.keys import ALGORITHM, KeyRecord, PublicJwk
from paymesh_runtime.identity import Role
from paymesh_runtime.kafka import TOPIC_USERS
from paymesh_runtime.outbox import Outbox, outbox_tables

metadata = MetaData()
outbox, outbox_sequence = outbox_tables(metadata)

users = Table(
    "users",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("display_name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("email = lower(btrim(email)) AND email LIKE '%_@_%'", name="users_email_normalised"),
    CheckConstraint("role IN ('CUSTOMER', 'MERCHANT', 'ADMIN')", name="users_role_known"),
    CheckConstraint("char_length(display_name) BETWEEN 1 AND 100", name="users_display_name_length"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("public_jwk", JSONB, nullable=False),
    # nonce ‖ AES-256-GCM ciphertext ‖ tag of the PKCS#8 PEM (paymesh_runtime.sealing).
    Column("private_key_sealed", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("activates_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint(f"algorithm = '{ALGORITHM}'", name="signing_keys_algorithm"),
    CheckConstraint("activates_at >= created_at", name="signing_keys_activate_after_creation"),
)

# Serialises "create the first key if there is none" across replicas.
FIRST_KEY_LOCK = 0x706D6B31  # "pmk1"


@dataclass(frozen=True)
class StoredUser:
    account: Account
    password_hash: str = field(repr=False)


@dataclass(frozen=True)
class SealedKey:
    record: KeyRecord
    sealed_private_key: bytes = field(repr=False)


def _user(row: Row[tuple[object, ...]]) -> StoredUser:
    account = Account(str(row.user_id), row.email, row.display_name, Role(row.role), row.created_at)
    return StoredUser(account, row.password_hash)


def _key(row: Row[tuple[object, ...]]) -> SealedKey:
    jwk = row.public_jwk
    public = PublicJwk(row.kid, jwk["x"], jwk["y"])
    record = KeyRecord(row.kid, public, row.created_at, row.activates_at, row.revoked_at)
    return SealedKey(record, row.private_key_sealed)


class AuthStore:
    """Users and signing keys; every write is one transaction."""

    def __init__(self, engine: AsyncEngine, outbox_writer: Outbox) -> None:
        self._engine = engine
        self._outbox = outbox_writer

    # --- users ---------------------------------------------------------------

    async def create_user(self, signup: SignUp, password_hash: str) -> Account | None:
        """Inserts the account and its user.registered event; None if the email is taken."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    insert(users)
                    .values(
                        user_id=uuid.UUID(signup.user_id),
                        email=signup.email,
                        display_name=signup.display_name,
                        role=signup.role.value,
                        password_hash=password_hash,
                    )
                    # The UNIQUE constraint decides between racing sign-ups.
                    .on_conflict_do_nothing(index_elements=[users.c.email])
                    .returning(*users.c)
                )
            ).one_or_none()
            if row is None:
                return None
            account = _user(row).account
            await self._outbox.enqueue(conn, topic=TOPIC_USERS, event=events.user_registered(account))
            return account

    async def user_by_email(self, email: str) -> StoredUser | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.email == email))).one_or_none()
        return _user(row) if row else None

    async def user_by_id(self, user_id: str) -> Account | None:
        try:
            key = uuid.UUID(user_id)
        except ValueError:
            return None
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.user_id == key))).one_or_none()
        return _user(row).account if row else None

    async def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> None:
        """Upgrades a hash made with older parameters, unless it changed meanwhile."""
        async with self._engine.begin() as conn:
            await conn.execute(
                users.update()
                .where(users.c.user_id == uuid.UUID(user_id), users.c.password_hash == old_hash)
                .values(password_hash=new_hash)
            )

    # --- signing keys ------------------------------------------------------------

    async def keys(self) -> list[SealedKey]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(signing_keys).order_by(signing_keys.c.activates_at.desc()))).all()
        return [_key(row) for row in rows]

    async def add_key(self, kid: str, jwk: PublicJwk, sealed: bytes, publish_lead: timedelta) -> datetime:
        """Stores a key that signs `publish_lead` from now (database clock); returns that time."""
        async with self._engine.begin() as conn:
            return await _insert_key(conn, kid, jwk, sealed, publish_lead)

    async def add_first_key(self, kid: str, jwk: PublicJwk, sealed: bytes) -> bool:
        """Stores the key only if no usable key exists yet (the first start); True if stored."""
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": FIRST_KEY_LOCK})
            usable = await conn.scalar(
                select(func.count()).select_from(signing_keys).where(signing_keys.c.revoked_at.is_(None))
            )
            if usable:
                return False
            await _insert_key(conn, kid, jwk, sealed, timedelta(0))
            return True

    async def revoke_key(self, kid: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                signing_keys.update()
                .where(signing_keys.c.kid == kid, signing_keys.c.revoked_at.is_(None))
                .values(revoked_at=func.now())
            )
        return bool(result.rowcount)

    async def delete_keys(self, kids: Sequence[str]) -> int:
        if not kids:
            return 0
        async with self._engine.begin() as conn:
            result = await conn.execute(signing_keys.delete().where(signing_keys.c.kid.in_(list(kids))))
        return int(result.rowcount)

    async def now(self) -> datetime:
        """The database clock: every replica and command places keys on one timeline."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(select(func.now()))
        assert value is not None
        return value


async def _insert_key(conn: AsyncConnection, kid: str, jwk: PublicJwk, sealed: bytes, lead: timedelta) -> datetime:
    activates_at: datetime | None = await conn.scalar(
        signing_keys.insert()
        .values(
            kid=kid,
            algorithm=ALGORITHM,
            public_jwk=jwk.as_dict(),
            private_key_sealed=sealed,
            activates_at=func.now() + lead,
        )
        .returning(signing_keys.c.activates_at)
    )
    assert activates_at is not None
    return activates_at


def auth_store(engine: AsyncEngine) -> AuthStore:
    """The store with auth_svc's outbox (events are produced as "auth_svc")."""
    return AuthStore(engine, Outbox(outbox, outbox_sequence, "auth_svc"))
