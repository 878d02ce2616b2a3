"""Users and signing keys.

Revision ID: 0002
Revises: 0001

One account per normalised email (UNIQUE on the stored form, and a CHECK
that the stored form is normalised, so no writer can sneak a second
spelling in). Signing keys keep their private half encrypted (AES-256-GCM);
their timeline (activation, revocation) decides what signs and what the
JWKS publishes.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATEMENTS = [
    """
    CREATE TABLE users (
      user_id uuid PRIMARY KEY,
      email varchar(254) NOT NULL,
      display_name varchar(100) NOT NULL,
      role varchar(16) NOT NULL,
      password_hash text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT users_email_key UNIQUE (email),
      CONSTRAINT users_email_normalised CHECK (email = lower(btrim(email)) AND email LIKE '%_@_%'),
      CONSTRAINT users_role_known CHECK (role IN ('CUSTOMER', 'MERCHANT', 'ADMIN')),
      CONSTRAINT users_display_name_length CHECK (char_length(display_name) BETWEEN 1 AND 100)
    )
    """,
    """
    CREATE TABLE signing_keys (
      kid varchar(64) PRIMARY KEY,
      algorithm varchar(16) NOT NULL,
      public_jwk jsonb NOT NULL,
      private_key_sealed bytea NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      activates_at timestamptz NOT NULL,
      revoked_at timestamptz,
      CONSTRAINT signing_keys_algorithm CHECK (algorithm = 'ES256'),
      CONSTRAINT signing_keys_activate_after_creation CHECK (activates_at >= created_at)
    )
    """,
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
