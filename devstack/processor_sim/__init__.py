"""A card processor simulator: a separate process with an HTTP/JSON API like a real processor's.

It stands in for the external processor in the local stack and the tests.
State lives in memory (it simulates someone else's system); amounts are
integer minor units with an ISO 4217 currency.

API (JSON bodies; every POST honours an ``Idempotency-Key`` header: the same
key and body replay the first answer with ``Idempotent-Replayed: true`` and no
second effect; the same key with another body or path is 409
``idempotency_key_reused``; while the first request with a key still runs, 409
``idempotency_key_in_use``):

    POST /v1/authorizations               {card_token, amount, currency}
    POST /v1/authorizations/{id}/capture  {amount?, currency?}   amount <= authorized
    POST /v1/authorizations/{id}/void     {}
    POST /v1/refunds                      {authorization, amount?, currency?}  total <= captured; may be pending
    POST /v1/payouts                      {bank_account_token, amount, currency}  -> pending, then a webhook
    GET  /v1/{authorizations|refunds|payouts|events}[/{id}]   lists take ?idempotency_key=
    GET  /healthz
    GET|POST /_sim/config                 faults: latency, 5xx, lost responses, dropped webhooks (tests set them)

Tokens choose the outcome like Stripe's test cards (see ``tokens``). A decline
is HTTP 402 ``card_error`` with a ``decline_code`` and the declined object's
``object_id``. Payouts settle after ``payout_settle_seconds``, and refunds of
``tok_refundPending`` / ``tok_refundFail`` cards are pending and settle after
``refund_settle_seconds``; each is reported by a webhook signed ``Paymesh-Signature: t=<unix>,v1=<hex
HMAC-SHA256(secret, "<t>.<body>")>``, retried with backoff until a 2xx.

    python -m devstack.processor_sim --port 8091 --webhook-url URL --webhook-secret S
"""
