"""CPU per call of a service's own end-user check: the access-token verifier and the caller resolution.

    python -m tests.bench.token_verification [--calls 20000]

In this process, no I/O: a real P-256 key published as auth_svc publishes it,
tokens minted as auth_svc mints them, and the code each service runs per call
(paymesh_runtime.callers.Callers.resolve, which the server interceptor awaits
before every handler). Figures are process CPU time (time.process_time) per
call over a bounded number of calls, median of --rounds rounds:

- miss: a token never seen (header parse, ECDSA P-256 verify, claim checks, cache insert);
- hit: a token verified before (one dict lookup and two comparisons);
- the resolution of a call with a bearer token (hit), with identity headers and
  a delegate's service token (HMAC-SHA256), and with no credentials at all.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from auth_svc import keys
from paymesh_runtime.access_tokens import AccessTokenVerifier, KeySet
from paymesh_runtime.callers import Callers
from paymesh_runtime.identity import ROLE_HEADER, SERVICE_TOKEN_HEADER, USER_ID_HEADER, ServiceTokens
from tests.identity import TokenMinter

ISSUER, AUDIENCE = "paymesh-bench", "paymesh"


async def _cpu_per_call(calls: int, work: Callable[[int], Awaitable[object]]) -> float:
    start = time.process_time()
    for n in range(calls):
        await work(n)
    return (time.process_time() - start) / calls


async def main(calls: int, rounds: int) -> None:
    new = keys.generate_key()
    minter = TokenMinter(new.jwk.kid, keys.load_private_key(new.private_pem), ISSUER, AUDIENCE)

    async def jwks() -> list[dict[str, str]]:
        return [new.jwk.as_dict()]

    service_tokens = ServiceTokens("b" * 48)
    verifier = AccessTokenVerifier(
        KeySet(jwks, refresh_seconds=3600), issuer=ISSUER, audience=AUDIENCE, cache_size=calls + 1
    )
    callers = Callers(verifier, service_tokens=service_tokens, delegates={"payment_svc"})
    unseen = iter([minter.token(f"user-{n}") for n in range(calls * rounds)])
    repeated = minter.token("user-repeat")
    await verifier.verify(repeated)
    bearer = (("authorization", f"Bearer {repeated}"), ("x-request-id", "r"), ("idempotency-key", "k"))
    delegated = (
        (USER_ID_HEADER, "user-1"),
        (ROLE_HEADER, "CUSTOMER"),
        (SERVICE_TOKEN_HEADER, service_tokens.issue("payment_svc")),
        ("x-request-id", "r"),
    )
    anonymous = (("x-request-id", "r"), ("idempotency-key", "k"))

    figures: dict[str, list[float]] = {}
    for _ in range(rounds):
        measured = {
            "verify, cache miss (new token)": await _cpu_per_call(calls, lambda n: verifier.verify(next(unseen))),
            "verify, cache hit (repeated token)": await _cpu_per_call(calls, lambda n: verifier.verify(repeated)),
            "resolve, bearer token (cache hit)": await _cpu_per_call(calls, lambda n: callers.resolve(bearer)),
            "resolve, delegate's identity headers": await _cpu_per_call(calls, lambda n: callers.resolve(delegated)),
            "resolve, no credentials": await _cpu_per_call(calls, lambda n: callers.resolve(anonymous)),
        }
        for name, value in measured.items():
            figures.setdefault(name, []).append(value)
    print(f"CPU per call, median of {rounds} rounds of {calls} calls")
    for name, values in figures.items():
        print(f"  {name:<40} {statistics.median(values) * 1e6:8.1f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
