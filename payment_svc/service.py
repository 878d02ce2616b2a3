"""PaymentService gRPC handlers: validate, call the domain, map errors."""

from __future__ import annotations

from paymesh.payment.v1 import payment_pb2_grpc


class PaymentService(payment_pb2_grpc.PaymentServiceServicer):
    """Payments, refunds, payouts. Methods not built yet answer UNIMPLEMENTED."""
