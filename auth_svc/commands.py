"""Operator commands: `python -m auth_svc <command>` (see docs/auth.md).

- create-admin --email E [--display-name N]: the only way to an ADMIN
  account. The password comes from AUTH_ADMIN_PASSWORD or stdin, never from
  the command line (argv shows up in `ps` and shell history).
- rotate-keys [--publish-lead-seconds S]: a new signing key, published now,
  signing after the lead; the old key verifies until its tokens expired.
- list-keys: every key and where it is on its timeline.
- revoke-key --kid=K: a compromised key leaves the JWKS now (`=`: a base64url kid may begin with "-").
- prune-keys: deletes keys that can no longer verify a live token.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import cast

from sqlalchemy.ext.asyncio import AsyncEngine

from auth_svc import accounts, keys
from auth_svc.accounts import Passwords
from auth_svc.settings import AuthSettings
from auth_svc.store import AuthStore, auth_store
from paymesh_runtime.app import Command
from paymesh_runtime.db import create_engine
from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.identity import Role
from paymesh_runtime.settings import ServiceSettings

ADMIN_PASSWORD_ENV = "AUTH_ADMIN_PASSWORD"  # noqa: S105 (a variable name)


def _run(settings: ServiceSettings, job: Callable[[AuthSettings, AuthStore], Awaitable[int]]) -> None:
    """Runs `job` with a store, then exits with its status."""

    async def main() -> int:
        engine: AsyncEngine = create_engine(settings)
        try:
            return await job(cast(AuthSettings, settings), auth_store(engine))
        finally:
            await engine.dispose()

    status = asyncio.run(main())
    if status:
        raise SystemExit(status)


# --- create-admin ------------------------------------------------------------------


def _configure_create_admin(parser: argparse.ArgumentParser) -> None:
    parser.description = f"Create an ADMIN account; the password is read from ${ADMIN_PASSWORD_ENV} or stdin."
    parser.add_argument("--email", required=True)
    parser.add_argument("--display-name", default="Administrator")


def _read_password() -> str:
    from_env = os.environ.get(ADMIN_PASSWORD_ENV)
    if from_env:
        return from_env
    if sys.stdin.isatty():
        first = getpass.getpass("admin password: ")
        if getpass.getpass("again: ") != first:
            raise SystemExit("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


async def _create_admin(settings: AuthSettings, store: AuthStore, args: argparse.Namespace) -> int:
    try:
        signup = accounts.sign_up(
            args.email, _read_password(), args.display_name, Role.ADMIN, allowed=frozenset({Role.ADMIN})
        )
    except PaymeshError as error:
        print(f"create-admin: {error.reason}: {error.message}", file=sys.stderr)
        return 2
    password_hash = await asyncio.to_thread(Passwords().hash, signup.password)
    account = await store.create_user(signup, password_hash)
    if account is None:
        print(f"create-admin: {signup.email} is already registered", file=sys.stderr)
        return 1
    print(f"created ADMIN {account.user_id} <{account.email}>")
    return 0


# --- keys ----------------------------------------------------------------------------


def _configure_rotate(parser: argparse.ArgumentParser) -> None:
    parser.description = "Add a signing key: published now, signing after the publish lead."
    parser.add_argument(
        "--publish-lead-seconds",
        type=int,
        default=None,
        help="default AUTH_KEY_PUBLISH_LEAD_SECONDS; 0 signs at once (Envoy rejects its tokens until it refetches)",
    )


async def _rotate(settings: AuthSettings, store: AuthStore, args: argparse.Namespace) -> int:
    lead = settings.key_publish_lead_seconds if args.publish_lead_seconds is None else args.publish_lead_seconds
    if lead < 0:
        print("rotate-keys: --publish-lead-seconds must not be negative", file=sys.stderr)
        return 2
    cipher = keys.key_cipher(settings.key_encryption_key.get_secret_value())
    new = keys.generate_key()
    activates_at = await store.add_key(
        new.jwk.kid, new.jwk, cipher.seal(new.jwk.kid, new.private_pem), timedelta(seconds=lead)
    )
    print(f"new key {new.jwk.kid}: published now, signs from {activates_at.isoformat()}")
    return 0


async def _list_keys(settings: AuthSettings, store: AuthStore, args: argparse.Namespace) -> int:
    now = await store.now()
    for state in keys.timeline([s.record for s in await store.keys()], now, settings.key_policy()):
        until = state.published_until.isoformat() if state.published_until else "-"
        print(f"{state.record.kid}  {state.state:<8}  activates {state.record.activates_at.isoformat()}  until {until}")
    return 0


def _configure_revoke(parser: argparse.ArgumentParser) -> None:
    parser.description = "Remove a (compromised) key from the JWKS now; its tokens fail once Envoy refetches."
    parser.add_argument("--kid", required=True)


async def _revoke(settings: AuthSettings, store: AuthStore, args: argparse.Namespace) -> int:
    records = [s.record for s in await store.keys()]
    problem = keys.revocation_error(records, args.kid, await store.now(), settings.key_policy())
    if problem:
        print(f"revoke-key: {problem}", file=sys.stderr)
        return 1
    revoked = await store.revoke_key(args.kid)
    print(f"key {args.kid}: {'revoked' if revoked else 'was already revoked'}")
    return 0


async def _prune(settings: AuthSettings, store: AuthStore, args: argparse.Namespace) -> int:
    records = [s.record for s in await store.keys()]
    prunable = keys.prunable_keys(records, await store.now(), settings.key_policy())
    deleted = await store.delete_keys([k.kid for k in prunable])
    print(f"deleted {deleted} key(s): {', '.join(k.kid for k in prunable) or '-'}")
    return 0


def _command(job: Callable[[AuthSettings, AuthStore, argparse.Namespace], Awaitable[int]]) -> Command:
    def command(settings: ServiceSettings, args: argparse.Namespace) -> None:
        _run(settings, lambda s, store: job(s, store, args))

    return command


def _no_options(parser: argparse.ArgumentParser) -> None:
    del parser


COMMANDS: Mapping[str, tuple[Callable[[argparse.ArgumentParser], None], Command]] = {
    "create-admin": (_configure_create_admin, _command(_create_admin)),
    "rotate-keys": (_configure_rotate, _command(_rotate)),
    "list-keys": (_no_options, _command(_list_keys)),
    "revoke-key": (_configure_revoke, _command(_revoke)),
    "prune-keys": (_no_options, _command(_prune)),
}
