"""auth_svc bootstrap: builds the dependencies once and wires the server."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from auth_svc import keys, store
from auth_svc.accounts import Passwords
from auth_svc.commands import COMMANDS
from auth_svc.keyring import KeyRing
from auth_svc.service import AuthService, TokenSettings
from auth_svc.sessions import LoginThrottle, Sessions
from auth_svc.settings import AuthSettings
from paymesh.auth.v1 import auth_pb2_grpc
from paymesh_runtime import app
from paymesh_runtime.callers import end_users
from paymesh_runtime.db import create_engine, database_probe
from paymesh_runtime.outbox import outbox_relay
from paymesh_runtime.redis import create_redis, redis_probe
from paymesh_runtime.server import Servicer

NAME = "auth_svc"


async def build(settings: AuthSettings) -> app.ServiceApp:
    # Fails fast on a missing or malformed key-encryption key.
    cipher = keys.key_cipher(settings.key_encryption_key.get_secret_value())
    engine = create_engine(settings)
    redis = create_redis(settings.redis_url)
    auth_store = store.auth_store(engine)
    keyring = KeyRing(auth_store, cipher, settings.key_policy(), cache_seconds=settings.key_cache_seconds)
    await keyring.ensure_first_key()
    service = AuthService(
        auth_store,
        Passwords(),
        keyring,
        Sessions(
            redis,
            idle_ttl_seconds=settings.refresh_token_ttl_seconds,
            max_lifetime_seconds=settings.session_max_lifetime_seconds,
        ),
        LoginThrottle(
            redis, max_failures=settings.login_max_failures, window_seconds=settings.login_failure_window_seconds
        ),
        TokenSettings(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        ),
    )
    relay = outbox_relay(engine, settings)

    async def own_jwks() -> list[dict[str, str]]:
        # auth_svc verifies the tokens it issued with its own key store: what GetJwks publishes.
        return [jwk.as_dict() for jwk in await keyring.published()]

    return app.ServiceApp(
        servicers=[Servicer("paymesh.auth.v1.AuthService", service, auth_pb2_grpc.add_AuthServiceServicer_to_server)],
        probes={"postgres": database_probe(engine), "redis": redis_probe(redis)},
        callers=end_users(settings, NAME, jwks=own_jwks),
        background=[relay.run],
        cleanup=[engine.dispose, redis.aclose],
    )


def main() -> None:
    app.main(NAME, AuthSettings, build, Path(__file__).parent / "migrations", commands=COMMANDS)
