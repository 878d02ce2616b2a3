"""Signing keys: encryption at rest and the rotation timeline (auth_svc.keys)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.exceptions import InvalidTag

from auth_svc import keys
from auth_svc.keys import KeyPolicy, KeyRecord, key_cipher

T0 = datetime(2030, 1, 1, tzinfo=UTC)
POLICY = KeyPolicy(token_ttl=timedelta(minutes=15), grace=timedelta(minutes=1), publish_lead=timedelta(minutes=6))
KEK = base64.urlsafe_b64encode(os.urandom(32)).decode()


def _record(kid: str, activates: datetime, revoked: datetime | None = None) -> KeyRecord:
    return KeyRecord(kid, keys.PublicJwk(kid, "x", "y"), activates - timedelta(minutes=6), activates, revoked)


def _kids(records: list[KeyRecord]) -> list[str]:
    return [r.kid for r in records]


# --- generation and encryption ----------------------------------------------------


def test_a_generated_key_signs_tokens_its_jwk_verifies() -> None:
    new = keys.generate_key()
    token = jwt.encode({"sub": "u"}, keys.load_private_key(new.private_pem), algorithm="ES256")
    public = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(new.jwk.as_dict()))
    assert jwt.decode(token, public, algorithms=["ES256"]) == {"sub": "u"}  # type: ignore[arg-type]


def test_the_kid_is_the_rfc7638_thumbprint() -> None:
    jwk = keys.generate_key().jwk
    canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": jwk.x, "y": jwk.y}, separators=(",", ":"))
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    assert jwk.kid == expected


def test_the_jwk_has_the_members_envoy_needs() -> None:
    assert set(keys.generate_key().jwk.as_dict()) == {"kty", "kid", "use", "alg", "crv", "x", "y"}


def test_a_sealed_private_key_opens_with_its_kek_and_kid_only() -> None:
    cipher = key_cipher(KEK)
    sealed = cipher.seal("kid-1", b"private pem")
    assert b"private pem" not in sealed
    assert cipher.open("kid-1", sealed) == b"private pem"
    with pytest.raises(InvalidTag):
        cipher.open("kid-2", sealed)  # moved to another key's row
    with pytest.raises(InvalidTag):
        key_cipher(base64.b64encode(os.urandom(32)).decode()).open("kid-1", sealed)


def test_sealing_twice_gives_different_ciphertexts() -> None:
    cipher = key_cipher(KEK)
    assert cipher.seal("k", b"same") != cipher.seal("k", b"same")


@pytest.mark.parametrize("value", ["", "not base64 !", base64.b64encode(os.urandom(16)).decode()])
def test_a_missing_or_short_key_encryption_key_fails_fast(value: str) -> None:
    with pytest.raises(ValueError, match="AUTH_KEY_ENCRYPTION_KEY"):
        key_cipher(value)


# --- the timeline ---------------------------------------------------------------------


def test_the_first_key_signs_and_is_published() -> None:
    first = [_record("a", T0)]
    assert keys.signing_key(first, T0, POLICY) == first[0]
    assert _kids(keys.published_keys(first, T0, POLICY)) == ["a"]


def test_a_rotated_in_key_is_published_before_it_signs() -> None:
    ring = [_record("a", T0), _record("b", T0 + timedelta(hours=1))]
    before = T0 + timedelta(minutes=59)
    assert keys.signing_key(ring, before, POLICY).kid == "a"  # type: ignore[union-attr]
    assert _kids(keys.published_keys(ring, before, POLICY)) == ["b", "a"]


def test_once_the_new_key_signs_the_old_one_verifies_until_its_last_token_expired() -> None:
    ring = [_record("a", T0), _record("b", T0 + timedelta(hours=1))]
    retired = T0 + timedelta(hours=1)
    assert keys.signing_key(ring, retired, POLICY).kid == "b"  # type: ignore[union-attr]
    last_moment = retired + POLICY.retention - timedelta(seconds=1)
    assert _kids(keys.published_keys(ring, last_moment, POLICY)) == ["b", "a"]
    assert _kids(keys.published_keys(ring, retired + POLICY.retention, POLICY)) == ["b"]
    assert _kids(keys.prunable_keys(ring, retired + POLICY.retention, POLICY)) == ["a"]


def test_nothing_is_prunable_while_it_may_verify_a_token() -> None:
    ring = [_record("a", T0), _record("b", T0 + timedelta(hours=1))]
    assert keys.prunable_keys(ring, T0 + timedelta(hours=1, minutes=5), POLICY) == []


def test_a_revoked_key_leaves_the_jwks_at_once_and_never_signs() -> None:
    ring = [_record("a", T0), _record("b", T0 + timedelta(hours=1), revoked=T0 + timedelta(minutes=30))]
    later = T0 + timedelta(hours=2)
    assert _kids(keys.published_keys(ring, later, POLICY)) == ["a"]
    assert keys.signing_key(ring, later, POLICY).kid == "a"  # type: ignore[union-attr]
    assert _kids(keys.prunable_keys(ring, later, POLICY)) == ["b"]


def test_revoking_a_retired_key_does_not_extend_the_keys_around_it() -> None:
    ring = [_record("a", T0), _record("b", T0 + timedelta(hours=1)), _record("c", T0 + timedelta(hours=2))]
    ring[1] = _record("b", T0 + timedelta(hours=1), revoked=T0 + timedelta(hours=2, minutes=1))
    # With b gone, a's successor is c: a stays published until c activated + retention.
    states = {s.record.kid: s for s in keys.timeline(ring, T0 + timedelta(hours=2, minutes=5), POLICY)}
    assert states["a"].state == "retired"
    assert states["a"].retires_at == T0 + timedelta(hours=2)
    assert states["b"].state == "revoked"


def test_the_signing_key_cannot_be_revoked_but_a_retired_one_can() -> None:
    ring = [_record("a", T0), _record("b", T0 + timedelta(hours=1))]
    now = T0 + timedelta(hours=1, minutes=1)
    assert "signing key" in (keys.revocation_error(ring, "b", now, POLICY) or "")
    assert keys.revocation_error(ring, "a", now, POLICY) is None
    assert "no key" in (keys.revocation_error(ring, "zzz", now, POLICY) or "")


def test_with_only_future_keys_nothing_signs() -> None:
    assert keys.signing_key([_record("a", T0 + timedelta(hours=1))], T0, POLICY) is None


def test_the_timeline_lists_newest_first() -> None:
    ring = [_record("a", T0), _record("c", T0 + timedelta(hours=2)), _record("b", T0 + timedelta(hours=1))]
    states = keys.timeline(ring, T0 + timedelta(hours=1, minutes=5), POLICY)
    assert [(s.record.kid, s.state) for s in states] == [("c", "pending"), ("b", "signing"), ("a", "retired")]
