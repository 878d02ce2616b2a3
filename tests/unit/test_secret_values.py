"""The end-of-session log check (tests/secret_values.py) finds what it must, and only that."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.secret_values import SecretRecorder, leaks

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def _transport(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"access_token": JWT, "user": {"user_id": "u-1234567890"}, "expires_in": 900})


def test_the_recorder_keeps_credentials_of_requests_and_answers_and_nothing_else() -> None:
    recorder, before = SecretRecorder(), httpx.Client.send
    recorder.install()
    try:
        with httpx.Client(transport=httpx.MockTransport(_transport)) as client:
            client.post(
                "http://edge/v1/auth/login",
                json={
                    "email": "a@example.com",
                    "password": "correct-horse-battery",
                    "card_token": "tok_abcdefgh",
                    "authorization_id": "auth_0123456789",  # a resource's name, not a credential
                },
                headers={"authorization": "Bearer opaque-token-value"},
            )
    finally:
        recorder.uninstall()
    assert recorder.values == {
        "Bearer opaque-token-value",
        "opaque-token-value",
        "correct-horse-battery",
        "tok_abcdefgh",
        JWT,
    }
    assert httpx.Client.send is before  # restored


def test_a_value_the_client_put_in_a_url_path_is_not_a_credential() -> None:
    recorder = SecretRecorder()
    recorder.install()
    try:
        with httpx.Client(transport=httpx.MockTransport(_transport)) as client:
            client.post("http://edge/v1/payments", json={"card_token": "6c1f9c1e-7f4e-4b8e-9a55-2f5f3c0e9d11"})
            client.get("http://edge/v1/payments/6c1f9c1e-7f4e-4b8e-9a55-2f5f3c0e9d11")
            client.post("http://edge/v1/payments", json={"card_token": "tok_only_in_a_body"})
    finally:
        recorder.uninstall()
    assert "6c1f9c1e-7f4e-4b8e-9a55-2f5f3c0e9d11" in recorder.values
    assert recorder.credentials() == {"tok_only_in_a_body", JWT}


def test_leaks_names_each_file_and_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "payment.log").write_text('{"msg":"login","password":"correct-horse-battery"}\n')
    (tmp_path / "envoy.log").write_text(f"authorization: Bearer {JWT}\n")
    (tmp_path / "auth.log").write_text('{"msg":"rpc /paymesh.auth.v1.AuthService/Login OK 3.1ms"}\n')
    (tmp_path / "mailsink.log").write_text("Your reset code: correct-horse-battery\n")  # the mailbox, not a log
    found = leaks(tmp_path, ["correct-horse-battery", "short"])
    assert found == [
        "envoy.log: a JWT (eyJhbGciOiJF...)",
        "envoy.log: a bearer header (Bearer eyJ...)",
        "payment.log: a value the tests used as a credential (corr...)",
    ]
    assert leaks(tmp_path / "none", ["correct-horse-battery"]) == []
