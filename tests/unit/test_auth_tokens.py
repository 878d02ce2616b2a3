"""Access-token claims and refresh-token format (auth_svc.tokens)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from auth_svc import keys, tokens
from paymesh_runtime.identity import Role

NOW = datetime.now(UTC).replace(microsecond=0)


def _issue(now: datetime) -> tuple[str, keys.NewKey]:
    key = keys.generate_key()
    claims = tokens.access_claims(
        user_id="user-1",
        role=Role.MERCHANT,
        issuer="paymesh-test",
        audience="paymesh",
        ttl=timedelta(minutes=15),
        now=now,
    )
    return tokens.sign_access_token(claims, key.jwk.kid, keys.load_private_key(key.private_pem)), key


def test_an_access_token_carries_every_claim_the_edge_and_services_read() -> None:
    # Issued now, not at import: the whole suite outlasts the token's 15 minutes.
    now = datetime.now(UTC).replace(microsecond=0)
    token, key = _issue(now)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": key.jwk.kid, "typ": "JWT"}
    public = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(key.jwk.as_dict()))
    claims = jwt.decode(token, public, algorithms=["ES256"], audience="paymesh", issuer="paymesh-test")  # type: ignore[arg-type]
    assert claims["sub"] == "user-1"
    assert claims["role"] == "MERCHANT"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iat"] == int(now.timestamp())
    assert len(claims["jti"]) == 36


def test_every_token_has_its_own_jti() -> None:
    first, second = (
        tokens.access_claims(
            user_id="u", role=Role.CUSTOMER, issuer="i", audience="a", ttl=timedelta(minutes=1), now=NOW
        )
        for _ in range(2)
    )
    assert first.token_id != second.token_id


def test_a_refresh_token_names_its_family_and_hides_its_secret() -> None:
    family = tokens.new_family_id()
    token = tokens.new_refresh_token(family)
    assert token.token.startswith(family + ".")
    assert tokens.parse_refresh_token(token.token) == token
    assert token.digest == tokens.hash_refresh_token(token.token)
    assert token.token.split(".", 1)[1] not in token.digest


def test_two_refresh_tokens_of_one_family_differ() -> None:
    family = tokens.new_family_id()
    assert tokens.new_refresh_token(family).token != tokens.new_refresh_token(family).token


@pytest.mark.parametrize(
    "value",
    ["", "nodot", "short.secret", "g" * 32 + "." + "s" * 43, "a" * 32 + ".", "a" * 32 + "." + "s" * 400],
)
def test_anything_that_cannot_be_a_refresh_token_is_rejected_before_redis(value: str) -> None:
    assert tokens.parse_refresh_token(value) is None
