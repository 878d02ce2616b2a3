"""Auth service settings: environment variables prefixed AUTH_."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from paymesh_runtime.settings import ServiceSettings


class AuthSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", frozen=True)

    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:16379/0"), description="Redis for refresh tokens and login throttling."
    )
    jwt_issuer: str = Field("paymesh-local", description="The `iss` of access tokens.")
    jwt_audience: str = Field("paymesh", description="The `aud` of access tokens.")
    access_token_ttl_seconds: int = Field(900, gt=0, description="Access token lifetime (15 minutes).")
    key_encryption_key: SecretStr = Field(SecretStr(""), description="Encrypts signing keys at rest.")
