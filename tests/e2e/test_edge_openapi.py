"""The edge's OpenAPI document, through the real Envoy: served at GET /openapi.json,
and true of the live API (a short, bounded Schemathesis run against it)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from devstack import envoy_config
from devstack.stack import Stack

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
# The CLI beside this interpreter (.venv/bin/st).
SCHEMATHESIS = Path(sys.executable).with_name("st")
# `make test` budget: a few examples per operation, a hard time cap, one
# seed so that a failure can be replayed. A longer run: docs/operations.md.
SCHEMATHESIS_MAX_EXAMPLES = 5
SCHEMATHESIS_MAX_SECONDS = 60
SCHEMATHESIS_SEED = 13
# Logout would revoke the run's token halfway, and every later call would
# only check the 401 path.
SCHEMATHESIS_EXCLUDED = ("AuthService_Logout",)


def _edge(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports.envoy}"


def test_get_openapi_json_serves_the_committed_document_without_a_token(stack: Stack) -> None:
    reply = httpx.get(f"{_edge(stack)}{envoy_config.OPENAPI_PATH}", timeout=10)
    assert reply.status_code == 200, reply.text[:300]
    assert reply.headers["content-type"] == "application/json"
    assert reply.content == envoy_config.OPENAPI_DOCUMENT.read_bytes()
    assert reply.json()["swagger"] == "2.0"
    # Rate-limited per client address, like the other public routes.
    limit = envoy_config.TEST_LIMITS.default.burst
    assert reply.headers["ratelimit-limit"] == str(limit)
    assert 0 <= int(reply.headers["ratelimit-remaining"]) <= limit
    # A bad token changes nothing: the document is public.
    spoiled = httpx.get(
        f"{_edge(stack)}{envoy_config.OPENAPI_PATH}", headers={"authorization": "Bearer not.a.jwt"}, timeout=10
    )
    assert (spoiled.status_code, spoiled.content) == (200, reply.content)
    head = httpx.head(f"{_edge(stack)}{envoy_config.OPENAPI_PATH}", timeout=10)
    assert (head.status_code, head.content) == (200, b"")


def test_other_methods_on_openapi_json_get_the_json_404(stack: Stack) -> None:
    reply = httpx.post(f"{_edge(stack)}{envoy_config.OPENAPI_PATH}", json={}, timeout=10)
    assert reply.status_code == 404
    assert reply.json()["details"][0]["reason"] == "RESOURCE_NOT_FOUND"


def _access_token(base: str) -> str:
    email = f"schemathesis-{uuid.uuid4().hex[:10]}@example.com"
    user = {"email": email, "password": PASSWORD, "display_name": "Fuzz", "account_type": "MERCHANT"}
    assert httpx.post(f"{base}/v1/auth/register", json=user, timeout=10).status_code == 200
    login = httpx.post(f"{base}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    token: str = login.json()["access_token"]
    return token


def test_the_live_edge_conforms_to_its_openapi_document(stack: Stack, tmp_path: Path) -> None:
    base = _edge(stack)
    token = _access_token(base)
    command = [
        str(SCHEMATHESIS),
        "run",
        # The document as the edge serves it, so this also checks that it loads.
        f"{base}{envoy_config.OPENAPI_PATH}",
        "--url",
        base,
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--max-examples",
        str(SCHEMATHESIS_MAX_EXAMPLES),
        "--max-time",
        str(SCHEMATHESIS_MAX_SECONDS),
        "--seed",
        str(SCHEMATHESIS_SEED),
        "--phases",
        "examples,coverage,fuzzing",
        # One worker: with two, Hypothesis sometimes fails inside itself
        # ("AST constructor recursion depth mismatch", a runtime error that
        # fails the run), and the machine has two cores for the whole stack.
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--suppress-health-check",
        "all",
        "--no-shrink",
        *(arg for op in SCHEMATHESIS_EXCLUDED for arg in ("--exclude-operation-id", op)),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    result = subprocess.run(
        command,
        cwd=tmp_path,  # its report directory and caches stay out of the repo
        capture_output=True,
        text=True,
        timeout=SCHEMATHESIS_MAX_SECONDS + 60,
        env=env,
        check=False,
    )
    report = (result.stdout + result.stderr).replace(token, "<token>")
    assert result.returncode == 0, report[-20000:]
