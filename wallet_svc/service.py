"""WalletService gRPC handlers: validate, call the domain, map errors."""

from __future__ import annotations

from paymesh.wallet.v1 import wallet_pb2_grpc


class WalletService(wallet_pb2_grpc.WalletServiceServicer):
    """The ledger. Methods not built yet answer UNIMPLEMENTED."""
