"""Fuzzing the edge: every route of the descriptor set, through the real Envoy and services, with random
path parameters (invalid UTF-8, NUL, huge), random JSON bodies of random types, random query parameters
and good, missing or garbage bearer tokens.

Whatever comes in, what comes out is never a 5xx, never names an internal class or shows a stack trace,
and every error is a JSON google.rpc.Status whose ErrorInfo reason is one of paymesh.common.v1.ErrorReason.
Bounded: a fixed number of examples per route (FUZZ_EXAMPLES), sizes below the edge's header and body
limits (those limits are the edge's own business), no example database.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.envoy_config import PUBLIC_METHODS
from devstack.stack import Stack
from paymesh.auth.v1 import auth_pb2
from paymesh.common.v1 import errors_pb2
from paymesh.notify.v1 import notify_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh.wallet.v1 import wallet_pb2
from tests.e2e.test_authorization import Edge, Person
from tests.secret_values import FUZZED

pytestmark = pytest.mark.e2e
SERVICES = (auth_pb2, wallet_pb2, payment_pb2, notify_pb2)
FUZZ_EXAMPLES = int(os.environ.get("PAYMESH_FUZZ_EXAMPLES", "60"))
REASONS = frozenset(errors_pb2.ErrorReason.keys()) - {"ERROR_REASON_UNSPECIFIED"}
# What must never reach a client: a stack trace, an exception's class, a file path of the code.
LEAKS = re.compile(r"Traceback|<class |\b[A-Z][A-Za-z]*(Error|Exception)\b(?!Info)|File \"|\.py\b|sqlalchemy|asyncpg")
HUGE = 12_000  # above any field's limit, below Envoy's header and body limits
WALLET = "@wallet@"  # in a path or body: replaced by the caller's own wallet id
PEER = "@peer@"  # ... by the other fuzzing user's wallet id


@dataclass(frozen=True)
class Route:
    method: str  # /package.Service/Method
    verb: str
    template: str
    body: str  # "*", a field name, or "" (no body)
    request: Descriptor

    @property
    def path_fields(self) -> list[str]:
        return re.findall(r"{([a-z_.]+)}", self.template)

    @property
    def public(self) -> bool:
        return self.method in PUBLIC_METHODS


def _routes() -> Iterator[Route]:
    for module in SERVICES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue  # internal: not routed
                rule = options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern") or ""
                yield Route(
                    f"/{service.full_name}/{method.name}",
                    verb.upper(),
                    getattr(rule, verb),
                    rule.body,
                    method.input_type,
                )


ROUTES = sorted(_routes(), key=lambda r: r.method)
# Every service's routes, or the suite would quietly fuzz less than the edge serves.
assert {r.method.split("/")[1] for r in ROUTES} == {
    f"{m.DESCRIPTOR.package}.{n}" for m in SERVICES for n in m.DESCRIPTOR.services_by_name
}
assert len(ROUTES) >= 25, ROUTES

# --- strategies -----------------------------------------------------------------------------------

NASTY_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("\x00\x01\n\r\t'\"\\%/:{}é☕\u202e"), max_size=20),
    st.builds(lambda s: s + "\x00" + s, st.text(max_size=10)),
    st.integers(min_value=HUGE // 2, max_value=HUGE).map(lambda n: "Z" * n),
    st.just(str(uuid.uuid4())),
    st.sampled_from(["USD", "usd", "tok_visa", "payment.succeeded", "*", "", " ", "null", "-1", "0"]),
)
WITH_NUL = st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=8), st.text(max_size=8))
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    NASTY_TEXT,
)
JSON_ANY = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _path_value() -> st.SearchStrategy[str]:
    """A path segment, percent-encoded: any text (NUL included), raw bytes that are not UTF-8, huge."""
    as_text = st.one_of(NASTY_TEXT.filter(lambda s: len(s) < 4_000), st.just(str(uuid.uuid4())))
    return st.one_of(
        st.just(WALLET),
        as_text.map(lambda s: urllib.parse.quote(s, safe="")),
        st.binary(min_size=1, max_size=24).map(lambda b: urllib.parse.quote(b, safe="")),
        st.sampled_from(["%FF%FE", "%C3%28", "%00", "%ED%A0%80", "%F4%90%80%80"]),
    )


def _field_value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE and depth < 2 and field.message_type is not None:
        single: st.SearchStrategy[Any] = st.one_of(_message(field.message_type, depth + 1), JSON_ANY)
    elif field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        single = st.one_of(st.sampled_from(list(field.enum_type.values_by_name)), JSON_SCALAR)
    elif field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_INT32):
        single = st.one_of(st.integers(-(2**66), 2**66), st.integers(-(2**66), 2**66).map(str), JSON_SCALAR)
    else:
        single = st.one_of(WITH_NUL, NASTY_TEXT, JSON_ANY)
    return st.one_of(st.lists(single, max_size=3), JSON_ANY) if field.is_repeated else single


def _message(descriptor: Descriptor, depth: int = 0, skip: frozenset[str] = frozenset()) -> st.SearchStrategy[Any]:
    """Any subset of the fields, each with any value."""
    fields = [f for f in descriptor.fields if f.name not in skip]
    if not fields:
        return st.fixed_dictionaries({})
    return st.fixed_dictionaries({}, optional={f.name: _field_value(f, depth) for f in fields})


# A value that passes each field's own validation, so that a request gets past the handler's checks
# to the code (and the database) behind them.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "email": st.uuids().map(lambda u: f"fuzz-{u.hex[:12]}@example.com"),
    "password": st.just("correct-horse-battery"),
    "account_type": st.sampled_from(["CUSTOMER", "MERCHANT"]),
    "currency": st.just("USD"),
    "amount": st.integers(1, 500).map(str),
    "wallet_id": st.just(WALLET),
    "destination_wallet_id": st.sampled_from([PEER, WALLET]),
    "card_token": st.just("tok_visa"),
    "capture_method": st.sampled_from(["AUTOMATIC", "MANUAL"]),
    "url": st.just("https://fuzz.example.com/hooks"),
    "event_types": st.just(["payment.succeeded"]),
    "page_size": st.integers(0, 300),
}


def _plausible(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None and depth < 2:
        return _plausible_message(field.message_type, depth + 1)
    if field.name in PLAUSIBLE:
        return PLAUSIBLE[field.name]
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return st.sampled_from(list(field.enum_type.values_by_name))
    if field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_INT32):
        return st.integers(0, 1000)
    return st.text(alphabet="abcdefghij -", min_size=1, max_size=12)


def _plausible_message(descriptor: Descriptor, depth: int, nasty: str = "") -> st.SearchStrategy[dict[str, Any]]:
    """Every field plausible, one member per oneof, and field `nasty` (if any) anything at all."""
    chosen = [f for f in descriptor.fields if f.containing_oneof is None or f.name == nasty]
    oneofs = [list(o.fields) for o in descriptor.oneofs if all(f.name != nasty for f in o.fields)]

    def build(values: dict[str, Any], members: list[tuple[str, Any]]) -> dict[str, Any]:
        return {**values, **dict(members)}

    fixed = {f.name: (_field_value(f, depth) if f.name == nasty else _plausible(f, depth)) for f in chosen}
    members = st.tuples(
        *(st.sampled_from(o).flatmap(lambda f: st.tuples(st.just(f.name), _plausible(f, depth))) for o in oneofs)
    )
    return st.builds(build, st.fixed_dictionaries(fixed), members.map(list))


def _one_nasty_field(descriptor: Descriptor, skip: frozenset[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A plausible request with one field (maybe nested one level) out of line."""
    fields = [f for f in descriptor.fields if f.name not in skip]
    if not fields:
        return st.fixed_dictionaries({})

    def with_nasty(field: FieldDescriptor) -> st.SearchStrategy[dict[str, Any]]:
        values = _plausible_message(descriptor, 0, nasty=field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None and field.message_type.fields:
            inner = st.sampled_from(list(field.message_type.fields)).flatmap(
                lambda f: _plausible_message(field.message_type, 1, nasty=f.name)  # type: ignore[arg-type]
            )
            values = st.builds(lambda v, i: {**v, field.name: i}, values, st.one_of(inner, _field_value(field, 1)))
        return values.map(lambda v: {k: x for k, x in v.items() if k not in skip})

    return st.sampled_from(fields).flatmap(with_nasty)


@dataclass(frozen=True)
class Example:
    path: str
    query: dict[str, str]
    content: bytes | None
    auth: str


def _example(route: Route) -> st.SearchStrategy[Example]:
    path_fields = route.path_fields
    top = frozenset(name.split(".")[0] for name in path_fields)
    body_fields = frozenset(f.name for f in route.request.fields) - top if route.body == "*" else frozenset()
    query_fields = [f for f in route.request.fields if f.name not in top and f.name not in body_fields]
    if route.body and route.body != "*":
        query_fields = [f for f in query_fields if f.name != route.body]

    def encode(body: Any) -> bytes:
        return json.dumps(body).encode()

    body: st.SearchStrategy[bytes | None] = st.none()
    if route.body == "*":
        body = st.one_of(
            _one_nasty_field(route.request, top).map(encode),
            _one_nasty_field(route.request, top).map(encode),
            _one_nasty_field(route.request, top).map(encode),
            _message(route.request, skip=top).map(encode),
            JSON_ANY.map(encode),
            st.binary(max_size=64),  # not JSON at all
            st.just(b'{"a": "\\ud800"}'),  # a lone surrogate escape
        )
    elif route.body:
        body = st.one_of(st.binary(max_size=256), JSON_ANY.map(encode))
    query = st.fixed_dictionaries(
        {},
        optional={
            f.name: st.one_of(NASTY_TEXT.filter(lambda s: len(s) < 2_000), st.integers(-(2**40), 2**40).map(str))
            for f in query_fields
        },
    )
    segments = st.fixed_dictionaries({name: _path_value() for name in path_fields})
    auth = st.sampled_from(["customer", "customer", "merchant", "none", "garbage"])

    def build(values: dict[str, str], params: dict[str, str], content: bytes | None, who: str) -> Example:
        path = route.template
        for name, value in values.items():
            path = path.replace("{" + name + "}", value)
        return Example(path, params, content, who)

    return st.builds(build, segments, query, body, auth)


# --- the check ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def people(stack: Stack) -> dict[str, Person]:
    edge = Edge(stack)
    return {"customer": edge.person(), "merchant": edge.person("MERCHANT")}


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.ports.envoy}", timeout=30) as http:
        yield http


def _check(reply: httpx.Response, example: Example) -> None:
    where = f"{reply.request.method} {example.path[:200]} -> {reply.status_code}: {reply.text[:400]}"
    assert reply.status_code < 500, where
    assert not LEAKS.search(reply.text), where
    if reply.status_code < 400:
        return
    assert reply.headers.get("content-type", "").startswith("application/json"), where
    status = reply.json()
    assert isinstance(status, dict), where
    assert isinstance(status.get("code"), int), where
    assert isinstance(status.get("message"), str), where
    infos = [d for d in status.get("details", []) if str(d.get("@type", "")).endswith("google.rpc.ErrorInfo")]
    assert len(infos) == 1, where
    assert infos[0]["reason"] in REASONS, where
    assert infos[0].get("domain") == "paymesh", where


@pytest.mark.parametrize("route", ROUTES, ids=[r.method.rsplit("/", 1)[1] for r in ROUTES])
def test_no_input_at_any_route_gets_a_5xx_a_class_name_or_an_undocumented_error(
    route: Route, client: httpx.Client, people: dict[str, Person]
) -> None:
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(example=_example(route))
    def one(example: Example) -> None:
        headers = {"idempotency-key": uuid.uuid4().hex, "content-type": "application/json"}
        if example.auth in people:
            headers["authorization"] = f"Bearer {people[example.auth].token}"
        elif example.auth == "garbage":
            headers["authorization"] = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
        me, peer = ("merchant", "customer") if example.auth == "merchant" else ("customer", "merchant")
        ids = {WALLET: people[me].wallet_id, PEER: people[peer].wallet_id}
        url = example.path + ("?" + urllib.parse.urlencode(example.query) if example.query else "")
        content = example.content
        for placeholder, wallet_id in ids.items():
            url = url.replace(placeholder, wallet_id)
            content = content.replace(placeholder.encode(), wallet_id.encode()) if content else content
        # Fuzz, not credentials: the session's log check leaves these bodies and queries out (tests/secret_values).
        reply = client.request(route.verb, url, content=content, headers=headers, extensions={FUZZED: True})
        _check(reply, example)

    one()
