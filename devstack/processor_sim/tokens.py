"""Magic card and bank-account tokens: the token decides what the simulator does.

Modelled on Stripe's test cards (tok_visa, tok_chargeDeclined...). Unknown
tokens are rejected with 400 ``token_invalid``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Effect(enum.Enum):
    APPROVE = "approve"  # the operation succeeds
    DECLINE = "decline"  # 402 with a decline code; the declined object is recorded
    PROCESSING_ERROR = "processing_error"  # 500, nothing happens; retryable
    HANG = "hang"  # no answer for hang_seconds (past any sane client timeout), then 504


@dataclass(frozen=True)
class Behaviour:
    effect: Effect
    decline_code: str = ""
    # Accepted (pending) now, fails with this code when it settles: payouts, and refunds if refunds_pending.
    settle_failure: str = ""
    # Cards only: refunds of this card are pending first and settled later by a webhook.
    refunds_pending: bool = False


APPROVE = Behaviour(Effect.APPROVE)

CARD_TOKENS: dict[str, Behaviour] = {
    "tok_visa": APPROVE,
    "tok_mastercard": APPROVE,
    "tok_amex": APPROVE,
    "tok_chargeDeclined": Behaviour(Effect.DECLINE, decline_code="generic_decline"),
    "tok_insufficientFunds": Behaviour(Effect.DECLINE, decline_code="insufficient_funds"),
    "tok_expiredCard": Behaviour(Effect.DECLINE, decline_code="expired_card"),
    "tok_processingError": Behaviour(Effect.PROCESSING_ERROR),
    "tok_timeout": Behaviour(Effect.HANG),
    # Charges succeed; refunds are pending, then succeed (tok_refundPending) or fail (tok_refundFail, like
    # Stripe's pm_card_refundFail) by webhook after refund_settle_seconds.
    "tok_refundPending": Behaviour(Effect.APPROVE, refunds_pending=True),
    "tok_refundFail": Behaviour(Effect.APPROVE, settle_failure="expired_or_canceled_card", refunds_pending=True),
}

BANK_TOKENS: dict[str, Behaviour] = {
    "btok_success": APPROVE,
    "btok_failed": Behaviour(Effect.APPROVE, settle_failure="account_closed"),
    "btok_invalidAccount": Behaviour(Effect.DECLINE, decline_code="invalid_account_number"),
    "btok_processingError": Behaviour(Effect.PROCESSING_ERROR),
    "btok_timeout": Behaviour(Effect.HANG),
}
