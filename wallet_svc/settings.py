"""Wallet service settings: environment variables prefixed WALLET_."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from paymesh_runtime.settings import ServiceSettings


class WalletSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WALLET_", extra="ignore", frozen=True)

    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:16379/1"), description="Redis for the balance cache.")
