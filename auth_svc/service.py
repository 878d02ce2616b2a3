"""AuthService gRPC handlers: validate, call the domain, map errors."""

from __future__ import annotations

from paymesh.auth.v1 import auth_pb2_grpc


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    """Accounts and tokens. Methods not built yet answer UNIMPLEMENTED."""
