"""Wallet service settings: environment variables prefixed WALLET_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from paymesh_runtime.settings import ServiceSettings

DAY = 86_400


class WalletSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WALLET_", extra="ignore", frozen=True)

    hold_default_ttl_seconds: int = Field(7 * DAY, gt=0, description="Lifetime of a hold created with ttl_seconds 0.")
    hold_max_ttl_seconds: int = Field(30 * DAY, gt=0, description="Longest lifetime a hold may ask for.")
    sweeper_interval_seconds: float = Field(5.0, gt=0, description="How often expired holds are released.")
    sweeper_batch_size: int = Field(200, ge=1, description="Holds expired per sweeper transaction.")
    batch_pool_size: int = Field(4, ge=1, description="asyncpg connections of batched postings (PostTransactions).")
