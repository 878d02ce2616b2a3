"""Check 5: no notification was sent twice, none was lost.

- notify_svc's database holds at most one notification per (event, EMAIL,
  user) and per (event, WEBHOOK, endpoint);
- the mail sink received each email (Message-ID `<notification id@paymesh>`)
  once, and the harness's webhook endpoints accepted each (endpoint, event)
  once, every one correctly signed with the endpoint's secret;
- every notification is DELIVERED (or CANCELED with its endpoint), and every
  DELIVERED email or webhook did arrive;
- notify_svc consumed every event on the topics it reads (no event lost).

docs/notifications.md documents one way to send twice: the recipient accepted a
message but its outcome was never recorded (notify_svc killed before it
recorded the round; the same happens when PostgreSQL dies under the record
statement), so the lease lapses and the message goes again with the same
Message-ID / Paymesh-Event-Id for receivers to deduplicate. A second copy
whose first went out before such a crash was over and whose second came after
it began (a kill -9 of notify_svc or of PostgreSQL) is counted as
`tolerated (crash)`, not as a violation; any other second copy, including one
across a SIGTERM (a graceful stop records what it sent), is a violation.
"""

from __future__ import annotations

from collections import defaultdict

from devstack.chaos.books import Receipt
from devstack.chaos.model import FaultRecord, Snapshot
from devstack.chaos.verdict import CheckResult

# Receipt times come from the Date header (whole seconds) or a poll of the mail sink's log.
RECEIPT_SLACK_S = 2.0
# Crashes that can leave a delivered message unrecorded.
CRASHES = frozenset({("kill9", "notify"), ("kill9", "postgres")})


def crash_between(first: float, last: float, faults: list[FaultRecord]) -> bool:
    """A crash that may lose a round's outcomes: the first copy went out before it was over, the last after
    it began."""
    return any(
        (f.kind, f.target) in CRASHES and f.began <= last and first <= f.restored + RECEIPT_SLACK_S for f in faults
    )


def check_notifications(snapshot: Snapshot) -> CheckResult:
    result = CheckResult("5", "no notification sent twice or lost")
    notify = snapshot.notify
    result.checked = len(notify.notifications)
    rows: dict[tuple[str, str, str], int] = defaultdict(int)
    for n in notify.notifications:
        rows[(n.event_id, n.channel, n.endpoint_id or n.user_id)] += 1
        result.count(f"{n.channel.lower()} {n.state}")
    for (event_id, channel, recipient), count in rows.items():
        if count > 1:
            result.fail(f"{count} {channel} notifications of event {event_id} for {recipient}")
    received: dict[tuple[str, str], list[Receipt]] = defaultdict(list)
    for receipt in notify.receipts:
        if not receipt.signature_ok:
            result.fail(f"webhook {receipt.delivery_id} arrived with a signature that does not verify")
        if receipt.accepted:
            received[(receipt.channel, receipt.delivery_id)].append(receipt)
    for (channel, delivery_id), copies in received.items():
        result.count(f"{channel.lower()} received")
        if len(copies) < 2:
            continue
        times = sorted(c.at for c in copies)
        if crash_between(times[0], times[-1], snapshot.faults):
            result.count("tolerated (crash)")
        else:
            shown = ", ".join(f"{t:.1f}s" for t in times)
            result.fail(f"{channel} {delivery_id} (event {copies[0].event_id}) was received {len(copies)} times, "
                        f"at {shown}")  # fmt: skip
    for n in notify.notifications:
        if n.state != "DELIVERED":
            if n.state != "CANCELED":
                result.fail(f"{n.channel} notification {n.notification_id} of event {n.event_id} is {n.state}")
            continue
        expected = delivery_key(n.channel, n.notification_id, n.endpoint_id, n.event_id, notify.endpoints)
        if expected is not None and (n.channel, expected) not in received:
            result.fail(f"{n.channel} notification {n.notification_id} of event {n.event_id} is DELIVERED but "
                        "never arrived")  # fmt: skip
    lost = notify.topic_event_ids - notify.processed_event_ids
    result.count("events consumed", len(notify.processed_event_ids & notify.topic_event_ids))
    for event_id in sorted(lost)[:50]:
        result.fail(f"event {event_id} is on Kafka but notify_svc never consumed it")
    if len(lost) > 50:
        result.fail(f"... and {len(lost) - 50} more events never consumed")
    return result


def delivery_key(
    channel: str, notification_id: str, endpoint_id: str, event_id: str, endpoints: dict[str, str]
) -> str | None:
    """How a receiver knows a delivery: the email's Message-ID, or '<endpoint path> <event id>' for a webhook
    (None for an endpoint the harness did not create)."""
    if channel == "EMAIL":
        return f"<{notification_id}@paymesh>"
    path = endpoints.get(endpoint_id)
    return None if path is None else f"{path} {event_id}"
