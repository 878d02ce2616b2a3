"""Payment service settings: environment variables prefixed PAYMENT_."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from paymesh_runtime.settings import ServiceSettings


class PaymentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_", extra="ignore", frozen=True)

    wallet_addr: str = Field(
        "127.0.0.1:50052",
        description="wallet_svc gRPC target: host:port, dns:///name, or ipv4:host:port,host:port,... for "
        "client-side round robin over replicas.",
    )
    wallet_timeout_seconds: float = Field(5.0, gt=0, description="Deadline of one call to wallet_svc.")
    processor_url: str = Field("http://127.0.0.1:8091", description="Card processor base URL.")
    # --- the card processor adapter (payment_svc.processors.build_processor) ---
    processor: Literal["simulator", "stripe"] = Field(
        "simulator", description="Which adapter: the processor simulator (processor_url) or Stripe."
    )
    processor_webhook_secret: SecretStr = Field(
        SecretStr(""), description="HMAC key of the simulator's Paymesh-Signature webhook header."
    )
    processor_webhook_tolerance_seconds: int = Field(
        300, gt=0, description="Oldest (or most future-dated) webhook timestamp accepted, in seconds."
    )
    processor_timeout_seconds: float = Field(10.0, gt=0, description="Deadline of one processor call attempt.")
    processor_max_attempts: int = Field(3, ge=1, description="Attempts per processor call (retryable errors only).")
    processor_retry_base_seconds: float = Field(0.2, ge=0, description="First retry backoff (full jitter).")
    processor_retry_max_seconds: float = Field(2.0, ge=0, description="Longest retry backoff.")
    processor_breaker_failure_threshold: int = Field(
        5, ge=1, description="Consecutive failed calls that open the processor's circuit breaker."
    )
    processor_breaker_failure_ratio: float = Field(
        0.5, gt=0, le=1, description="Share of failed calls in the window that opens the breaker."
    )
    processor_breaker_window: int = Field(20, ge=1, description="Calls the failure ratio is computed over.")
    processor_breaker_minimum_calls: int = Field(10, ge=1, description="Calls needed before the ratio counts.")
    processor_breaker_open_seconds: float = Field(
        30.0, ge=0, description="How long an open breaker fails fast before letting a probe call through."
    )
    processor_poll_seconds: float = Field(
        300.0,
        gt=0,
        description="How long a payout PROCESSING or a card refund pending at the processor waits for its webhook "
        "before payment_svc asks the processor itself, and the interval of later polls.",
    )
    stripe_api_key: SecretStr = Field(SecretStr(""), description="Stripe secret key (processor=stripe).")
    stripe_api_base: str = Field("https://api.stripe.com", description="Stripe API base URL (stripe-mock in tests).")
    stripe_webhook_secret: SecretStr = Field(
        SecretStr(""), description="Stripe endpoint signing secret (whsec_...) for the Stripe-Signature header."
    )

    capture_window_seconds: int = Field(
        7 * 24 * 3600, gt=0, description="How long a MANUAL payment may wait for capture before it is canceled."
    )
    automatic_hold_ttl_seconds: int = Field(
        3600, gt=0, description="Lifetime of the wallet hold of an AUTOMATIC payment (captured within seconds)."
    )
    payout_hold_ttl_seconds: int = Field(
        14 * 24 * 3600, gt=0, description="Lifetime of a payout's hold while the processor settles it."
    )
    idempotency_retention_hours: float = Field(
        24.0, ge=24.0, description="How long Idempotency-Key responses are kept (at least 24 h)."
    )
    replica_id: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="This replica's stable name (default: the host name). A restarted process with the same "
        "name resumes its predecessor's leased work at once; two live processes never share a name (the "
        "second waits).",
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="How long a replica owns a payment it works before another may take over; must outlast "
        "the slowest saga step (every processor attempt and backoff).",
    )
    recovery_interval_seconds: float = Field(
        1.0, gt=0, description="How often the recovery worker looks for unfinished payments."
    )
    retry_backoff_seconds: float = Field(1.0, gt=0, description="First delay before retrying an interrupted saga.")
    max_retry_backoff_seconds: float = Field(60.0, gt=0, description="Longest delay between saga retries.")
    recovery_batch_size: int = Field(50, ge=1, description="Resources claimed per recovery round.")
    batch_max_size: int = Field(
        200,
        ge=1,
        le=1000,
        description="Most automatic wallet payments handled in one batch (one transaction per stage, one wallet call).",
    )
    batch_max_in_flight: int = Field(
        1,
        ge=1,
        description="Batches of wallet payments under way at once; a payment arriving alone never waits. One"
        " makes the biggest batches (docs/performance.md: 365 vs 330 payments/s and 3.1 vs 4.0 ms of CPU per"
        " payment on 2 cores); more overlap database round trips when the database is far.",
    )
    batch_pool_size: int = Field(4, ge=1, description="asyncpg connections of the batched wallet payment path.")
    crash_after_step: str = Field(
        "",
        pattern="^(|(hold|authorize|capture|credit|payout|transfer)(|:started|:called)|batch:(opened|posted))$",
        description=(
            "TESTS ONLY (crash-recovery tests): SIGKILL the process at a point of a saga step: `<step>` right after "
            "its result commits, `<step>:started` once it is recorded STARTED but before its call, `<step>:called` "
            "after its call answered but before its result commits; `batch:opened` once a batch of wallet payments "
            "committed its payments, `batch:posted` once wallet_svc posted the batch's transfers."
        ),
    )

    @model_validator(mode="after")
    def _lease_outlasts_a_step(self) -> PaymentSettings:
        # A lease that lapses mid-step would let the recovery worker work the same payment concurrently.
        slowest_step = self.processor_max_attempts * (self.processor_timeout_seconds + self.processor_retry_max_seconds)
        slowest_step = max(slowest_step, self.wallet_timeout_seconds)
        if self.lease_seconds <= slowest_step:
            raise ValueError(f"lease_seconds must exceed the slowest saga step ({slowest_step:.0f}s)")
        return self
