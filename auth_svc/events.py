"""auth_svc's outbox payloads (topic paymesh.users.v1)."""

from __future__ import annotations

from auth_svc.accounts import Account
from paymesh.auth.v1 import auth_pb2
from paymesh.events.v1 import events_pb2
from paymesh_runtime.wire import timestamp

USER_REGISTERED = "user.registered"


def user_proto(account: Account) -> auth_pb2.User:
    return auth_pb2.User(
        user_id=account.user_id,
        email=account.email,
        display_name=account.display_name,
        account_type=account.role.value,  # the enum value's name
        create_time=timestamp(account.created_at),
    )


def user_registered(account: Account) -> events_pb2.Event:
    """The envelope without id/sequence/time; Outbox.enqueue completes it."""
    return events_pb2.Event(
        type=USER_REGISTERED,
        aggregate_type="user",
        aggregate_id=account.user_id,
        user_registered=events_pb2.UserRegistered(user=user_proto(account)),
    )
