"""paymesh_client: paymesh's typed messages and gRPC stubs, and a thin async client.

    from paymesh_client import PaymeshClient, money

    async with PaymeshClient("127.0.0.1:8080", token=access_token) as client:
        wallet = await client.create_wallet("USD")
        await client.deposit(wallet.wallet_id, money("USD", 10_000), card_token="tok_visa")

The generated code is under paymesh_client.proto (paymesh/<service>/v1/*_pb2
with .pyi stubs, *_pb2_grpc with typed sync and async stubs); the modules most
callers need are re-exported here.
"""

from paymesh_client.client import PaymeshClient, RetryPolicy, money
from paymesh_client.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InternalError,
    InvalidArgument,
    NotFound,
    PaymeshError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from paymesh_client.proto.paymesh.auth.v1 import auth_pb2
from paymesh_client.proto.paymesh.common.v1 import money_pb2
from paymesh_client.proto.paymesh.notify.v1 import notify_pb2
from paymesh_client.proto.paymesh.payment.v1 import payment_pb2
from paymesh_client.proto.paymesh.wallet.v1 import wallet_pb2

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "PaymeshClient",
    "PaymeshError",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "auth_pb2",
    "money",
    "money_pb2",
    "notify_pb2",
    "payment_pb2",
    "wallet_pb2",
]
