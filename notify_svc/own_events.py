"""Events notify makes itself: a `webhook.test` delivery, and the `webhook_endpoint.disabled` notice.

They are envelopes like the consumed ones (paymesh.events.v1.Event, producer
"notify_svc", no payload) and are recorded in processed_event like them, so a
delivery of one is listed, retried, dead-lettered and redelivered as any
other.
"""

from __future__ import annotations

import uuid

from paymesh.events.v1 import events_pb2

PRODUCER = "notify_svc"


def make(event_type: str, endpoint_id: str) -> events_pb2.Event:
    """A new envelope of `event_type` about a webhook endpoint."""
    event = events_pb2.Event(
        id=str(uuid.uuid4()),
        type=event_type,
        aggregate_type="webhook_endpoint",
        aggregate_id=endpoint_id,
        sequence=1,
        producer=PRODUCER,
    )
    event.occurred_at.GetCurrentTime()
    return event
