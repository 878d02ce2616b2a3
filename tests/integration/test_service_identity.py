"""The edge is the only door for end-user identity: each service's own port, called directly.

Every service verifies the bearer token itself (auth_svc's JWKS, issuer,
audience, expiry); identity headers count only beside a valid service token of
a service allowed to act for its users (payment_svc → wallet_svc). Called on
the test stack's real services (and, last, through the real Envoy), with
accounts made through the edge and tokens signed by auth_svc's keys.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from devstack.stack import Stack
from paymesh.auth.v1 import auth_pb2, auth_pb2_grpc
from paymesh.common.v1 import money_pb2
from paymesh.notify.v1 import notify_pb2, notify_pb2_grpc
from paymesh.payment.v1 import payment_pb2, payment_pb2_grpc
from paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from paymesh_runtime.access_tokens import DEFAULT_UNKNOWN_KID_INTERVAL_SECONDS
from paymesh_runtime.identity import (
    AUTHORIZATION_HEADER,
    ROLE_HEADER,
    SERVICE_TOKEN_HEADER,
    USER_ID_HEADER,
    ServiceTokens,
)
from tests import identity
from tests.e2e.test_authorization import Edge, Person
from tests.helpers import auth_command, poll_until
from tests.identity import TokenMinter

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
Metadata = tuple[tuple[str, str], ...]
FINAL = {payment_pb2.Payment.SUCCEEDED, payment_pb2.Payment.FAILED, payment_pb2.Payment.CANCELED}


class Direct:
    """Stubs on each service's own port: no Envoy in between."""

    def __init__(self, stack: Stack) -> None:
        self.tokens = ServiceTokens(stack.secrets.service_token_secret)
        self._channels = {
            name: grpc.insecure_channel(f"127.0.0.1:{stack.ports.grpc(name)}")
            for name in ("auth", "wallet", "payment", "notify")
        }
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channels["auth"])  # type: ignore[no-untyped-call]
        self.wallet = wallet_pb2_grpc.WalletServiceStub(self._channels["wallet"])  # type: ignore[no-untyped-call]
        self.payment = payment_pb2_grpc.PaymentServiceStub(self._channels["payment"])  # type: ignore[no-untyped-call]
        self.notify = notify_pb2_grpc.NotifyServiceStub(self._channels["notify"])  # type: ignore[no-untyped-call]

    def service(self, name: str) -> Metadata:
        return ((SERVICE_TOKEN_HEADER, self.tokens.issue(name)),)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def _claims(who: Person, role: str = "CUSTOMER") -> Metadata:
    """The headers Envoy writes from a verified token: what the raw ports used to trust."""
    return ((USER_ID_HEADER, who.user_id), (ROLE_HEADER, role))


def _bearer(token: str) -> Metadata:
    return ((AUTHORIZATION_HEADER, f"Bearer {token}"),)


@pytest.fixture(scope="module")
def mesh(_test_stack: Stack) -> Stack:
    """The whole stack, as it should run: earlier integration tests stop the stack's payment_svc."""
    _test_stack.up()
    identity.publish_test_key(_test_stack)
    return _test_stack


@pytest.fixture(scope="module")
def edge(mesh: Stack) -> Edge:
    return Edge(mesh)


@pytest.fixture(scope="module")
def direct(mesh: Stack) -> Iterator[Direct]:
    stubs = Direct(mesh)
    yield stubs
    stubs.close()


@pytest.fixture(scope="module")
def alice(edge: Edge) -> Person:
    return edge.person()


# What a user-facing method of each service looks like; `who` is the caller's metadata.
Probe = Callable[[Direct, Person, Metadata], Any]
PROBES: dict[str, Probe] = {
    "auth GetMe": lambda d, p, md: d.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md, timeout=10),
    "wallet GetWallet": lambda d, p, md: d.wallet.GetWallet(
        wallet_pb2.GetWalletRequest(wallet_id=p.wallet_id), metadata=md, timeout=10
    ),
    "wallet ListWallets": lambda d, p, md: d.wallet.ListWallets(
        wallet_pb2.ListWalletsRequest(), metadata=md, timeout=10
    ),
    "payment ListPayments": lambda d, p, md: d.payment.ListPayments(
        payment_pb2.ListPaymentsRequest(), metadata=md, timeout=10
    ),
    "notify ListNotifications": lambda d, p, md: d.notify.ListNotifications(
        notify_pb2.ListNotificationsRequest(), metadata=md, timeout=10
    ),
}


def _code(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.StatusCode:
    """The status code `call(*args, **kwargs)` fails with."""
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    code: grpc.StatusCode = raised.value.code()  # type: ignore[attr-defined]
    return code


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_identity_headers_alone_are_no_user_on_any_raw_port(direct: Direct, alice: Person, probe: str) -> None:
    for role in ("CUSTOMER", "ADMIN"):
        assert _code(PROBES[probe], direct, alice, _claims(alice, role)) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_a_valid_token_works_on_every_raw_port(direct: Direct, alice: Person, probe: str) -> None:
    PROBES[probe](direct, alice, _bearer(alice.token))  # from Login: auth_svc's signing key
    PROBES[probe](direct, alice, identity.bearer(alice.user_id))  # the stack's test key, also published


def test_the_raw_ports_act_for_the_tokens_user(direct: Direct, edge: Edge, alice: Person) -> None:
    me = direct.auth.GetMe(auth_pb2.GetMeRequest(), metadata=_bearer(alice.token), timeout=10)
    assert me.user_id == alice.user_id
    wallet = direct.wallet.GetWallet(
        wallet_pb2.GetWalletRequest(wallet_id=alice.wallet_id), metadata=_bearer(alice.token), timeout=10
    )
    assert wallet.owner_id == alice.user_id
    mallory = edge.person()
    # Mallory's token with Alice's claims beside it: the token decides, and the wallet is not hers.
    spoofed = (*_bearer(mallory.token), *_claims(alice, "ADMIN"))
    get = wallet_pb2.GetWalletRequest(wallet_id=alice.wallet_id)
    assert _code(direct.wallet.GetWallet, get, metadata=spoofed, timeout=10) == grpc.StatusCode.NOT_FOUND


def _bad_tokens(alice: Person) -> dict[str, str]:
    now = int(time.time())
    test_key = identity.minter()
    impostor = TokenMinter(test_key.kid, ec.generate_private_key(ec.SECP256R1()), test_key.issuer)
    stranger = TokenMinter("never-published", ec.generate_private_key(ec.SECP256R1()), test_key.issuer)
    sub = alice.user_id
    return {
        "forged (another key, a published kid)": impostor.token(sub),
        "signed by an unpublished key": stranger.token(sub),
        "expired": test_key.token(sub, iat=now - 960, exp=now - 60),
        "wrong audience": test_key.token(sub, aud="another-api"),
        "wrong issuer": test_key.token(sub, iss="paymesh-local"),
        "not a JWT": "not.a.jwt",
    }


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_bad_tokens_are_unauthenticated_on_every_raw_port(direct: Direct, alice: Person, probe: str) -> None:
    for case, token in _bad_tokens(alice).items():
        # Alone, and with the claims an attacker would add beside it: neither makes a user.
        for metadata in (_bearer(token), (*_bearer(token), *_claims(alice))):
            assert _code(PROBES[probe], direct, alice, metadata) == grpc.StatusCode.UNAUTHENTICATED, case


def test_identity_headers_from_a_service_that_may_not_delegate_are_refused(direct: Direct, alice: Person) -> None:
    create = wallet_pb2.CreateWalletRequest(currency="EUR")
    get = wallet_pb2.GetWalletRequest(wallet_id=alice.wallet_id)
    for service in ("notify_svc", "auth_svc"):
        claims = (*_claims(alice), *direct.service(service))
        code = _code(direct.wallet.CreateWallet, create, metadata=claims, timeout=10)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # Without a user GetWallet is the internal lookup, which only payment_svc may make.
        code = _code(direct.wallet.GetWallet, get, metadata=claims, timeout=10)
        assert code == grpc.StatusCode.PERMISSION_DENIED
    # payment_svc, notify_svc and auth_svc let no service act for their users, payment_svc's own token included.
    for service in ("payment_svc", "wallet_svc"):
        claims = (*_claims(alice), *direct.service(service))
        for probe in ("payment ListPayments", "notify ListNotifications", "auth GetMe"):
            assert _code(PROBES[probe], direct, alice, claims) == grpc.StatusCode.UNAUTHENTICATED, probe


def test_payment_svc_acts_for_its_user_at_wallet_svc(direct: Direct, edge: Edge, alice: Person) -> None:
    as_payment_svc_for_alice = (*_claims(alice), *direct.service("payment_svc"))
    get = wallet_pb2.GetWalletRequest(wallet_id=alice.wallet_id)
    assert direct.wallet.GetWallet(get, metadata=as_payment_svc_for_alice, timeout=10).owner_id == alice.user_id
    someone_else = (*_claims(edge.person()), *direct.service("payment_svc"))
    assert _code(direct.wallet.GetWallet, get, metadata=someone_else, timeout=10) == grpc.StatusCode.NOT_FOUND


def _final(direct: Direct, payment_id: str, who: Person) -> payment_pb2.Payment:
    request = payment_pb2.GetPaymentRequest(payment_id=payment_id)

    def done() -> payment_pb2.Payment | None:
        payment = direct.payment.GetPayment(request, metadata=_bearer(who.token), timeout=10)
        return payment if payment.state in FINAL else None

    result = poll_until(done, timeout=60, interval=0.3)
    assert result is not None
    return result


def test_payments_made_on_payment_svcs_raw_port_move_money_through_wallet_svc(direct: Direct, edge: Edge) -> None:
    payer, shop = edge.person(), edge.person("MERCHANT")
    usd = money_pb2.Money(currency="USD", amount=500)
    deposit = direct.payment.CreatePayment(
        payment_pb2.CreatePaymentRequest(
            source=payment_pb2.PaymentSource(card_token="tok_visa"), destination_wallet_id=payer.wallet_id, amount=usd
        ),
        metadata=(*_bearer(payer.token), ("idempotency-key", uuid.uuid4().hex)),
        timeout=20,
    )
    assert _final(direct, deposit.payment_id, payer).state == payment_pb2.Payment.SUCCEEDED
    paid = direct.payment.CreatePayment(
        payment_pb2.CreatePaymentRequest(
            source=payment_pb2.PaymentSource(wallet_id=payer.wallet_id),
            destination_wallet_id=shop.wallet_id,
            amount=money_pb2.Money(currency="USD", amount=200),
        ),
        metadata=(*_bearer(payer.token), ("idempotency-key", uuid.uuid4().hex)),
        timeout=20,
    )
    assert _final(direct, paid.payment_id, payer).state == payment_pb2.Payment.SUCCEEDED
    wallet = direct.wallet.GetWallet(
        wallet_pb2.GetWalletRequest(wallet_id=shop.wallet_id), metadata=_bearer(shop.token), timeout=10
    )
    assert wallet.posted_balance.amount == 200


def test_a_key_published_after_the_services_fetched_the_set_verifies_within_the_refetch_interval(
    direct: Direct, mesh: Stack, alice: Person
) -> None:
    """Rotation as the services see it: an unknown kid makes them fetch auth_svc's JWKS again, at most
    once per DEFAULT_UNKNOWN_KID_INTERVAL_SECONDS (1 s). A service that fetched the set less than that
    ago (at start, or for the test key) refuses the new kid until the next fetch is due: the first
    probe may be refused, and every probe must pass within a few intervals."""
    fresh = identity.store_pending_key(mesh)
    try:
        token = fresh.token(alice.user_id)
        window = 5 * DEFAULT_UNKNOWN_KID_INTERVAL_SECONDS
        for probe in ("wallet ListWallets", "payment ListPayments", "notify ListNotifications"):
            poll_until(_answered(PROBES[probe], direct, alice, _bearer(token)), timeout=window)
    finally:
        revoked = auth_command(mesh, "revoke-key", f"--kid={fresh.kid}")  # a kid may start with "-"
        assert revoked.returncode == 0, revoked.stderr


def _answered(probe: Probe, direct: Direct, person: Person, metadata: Metadata) -> Callable[[], bool]:
    """`probe` as a condition for poll_until: true once the call is answered (a refusal raises)."""
    return lambda: probe(direct, person, metadata) is not None


def test_through_envoy_everything_works_as_before(edge: Edge) -> None:
    shopper, merchant = edge.person(), edge.person("MERCHANT")
    assert edge.call("GET", "/v1/users/me", shopper).json()["user_id"] == shopper.user_id
    assert edge.call("GET", f"/v1/wallets/{shopper.wallet_id}", shopper).status_code == 200
    assert edge.call("GET", f"/v1/wallets/{shopper.wallet_id}", merchant).status_code == 404
    assert edge.call("GET", "/v1/payments", shopper).status_code == 200
    assert edge.call("GET", "/v1/notifications", shopper).status_code == 200
    assert edge.call("GET", "/v1/webhook-endpoints", merchant).status_code == 200
    deposit = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": shopper.wallet_id}
    paid = edge.pay(shopper, {**deposit, "amount": {"currency": "USD", "amount": "300"}})
    poll_until(
        lambda: edge.call("GET", f"/v1/payments/{paid['payment_id']}", shopper).json()["state"] == "SUCCEEDED",
        timeout=60,
    )
    # A test-key token passes the edge too: Envoy and the services read the same key set.
    test_token = Person(shopper.user_id, identity.token(shopper.user_id), shopper.wallet_id)
    poll_until(lambda: edge.call("GET", f"/v1/wallets/{shopper.wallet_id}", test_token).status_code == 200, timeout=15)
