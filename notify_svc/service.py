"""NotifyService gRPC handlers: validate, call the domain, map errors."""

from __future__ import annotations

from paymesh.notify.v1 import notify_pb2_grpc


class NotifyService(notify_pb2_grpc.NotifyServiceServicer):
    """Notifications and webhooks. Methods not built yet answer UNIMPLEMENTED."""
