"""Payment service settings: environment variables prefixed PAYMENT_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from paymesh_runtime.settings import ServiceSettings


class PaymentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_", extra="ignore", frozen=True)

    wallet_addr: str = Field("127.0.0.1:50052", description="wallet_svc gRPC address.")
    processor_url: str = Field("http://127.0.0.1:8091", description="Card processor base URL.")
