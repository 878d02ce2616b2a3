"""Check 4: the Kafka events, read from the beginning and deduplicated on the event id, match the state changes.

4a  payment_svc's `transitions` table, per resource in transition order, is a
    legal path through its lifecycle from '' (payment_svc.lifecycle's tables)
    and shows up on `paymesh.payments.v1` one to one: `<kind>.created` for the
    first, `<kind>.<state>` for each later one, the payload carrying that
    state; each aggregate's events are numbered 1..n without gaps and arrive
    in that order (the first copy of each, in partition order); copies of an
    event are identical; nothing is published that no transition explains;
4b  every posting to a user's wallet is announced by exactly one
    `wallet.posted` event on `paymesh.wallets.v1`, and every such event names
    a posting.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from devstack.chaos.books import EventRecord, Transition
from devstack.chaos.model import Snapshot
from devstack.chaos.verdict import CheckResult
from payment_svc.lifecycle import PAYMENT_TRANSITIONS, PAYOUT_TRANSITIONS, REFUND_TRANSITIONS
from paymesh_runtime.kafka import TOPIC_PAYMENTS, TOPIC_WALLETS

_LIFECYCLES: Mapping[str, Mapping[str, frozenset[str]]] = {
    kind: {str(state): frozenset(str(to) for to in targets) for state, targets in table.items()}
    for kind, table in (
        ("payment", PAYMENT_TRANSITIONS),
        ("refund", REFUND_TRANSITIONS),
        ("payout", PAYOUT_TRANSITIONS),
    )
}
_FIRST_STATE = "PENDING"


def expected_event_type(kind: str, from_state: str, to_state: str) -> str:
    """The event a transition publishes (payment_svc.events.event_type)."""
    return f"{kind}.created" if not from_state else f"{kind}.{to_state.lower()}"


def first_copies(events: list[EventRecord], result: CheckResult) -> list[EventRecord]:
    """Each event once (its first copy in partition order); copies that differ are violations."""
    seen: dict[str, EventRecord] = {}
    for event in sorted(events, key=lambda e: (e.topic, e.partition, e.offset)):
        first = seen.get(event.event_id)
        if first is None:
            seen[event.event_id] = event
            continue
        result.count("duplicate copies (deduplicated)")
        same = (first.event_type, first.aggregate_id, first.sequence, first.resource_id, first.state)
        again = (event.event_type, event.aggregate_id, event.sequence, event.resource_id, event.state)
        if same != again:
            result.fail(f"event {event.event_id} was published twice with different content: {same} vs {again}")
    return list(seen.values())


def check_lifecycle(transitions: list[Transition], result: CheckResult) -> dict[str, list[Transition]]:
    """Transitions by resource, in order; each resource's path must be legal and chained."""
    by_resource: dict[str, list[Transition]] = defaultdict(list)
    for transition in sorted(transitions, key=lambda t: t.transition_id):
        by_resource[transition.resource_id].append(transition)
    for resource_id, path in by_resource.items():
        kind = path[0].resource_type
        previous = ""
        for step in path:
            legal = (
                step.to_state == _FIRST_STATE
                if not previous
                else step.to_state in _LIFECYCLES[kind].get(previous, frozenset())
            )
            if step.from_state != previous or not legal:
                came_from, after = step.from_state or "(new)", previous or "(new)"
                result.fail(f"{kind} {resource_id}: illegal transition {came_from} -> {step.to_state} after "
                            f"{after} (transition {step.transition_id})")  # fmt: skip
            previous = step.to_state
    return by_resource


def check_payment_events(snapshot: Snapshot) -> CheckResult:
    result = CheckResult("4a", "Kafka events match state transitions 1:1, in order")
    records = [e for e in snapshot.events if e.topic == TOPIC_PAYMENTS]
    events = first_copies(records, result)
    by_resource = check_lifecycle(snapshot.payments.transitions, result)
    result.checked = len(snapshot.payments.transitions)
    result.count("events", len(events))
    _check_sequences(events, result)
    published: dict[str, list[EventRecord]] = defaultdict(list)
    for event in events:
        published[event.resource_id].append(event)
    refunds = snapshot.payments.refunds
    for resource_id, path in by_resource.items():
        kind = path[0].resource_type
        want = [(expected_event_type(kind, t.from_state, t.to_state), t.to_state) for t in path]
        got_events = sorted(published.pop(resource_id, []), key=lambda e: (e.aggregate_id, e.sequence))
        got = [(e.event_type, e.state) for e in got_events]
        if want != got:
            result.fail(f"{kind} {resource_id}: transitions {want} but events {got}")
        aggregate = refunds[resource_id].payment_id if kind == "refund" and resource_id in refunds else resource_id
        for event in got_events:
            if event.aggregate_id != aggregate:
                result.fail(f"event {event.event_id} ({event.event_type}) of {resource_id} has aggregate "
                            f"{event.aggregate_id}, not {aggregate}")  # fmt: skip
    for resource_id, extra in published.items():
        result.fail(f"{len(extra)} events of {resource_id or '(no resource)'} without any transition: "
                    f"{[e.event_type for e in extra]}")  # fmt: skip
    return result


def _check_sequences(events: list[EventRecord], result: CheckResult) -> None:
    """Per aggregate: sequences 1..n, one event each, first copies in partition order by sequence."""
    by_aggregate: dict[str, list[EventRecord]] = defaultdict(list)
    for event in sorted(events, key=lambda e: (e.partition, e.offset)):
        by_aggregate[event.aggregate_id].append(event)
    for aggregate, arrived in by_aggregate.items():
        numbers = sorted(e.sequence for e in arrived)
        if numbers != list(range(1, len(arrived) + 1)):
            result.fail(f"aggregate {aggregate}: sequences {numbers}, not 1..{len(arrived)}")
        order = [e.sequence for e in arrived]
        if order != sorted(order):
            result.fail(f"aggregate {aggregate}: events arrived in sequence order {order}")
        if len({e.partition for e in arrived}) > 1:
            result.fail(f"aggregate {aggregate}: events on several partitions {sorted({e.partition for e in arrived})}")


def check_wallet_events(snapshot: Snapshot) -> CheckResult:
    result = CheckResult("4b", "one wallet.posted event per user-wallet posting")
    wallet_events = first_copies([e for e in snapshot.events if e.topic == TOPIC_WALLETS], result)
    _check_sequences(wallet_events, result)
    events = [e for e in wallet_events if e.event_type == "wallet.posted"]
    ledger = snapshot.ledger
    user_postings = {
        p.posting_id: p
        for p in ledger.postings
        if (account := ledger.accounts.get(p.account_id)) is not None and not account.system_account
    }
    result.checked = len(user_postings)
    announced: dict[str, int] = defaultdict(int)
    for event in events:
        announced[event.posting_id] += 1
    for posting_id, posting in user_postings.items():
        if announced.get(posting_id, 0) != 1:
            result.fail(f"posting {posting_id} ({posting.amount:+} on {posting.account_id}) is announced by "
                        f"{announced.get(posting_id, 0)} wallet.posted events")  # fmt: skip
    for posting_id in set(announced) - set(user_postings):
        result.fail(f"wallet.posted events name posting {posting_id}, which the ledger does not have")
    return result
