"""auth_svc behind the real Envoy: accounts, token pairs, refresh families,
throttling, key rotation, and the edge's JWT checks.

Every request goes through Envoy's listener as a browser or mobile client
would send it. Bad tokens are minted with the service's *real* signing key
(read from its database and decrypted with the stack's key-encryption key),
so each one fails for exactly the reason its name says, and a control token
minted the same way passes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from aiokafka import AIOKafkaConsumer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from auth_svc import keys, store
from devstack import envoy_config
from devstack.stack import Stack
from paymesh.events.v1 import events_pb2
from paymesh_runtime.kafka import TOPIC_USERS
from tests.helpers import auth_command, poll_until

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
ISSUER = envoy_config.jwt_issuer("test")


@dataclass
class Edge:
    stack: Stack
    url: str

    def post(self, path: str, body: dict[str, Any], token: str | None = None, **headers: str) -> httpx.Response:
        if token:
            headers["authorization"] = f"Bearer {token}"
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=10)

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=10)

    def register(self, account_type: str = "CUSTOMER", email: str | None = None) -> dict[str, Any]:
        email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
        reply = self.post(
            "/v1/auth/register",
            {"email": email, "password": PASSWORD, "display_name": "Test User", "account_type": account_type},
        )
        assert reply.status_code == 200, reply.text
        user: dict[str, Any] = reply.json()
        return user

    def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        reply = self.post("/v1/auth/login", {"email": email, "password": password})
        assert reply.status_code == 200, reply.text
        pair: dict[str, Any] = reply.json()
        return pair

    def refresh(self, refresh_token: str) -> httpx.Response:
        return self.post("/v1/auth/refresh", {"refresh_token": refresh_token})

    def auth_command(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """`python -m auth_svc <args>` with the test stack's auth environment."""
        return auth_command(self.stack, *args, stdin=stdin)


@pytest.fixture(scope="module")
def edge(_test_stack: Stack) -> Edge:
    """Only what these tests need: infra, auth_svc and Envoy (the freeze test adds the rest)."""
    _test_stack.up(["infra", "auth", "edge"])
    return Edge(_test_stack, f"http://127.0.0.1:{_test_stack.ports.envoy}")


def _reason(reply: httpx.Response) -> str:
    return str(reply.json()["details"][0]["reason"])


def _kid(access_token: str) -> str:
    return str(jwt.get_unverified_header(access_token)["kid"])


# --- accounts and token pairs ---------------------------------------------------------


def test_register_login_and_get_me_with_json(edge: Edge) -> None:
    user = edge.register("MERCHANT", email=f"  Mixed.Case-{uuid.uuid4().hex[:8]}@Example.COM ")
    assert user["email"] == user["email"].strip().lower()
    assert user["account_type"] == "MERCHANT"
    assert "password" not in user

    pair = edge.login(user["email"].upper())  # looked up by the normalised email
    assert pair["token_type"] == "Bearer"
    assert int(pair["expires_in"]) == 900
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user["user_id"]
    assert claims["role"] == "MERCHANT"
    assert (claims["iss"], claims["aud"]) == (ISSUER, "paymesh")
    assert claims["exp"] - claims["iat"] == 900
    assert claims["jti"]

    me = edge.get("/v1/users/me", pair["access_token"])
    assert me.status_code == 200, me.text
    assert me.json() == user


def test_an_email_registers_once_in_any_spelling(edge: Edge) -> None:
    user = edge.register()
    again = edge.post(
        "/v1/auth/register",
        {"email": user["email"].upper(), "password": PASSWORD, "display_name": "Twin", "account_type": "CUSTOMER"},
    )
    assert again.status_code == 409
    assert _reason(again) == "EMAIL_ALREADY_REGISTERED"


@pytest.mark.parametrize(
    ("password", "account_type", "reason"),
    [("short", "CUSTOMER", "WEAK_PASSWORD"), (PASSWORD, "ADMIN", "VALIDATION_FAILED")],
)
def test_weak_passwords_and_admin_sign_ups_are_refused(
    edge: Edge, password: str, account_type: str, reason: str
) -> None:
    reply = edge.post(
        "/v1/auth/register",
        {
            "email": f"{uuid.uuid4().hex}@example.com",
            "password": password,
            "display_name": "X",
            "account_type": account_type,
        },
    )
    assert reply.status_code == 400
    assert _reason(reply) == reason


def test_the_email_itself_is_a_weak_password(edge: Edge) -> None:
    email = f"long-enough-{uuid.uuid4().hex[:6]}@example.com"
    reply = edge.post(
        "/v1/auth/register", {"email": email, "password": email, "display_name": "X", "account_type": "CUSTOMER"}
    )
    assert (reply.status_code, _reason(reply)) == (400, "WEAK_PASSWORD")


def test_get_me_ignores_a_client_supplied_identity(edge: Edge) -> None:
    reply = httpx.get(
        f"{edge.url}/v1/users/me", headers={"x-paymesh-user-id": str(uuid.uuid4()), "x-paymesh-role": "ADMIN"}
    )
    assert reply.status_code == 401


async def test_a_registration_is_announced_on_kafka(edge: Edge) -> None:
    user = edge.register()
    consumer = AIOKafkaConsumer(
        TOPIC_USERS, bootstrap_servers=edge.stack.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for record in (r for records in batch.values() for r in records):
                event = events_pb2.Event.FromString(record.value)
                if event.aggregate_id == user["user_id"]:
                    assert event.type == "user.registered"
                    assert record.key == user["user_id"].encode()
                    assert event.user_registered.user.email == user["email"]
                    assert event.producer == "auth_svc"
                    return
        pytest.fail("no user.registered event within 30 s")
    finally:
        await consumer.stop()


# --- refresh families -------------------------------------------------------------------


def test_refresh_rotates_both_tokens(edge: Edge) -> None:
    user = edge.register()
    first = edge.login(user["email"])
    reply = edge.refresh(first["refresh_token"])
    assert reply.status_code == 200, reply.text
    second = reply.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert edge.get("/v1/users/me", second["access_token"]).json()["user_id"] == user["user_id"]
    third = edge.refresh(second["refresh_token"])
    assert third.status_code == 200, third.text


def test_reusing_a_refresh_token_revokes_the_whole_family(edge: Edge) -> None:
    user = edge.register()
    first = edge.login(user["email"])
    second = edge.refresh(first["refresh_token"]).json()

    replay = edge.refresh(first["refresh_token"])
    assert (replay.status_code, _reason(replay)) == (401, "REFRESH_TOKEN_REUSED")
    # The thief may hold the newest token: it is dead too.
    newest = edge.refresh(second["refresh_token"])
    assert (newest.status_code, _reason(newest)) == (401, "REFRESH_TOKEN_INVALID")
    # Another session of the same user is untouched.
    other = edge.login(user["email"])
    assert edge.refresh(other["refresh_token"]).status_code == 200


def test_an_unknown_refresh_token_is_invalid(edge: Edge) -> None:
    for token in ("garbage", f"{uuid.uuid4().hex}.{'x' * 43}"):
        reply = edge.refresh(token)
        assert (reply.status_code, _reason(reply)) == (401, "REFRESH_TOKEN_INVALID")


def test_logout_needs_a_token_and_revokes_the_family(edge: Edge) -> None:
    user = edge.register()
    pair = edge.login(user["email"])
    anonymous = edge.post("/v1/auth/logout", {"refresh_token": pair["refresh_token"]})
    assert anonymous.status_code == 401

    reply = edge.post("/v1/auth/logout", {"refresh_token": pair["refresh_token"]}, token=pair["access_token"])
    assert reply.status_code == 200, reply.text
    after = edge.refresh(pair["refresh_token"])
    assert (after.status_code, _reason(after)) == (401, "REFRESH_TOKEN_INVALID")


def test_nobody_can_log_out_someone_elses_session(edge: Edge) -> None:
    victim = edge.login(edge.register()["email"])
    attacker = edge.login(edge.register()["email"])
    reply = edge.post("/v1/auth/logout", {"refresh_token": victim["refresh_token"]}, token=attacker["access_token"])
    assert (reply.status_code, _reason(reply)) == (401, "REFRESH_TOKEN_INVALID")
    assert edge.refresh(victim["refresh_token"]).status_code == 200


async def _refresh_concurrently(edge: Edge, refresh_token: str, times: int) -> list[int]:
    async with httpx.AsyncClient(base_url=edge.url, timeout=10) as client:
        replies = await asyncio.gather(
            *(client.post("/v1/auth/refresh", json={"refresh_token": refresh_token}) for _ in range(times))
        )
    return sorted(reply.status_code for reply in replies)


@pytest.mark.parametrize("racers", [2, 8])
async def test_concurrent_refreshes_of_one_token_yield_exactly_one_new_pair(edge: Edge, racers: int) -> None:
    email = edge.register()["email"]
    for _ in range(5):
        statuses = await _refresh_concurrently(edge, edge.login(email)["refresh_token"], racers)
        assert statuses == [200] + [401] * (racers - 1)


# --- login throttling -----------------------------------------------------------------


def test_five_failed_logins_throttle_the_email_even_for_the_right_password(edge: Edge) -> None:
    email = edge.register()["email"]
    for _ in range(5):
        reply = edge.post("/v1/auth/login", {"email": email, "password": "wrong password"})
        assert (reply.status_code, _reason(reply)) == (401, "INVALID_CREDENTIALS")
    throttled = edge.post("/v1/auth/login", {"email": email, "password": PASSWORD})
    assert (throttled.status_code, _reason(throttled)) == (429, "LOGIN_THROTTLED")
    retry_after = int(throttled.json()["details"][0]["metadata"]["retry_after_seconds"])
    assert 0 < retry_after <= 900
    # Another email is not affected.
    other = edge.register()["email"]
    assert edge.post("/v1/auth/login", {"email": other, "password": PASSWORD}).status_code == 200


def test_an_unknown_email_fails_and_throttles_exactly_like_a_wrong_password(edge: Edge) -> None:
    known = edge.register()["email"]
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    for _ in range(5):
        wrong = edge.post("/v1/auth/login", {"email": known, "password": "wrong password"})
        missing = edge.post("/v1/auth/login", {"email": unknown, "password": "wrong password"})
        assert wrong.status_code == missing.status_code == 401
        assert wrong.json() == missing.json()
    for email in (known, unknown):
        reply = edge.post("/v1/auth/login", {"email": email, "password": "wrong password"})
        assert (reply.status_code, _reason(reply)) == (429, "LOGIN_THROTTLED")


async def test_concurrent_guesses_cannot_exceed_the_limit(edge: Edge) -> None:
    email = edge.register()["email"]
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        replies = await asyncio.gather(
            *(client.post("/v1/auth/login", json={"email": email, "password": f"guess {n:04d}xx"}) for n in range(12))
        )
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [401] * 5 + [429] * 7


PROBE = {envoy_config.RATELIMIT_PROBE_HEADER: "1"}
PROBE_BURST = envoy_config.TEST_PROBE_LIMIT.burst


async def _burst(
    edge: Edge, method: str, path: str, *, source: str = "127.0.0.1", times: int = 40, **headers: str
) -> list[httpx.Response]:
    """`times` requests at once (four times the probe bucket's burst: however slow
    the machine, the bucket runs dry), from the loopback address `source`."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(base_url=edge.url, transport=transport, timeout=30) as client:
        body = {"refresh_token": "not-a-refresh-token"} if method == "POST" else None
        requests = (client.request(method, path, json=body, headers={**PROBE, **headers}) for _ in range(times))
        return list(await asyncio.gather(*requests))


def _assert_rate_limited(replies: list[httpx.Response]) -> httpx.Response:
    limited = [r for r in replies if r.status_code == 429]
    assert limited, [r.status_code for r in replies]
    first = limited[0]
    assert first.headers["retry-after"] == "1"
    assert first.headers["x-local-rate-limit"] == "true"
    assert first.headers["content-type"] == "application/json"
    assert first.json()["code"] == 8  # RESOURCE_EXHAUSTED, as a google.rpc.Status
    assert _reason(first) == "RATE_LIMITED"
    assert first.headers["ratelimit-limit"] == str(PROBE_BURST)
    assert first.headers["ratelimit-remaining"] == "0"
    assert 0 <= int(first.headers["ratelimit-reset"]) <= 1  # the buckets refill every second
    for reply in replies:  # the IETF draft's names only, on every reply of the route
        assert reply.headers["ratelimit-limit"] == str(PROBE_BURST), reply.status_code
        assert 0 <= int(reply.headers["ratelimit-remaining"]) <= PROBE_BURST
        assert not any(name.startswith("x-ratelimit-") for name in reply.headers)
    return first


async def test_the_edge_rate_limit_answers_429_with_retry_after_and_ratelimit_headers(edge: Edge) -> None:
    replies = await _burst(edge, "POST", "/v1/auth/refresh", source="127.0.0.1")
    _assert_rate_limited(replies)
    assert {r.status_code for r in replies} <= {401, 429}  # a bad refresh token, or throttled


async def test_a_throttled_user_leaves_another_users_budget_alone(edge: Edge) -> None:
    greedy, other = (edge.login(edge.register()["email"])["access_token"] for _ in range(2))
    replies = await _burst(edge, "GET", "/v1/users/me", authorization=f"Bearer {greedy}")
    _assert_rate_limited(replies)
    assert {r.status_code for r in replies} == {200, 429}
    # Same client address, another user: a full bucket of its own.
    [fresh] = await _burst(edge, "GET", "/v1/users/me", times=1, authorization=f"Bearer {other}")
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["ratelimit-limit"] == str(PROBE_BURST)
    # Its first token gone (or already refilled: the header is written with the reply).
    assert int(fresh.headers["ratelimit-remaining"]) >= PROBE_BURST - 1


async def test_public_methods_are_limited_per_client_address_not_per_x_forwarded_for(edge: Edge) -> None:
    # 127.0.0.2 and .3 are used by no other test: their buckets start full.
    _assert_rate_limited(await _burst(edge, "POST", "/v1/auth/refresh", source="127.0.0.2"))
    [fresh] = await _burst(edge, "POST", "/v1/auth/refresh", source="127.0.0.3", times=1)
    assert fresh.status_code == 401, fresh.text  # past the limit: the refresh token is bad
    # Its first token gone (or already refilled: the header is written with the reply).
    assert int(fresh.headers["ratelimit-remaining"]) >= PROBE_BURST - 1
    # The edge trusts no proxy in front (xff_num_trusted_hops 0): a client
    # naming another address in X-Forwarded-For is still the TCP peer.
    spoofed = [
        asyncio.create_task(
            _burst(
                edge, "POST", "/v1/auth/refresh", source="127.0.0.2", times=1, **{"x-forwarded-for": f"203.0.113.{n}"}
            )
        )
        for n in range(2 * PROBE_BURST)
    ]
    replies = [reply for batch in await asyncio.gather(*spoofed) for reply in batch]
    _assert_rate_limited(replies)


# --- the edge's JWT checks, with tokens minted from the real signing key ----------------


@dataclass
class Minter:
    kid: str
    key: ec.EllipticCurvePrivateKey

    def token(self, sub: str, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": "paymesh",
            "sub": sub,
            "role": "CUSTOMER",
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})


async def _minter_for(edge: Edge, kid: str | None = None) -> Minter:
    """A stored key (default: the one signing now), decrypted as auth_svc does."""
    engine = create_async_engine(edge.stack.database_url("auth"))
    try:
        auth_store = store.auth_store(engine)
        sealed, now = await auth_store.keys(), await auth_store.now()
    finally:
        await engine.dispose()
    if kid is None:
        policy = keys.KeyPolicy(token_ttl=timedelta(minutes=15), grace=timedelta(minutes=1), publish_lead=timedelta(0))
        current = keys.signing_key([s.record for s in sealed], now, policy)
        assert current is not None
        kid = current.kid
    cipher = keys.key_cipher(edge.stack.secrets.key_encryption_key)
    private = next(s for s in sealed if s.record.kid == kid).sealed_private_key
    return Minter(kid, keys.load_private_key(cipher.open(kid, private)))


@pytest.fixture(scope="module")
async def minter(edge: Edge) -> Minter:
    return await _minter_for(edge)


def test_a_token_minted_like_auth_svc_does_passes(edge: Edge, minter: Minter) -> None:
    user = edge.register()
    reply = edge.get("/v1/users/me", minter.token(user["user_id"]))
    assert reply.status_code == 200, reply.text


BAD_TOKENS = [
    "missing",
    "expired",
    "wrongly_signed",
    "alg_none",
    "hs256_with_the_public_key",
    "wrong_issuer",
    "wrong_audience",
    "no_expiry",
    "garbage",
]


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_bad_tokens_get_401_at_the_edge(edge: Edge, minter: Minter, case: str) -> None:
    sub = edge.register()["user_id"]
    now = int(time.time())
    public_pem = minter.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = Minter(minter.kid, ec.generate_private_key(ec.SECP256R1()))
    payload = {"iss": ISSUER, "aud": "paymesh", "sub": sub, "role": "ADMIN", "iat": now, "exp": now + 300}
    tokens: dict[str, Callable[[], str | None]] = {
        "missing": lambda: None,
        "expired": lambda: minter.token(sub, iat=now - 930, exp=now - 30),
        "wrongly_signed": lambda: forged.token(sub),
        "alg_none": lambda: jwt.encode(payload, "", algorithm="none", headers={"kid": minter.kid}),
        "hs256_with_the_public_key": lambda: _hs256(payload, public_pem, minter.kid),
        "wrong_issuer": lambda: minter.token(sub, iss="https://evil.example.com"),
        "wrong_audience": lambda: minter.token(sub, aud="another-api"),
        "no_expiry": lambda: _without_exp(minter, sub),
        "garbage": lambda: "not.a.jwt",
    }
    reply = edge.get("/v1/users/me", tokens[case]())
    assert reply.status_code == 401, reply.text
    assert reply.json()["code"] == 16
    assert _reason(reply) == "UNAUTHENTICATED"


def _hs256(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    # pyjwt refuses a PEM as an HMAC secret; sign by hand like an attacker would.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def _without_exp(minter: Minter, sub: str) -> str:
    claims = {"iss": ISSUER, "aud": "paymesh", "sub": sub, "role": "CUSTOMER", "iat": int(time.time())}
    return jwt.encode(claims, minter.key, algorithm="ES256", headers={"kid": minter.kid})


# --- key rotation ---------------------------------------------------------------------------


def _rotate(edge: Edge) -> str:
    result = edge.auth_command("rotate-keys")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[2].rstrip(":")  # "new key <kid>: published now, signs from ..."


def _jwks_kids(edge: Edge) -> list[str]:
    return [key["kid"] for key in edge.get("/.well-known/jwks.json").json()["keys"]]


def _login_until_signed_by(edge: Edge, email: str, kid: str) -> dict[str, Any]:
    # The publish lead of the test profile is a few seconds (envoy_config.key_publish_lead_seconds).
    def signed_by_kid() -> dict[str, Any]:
        pair = edge.login(email)
        return pair if _kid(pair["access_token"]) == kid else {}

    return poll_until(signed_by_kid, timeout=30)


async def test_rotation_keeps_old_tokens_working_and_a_removed_key_stops_verifying(edge: Edge) -> None:
    email = edge.register()["email"]

    # Key B: published at once, and only signs after Envoy has refetched the key set.
    key_b = _rotate(edge)
    assert key_b in _jwks_kids(edge)
    seen_b = _login_until_signed_by(edge, email, key_b)
    user_id = jwt.decode(seen_b["access_token"], options={"verify_signature": False})["sub"]
    assert edge.get("/v1/users/me", seen_b["access_token"]).status_code == 200
    # Two more tokens of B that Envoy has not seen yet: one is first shown after
    # the rotation, the other only after B is removed.
    later_b, unseen_b = edge.login(email), edge.login(email)
    assert _kid(later_b["access_token"]) == _kid(unseen_b["access_token"]) == key_b
    b_minter = await _minter_for(edge, key_b)

    # Key C takes over; B is rotated out but still published, and its tokens still
    # verify. Only tokens Envoy has never verified prove it: a token seen before
    # sits in Envoy's jwt_cache and would pass whatever the key set says.
    key_c = _rotate(edge)
    signed_by_c = _login_until_signed_by(edge, email, key_c)
    assert set(_jwks_kids(edge)) >= {key_b, key_c}
    fresh_b = b_minter.token(user_id)  # minted with B now, while C signs
    assert _kid(fresh_b) == key_b
    assert edge.get("/v1/users/me", fresh_b).status_code == 200
    assert edge.get("/v1/users/me", later_b["access_token"]).status_code == 200
    assert edge.get("/v1/users/me", signed_by_c["access_token"]).status_code == 200

    # B leaves the key set (revoked): once Envoy refetched it, B's tokens fail.
    # Probe with fresh B tokens: a token Envoy verified once sits in its
    # jwt_cache until it expires, whatever the key set says (docs/auth.md).
    revoked = edge.auth_command("revoke-key", f"--kid={key_b}")  # a kid may start with "-"
    assert revoked.returncode == 0, revoked.stderr
    assert key_b not in _jwks_kids(edge)
    poll_until(lambda: edge.get("/v1/users/me", b_minter.token(user_id)).status_code == 401, timeout=15)
    assert edge.get("/v1/users/me", unseen_b["access_token"]).status_code == 401
    assert edge.get("/v1/users/me", signed_by_c["access_token"]).status_code == 200


def test_the_signing_key_cannot_be_revoked(edge: Edge) -> None:
    kid = _kid(edge.login(edge.register()["email"])["access_token"])
    result = edge.auth_command("revoke-key", f"--kid={kid}")
    assert result.returncode == 1
    assert "signing key" in result.stderr
    assert kid in _jwks_kids(edge)


async def test_private_keys_are_encrypted_at_rest(edge: Edge) -> None:
    engine = create_async_engine(edge.stack.database_url("auth"))
    try:
        async with engine.connect() as conn:
            sealed = (await conn.execute(select(store.signing_keys.c.private_key_sealed))).scalars().all()
            hashes = (await conn.execute(select(store.users.c.password_hash))).scalars().all()
    finally:
        await engine.dispose()
    assert sealed
    assert all(b"PRIVATE KEY" not in blob for blob in sealed)
    assert hashes
    assert all(h.startswith("$argon2id$") for h in hashes)


# --- administrators -----------------------------------------------------------------


def test_an_admin_is_created_only_by_the_command_and_the_password_never_shows(edge: Edge) -> None:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    secret = f"admin secret {uuid.uuid4().hex}"
    result = edge.auth_command("create-admin", "--email", email, stdin=secret + "\n")
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    claims = jwt.decode(edge.login(email, secret)["access_token"], options={"verify_signature": False})
    assert claims["role"] == "ADMIN"
    again = edge.auth_command("create-admin", "--email", email, stdin=secret + "\n")
    assert again.returncode == 1


def test_a_customer_cannot_call_an_admin_method(stack: Stack) -> None:
    edge = Edge(stack, f"http://127.0.0.1:{stack.ports.envoy}")
    token = edge.login(edge.register()["email"])["access_token"]
    wallet = edge.post("/v1/wallets", {"currency": "EUR"}, token=token)
    assert wallet.status_code == 200, wallet.text
    reply = edge.post(f"/v1/wallets/{wallet.json()['wallet_id']}:freeze", {"reason": "mine"}, token=token)
    assert reply.status_code == 403, reply.text
    assert _reason(reply) == "ADMIN_REQUIRED"
