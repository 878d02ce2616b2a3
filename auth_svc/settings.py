"""Auth service settings: environment variables prefixed AUTH_."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from auth_svc.keys import KeyPolicy
from paymesh_runtime.settings import ServiceSettings


class AuthSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", frozen=True)

    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:16379/0"), description="Redis for refresh tokens and login throttling."
    )
    access_token_ttl_seconds: int = Field(
        900, gt=0, le=3600, description="Access token lifetime (15 minutes); Envoy refuses tokens over an hour."
    )
    key_encryption_key: SecretStr = Field(
        SecretStr(""),
        description="Encrypts signing keys at rest: 32 random bytes, base64 (url-safe or standard).",
    )
    key_publish_lead_seconds: int = Field(
        360,
        ge=0,
        description=(
            "A rotated-in key is published this long before it signs, so that every Envoy has refetched "
            "the JWKS first. Must exceed Envoy's JWKS cache_duration (300 s outside the test profile)."
        ),
    )
    key_retention_grace_seconds: int = Field(
        60,
        ge=0,
        description="A retired key stays published for the access-token lifetime plus this margin (clock skew).",
    )
    key_cache_seconds: float = Field(
        5.0, gt=0, description="How long a replica reuses the key list it read from PostgreSQL."
    )
    refresh_token_ttl_seconds: int = Field(
        14 * 86_400, gt=0, description="A session ends after this long without a refresh."
    )
    session_max_lifetime_seconds: int = Field(
        30 * 86_400, gt=0, description="A session (refresh-token family) ends this long after its login."
    )
    login_max_failures: int = Field(5, gt=0, description="Failed logins per email before throttling.")
    login_failure_window_seconds: int = Field(900, gt=0, description="The throttling window (15 minutes).")

    def key_policy(self) -> KeyPolicy:
        """The durations that place signing keys on their timeline (keys.py)."""
        return KeyPolicy(
            token_ttl=timedelta(seconds=self.access_token_ttl_seconds),
            grace=timedelta(seconds=self.key_retention_grace_seconds),
            publish_lead=timedelta(seconds=self.key_publish_lead_seconds),
        )
