"""The end-of-session credential check (tests/secret_values.py): what the recorder remembers, what `leaks`
finds in a log directory, and why the edge access log's `path` field may hold a value the tests sent there.

The recorder is installed over httpx for one test at a time and talks to an
httpx.MockTransport; the logs are files the tests write in a temporary
directory.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.api import annotations_pb2

from paymesh.auth.v1 import auth_pb2
from paymesh.notify.v1 import notify_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh.wallet.v1 import wallet_pb2
from tests.secret_values import FUZZED, SENSITIVE_FIELDS, SecretRecorder, leaks

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def _answer(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/webhook-endpoints":
        return httpx.Response(200, json={"endpoint_id": "e-1", "signing_secret": "whsec_answered_1234"})
    return httpx.Response(200, text="signing_secret=whsec_plain_text_9876")  # not JSON: not read


@pytest.fixture
def recorder() -> Iterator[SecretRecorder]:
    recorder = SecretRecorder()
    recorder.install()
    try:
        yield recorder
    finally:
        recorder.uninstall()


def test_the_recorder_remembers_every_credential_a_request_or_answer_holds(recorder: SecretRecorder) -> None:
    with httpx.Client(transport=httpx.MockTransport(_answer), base_url="http://edge") as client:
        client.post(
            "/v1/payments",
            headers={"authorization": f"Bearer {JWT}"},
            json={"source": {"card_token": "tok_mastercard"}, "items": [{"bank_account_token": "btok_success"}]},
        )
        client.post("/v1/auth/login", json={"email": "ada@example.com", "password": "correct horse battery"})
        client.post("/v1/webhook-endpoints", json={"url": "https://shop.example.com/hooks"})
        client.get("/v1/payments/pay-1", params={"access_token": "query-token-5678", "page_size": "100000000"})
        client.get("/v1/other", params={"token": "short"})
    assert recorder.values == {
        f"Bearer {JWT}",
        JWT,
        "tok_mastercard",
        "btok_success",
        "correct horse battery",
        "whsec_answered_1234",
        "query-token-5678",
    }  # not the email, the URL, the page size, a value under 8 characters, or what a non-JSON answer says
    assert {"/v1/payments", "/v1/auth/login", "/v1/payments/pay-1", "/v1/other"} <= recorder.paths


def test_a_fuzzed_request_leaves_its_body_and_query_out_but_not_its_bearer_token_or_path(
    recorder: SecretRecorder,
) -> None:
    with httpx.Client(transport=httpx.MockTransport(_answer), base_url="http://edge") as client:
        client.post(
            "/v1/wallets/transfer",
            headers={"authorization": f"Bearer {JWT}"},
            json={"password": "untranscoded", "card_token": "transfer-encoding"},
            params={"page_token": "application/json"},
            extensions={FUZZED: True},
        )
    assert recorder.values == {f"Bearer {JWT}", JWT}
    assert "/v1/wallets/transfer" in recorder.paths


def test_the_recorder_sees_async_clients_and_lets_go_when_uninstalled() -> None:
    recorder, plain = SecretRecorder(), httpx.AsyncClient.send
    recorder.install()
    try:

        async def main() -> None:
            async with httpx.AsyncClient(transport=httpx.MockTransport(_answer), base_url="http://edge") as client:
                await client.post("/v1/auth/register", json={"password": "async-password-1"})

        asyncio.run(main())
    finally:
        recorder.uninstall()
    assert recorder.values == {"async-password-1"}
    assert httpx.AsyncClient.send is plain
    with httpx.Client(transport=httpx.MockTransport(_answer)) as client:
        client.post("http://edge/v1/auth/login", json={"password": "after-uninstall"})
    assert "after-uninstall" not in recorder.values


def _logs(tmp_path: Path, **files: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    for name, text in files.items():
        (tmp_path / f"{name}.log").write_text(text)
    return tmp_path


def _access(path: str, **more: str) -> str:
    return json.dumps({"method": "GET", "path": path, "response_code": 404, "request_id": "r-1", **more}) + "\n"


def test_leaks_names_each_file_and_value_but_not_the_mailbox(tmp_path: Path) -> None:
    logs = _logs(
        tmp_path,
        payment='{"msg":"charging tok_mastercard"}\n',
        auth='{"msg":"ok"}\n',
        mailsink="Subject: your password correct horse battery\n",
        wallet=f'{{"msg":"got {JWT}"}}\n{{"msg":"header authorization: Bearer abcdefghijklmnopqrstu"}}\n',
    )
    found = leaks(logs, ["tok_mastercard", "correct horse battery", "short"])
    assert found == [
        "payment.log: a value the tests used as a credential (tok_...)",
        "wallet.log: a JWT (eyJhbGciOiJF...)",
        "wallet.log: a bearer header (Bearer abc...)",
    ]


def test_a_value_the_tests_sent_in_a_path_is_no_leak_in_the_access_logs_path_fields(tmp_path: Path) -> None:
    # The edge fuzz test sends tok_visa as a card token, and also as a (random) wallet id in a path.
    logs = _logs(tmp_path, envoy=_access("/v1/wallets/tok_visa/entries"))
    assert leaks(logs, ["tok_visa"], sent_paths=["/v1/wallets/tok_visa/entries"]) == []
    # A request that never reached the transcoder (no route): grpc_method is its path too.
    untranscoded = _logs(tmp_path / "404", envoy=_access("/v1/nothing/tok_visa", grpc_method="/v1/nothing/tok_visa"))
    assert leaks(untranscoded, ["tok_visa"], sent_paths=["/v1/nothing/tok_visa"]) == []


def test_a_value_in_a_path_no_test_sent_it_in_is_a_leak(tmp_path: Path) -> None:
    logs = _logs(tmp_path, envoy=_access("/v1/wallets/tok_visa/entries"))
    assert leaks(logs, ["tok_visa"]) == ["envoy.log: a value the tests used as a credential (tok_...)"]
    assert leaks(logs, ["tok_visa"], sent_paths=["/v1/wallets/w-1/entries"])


def test_outside_the_path_field_or_the_access_log_the_value_is_always_a_leak(tmp_path: Path) -> None:
    sent = ["/v1/wallets/tok_visa"]
    in_another_field = _logs(tmp_path / "a", envoy=_access("/v1/wallets/tok_visa", authority="tok_visa.example.com"))
    assert leaks(in_another_field, ["tok_visa"], sent)
    in_a_service_log = _logs(tmp_path / "b", payment='{"path":"/v1/wallets/tok_visa"}\n')
    assert leaks(in_a_service_log, ["tok_visa"], sent)
    not_json = _logs(tmp_path / "c", envoy="[warning] upstream said path=/v1/wallets/tok_visa\n")
    assert leaks(not_json, ["tok_visa"], sent)


def test_a_jwt_in_a_path_is_a_leak_even_when_the_tests_sent_it_there(tmp_path: Path) -> None:
    logs = _logs(tmp_path, envoy=_access(f"/v1/payments/{JWT}"))
    assert leaks(logs, [JWT], sent_paths=[f"/v1/payments/{JWT}"]) == ["envoy.log: a JWT (eyJhbGciOiJF...)"]


# --- no route carries a credential in its path: what makes the access log's paths safe to keep ------------


def _path_variables() -> dict[str, list[str]]:
    """The variables of every HTTP binding's path template, by method (google.api.http, additional
    bindings included)."""
    found: dict[str, list[str]] = {}
    for module in (auth_pb2, wallet_pb2, payment_pb2, notify_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                top = options.Extensions[annotations_pb2.http]
                for rule in (top, *top.additional_bindings):
                    pattern = rule.WhichOneof("pattern")
                    template = rule.custom.path if pattern == "custom" else getattr(rule, pattern or "get")
                    found.setdefault(method.full_name, []).extend(re.findall(r"{([a-z_.]+)", template))
    return found


def test_no_http_route_takes_a_credential_in_its_path() -> None:
    variables = _path_variables()
    assert len(variables) >= 25  # every routed method was read
    assert any(variables.values())  # ...and path variables were found at all
    sensitive = {method: names for method, names in variables.items() if any(SENSITIVE_FIELDS.search(n) for n in names)}
    assert sensitive == {}


def test_a_name_that_only_contains_a_credential_word_is_not_a_credential() -> None:
    assert all(SENSITIVE_FIELDS.search(name) for name in ("password", "card_token", "cardToken", "signing_secret"))
    assert all(SENSITIVE_FIELDS.search(name) for name in ("bank_account_token", "push_tokens"))
    # the processor's authorization ids name resources; payment_svc logs them in the processor's URLs
    names = ("authorization", "authorization_id", "token_type", "secret_rotated_at")
    assert not any(SENSITIVE_FIELDS.search(name) for name in names)
