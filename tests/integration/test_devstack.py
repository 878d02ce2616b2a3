"""The test stack's infrastructure is real, locked down and restartable."""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack import ports as port_plan
from devstack.kafka_broker import TOPICS
from devstack.postgres import grant_traversal
from devstack.procs import process_tree
from devstack.services import service_env
from devstack.stack import Stack, default_run_dir, port_base
from tests.helpers import poll_until

pytestmark = pytest.mark.integration


def _kcat(*args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real kcat binary (from Debian), as a developer would run it.

    Topics also carry other tests' binary protobuf records: undecodable bytes
    are replaced, not fatal.
    """
    return subprocess.run(
        ["kcat", *args], input=input_text, capture_output=True, text=True, errors="replace", timeout=30
    )


def _kafka_metadata(stack: Stack) -> dict[str, Any]:
    result = _kcat("-b", stack.kafka_bootstrap, "-L", "-J", "-m", "5")
    assert result.returncode == 0, result.stderr
    metadata: dict[str, Any] = json.loads(result.stdout)
    return metadata


def _topic_partitions(stack: Stack) -> dict[str, int]:
    return {t["topic"]: len(t["partitions"]) for t in _kafka_metadata(stack)["topics"]}


# --- PostgreSQL ---------------------------------------------------------------------------------
async def test_postgres_accepts_the_generated_password(infra: Stack) -> None:
    for service in ("auth", "wallet", "payment", "notify"):
        connection = await asyncpg.connect(infra.database_url(service, driver=""), timeout=10)
        try:
            assert await connection.fetchval("select current_database()") == f"paymesh_{service}"
            assert await connection.fetchval("select current_user") == "paymesh"
        finally:
            await connection.close()


async def test_postgres_refuses_a_wrong_password(infra: Stack) -> None:
    dsn = infra.database_url("auth", driver="").replace(infra.secrets.postgres_password, "wrong")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(dsn, timeout=10)


# --- Redis ----------------------------------------------------------------------------------
def test_redis_requires_its_password(infra: Stack) -> None:
    # No retries: redis-py retries AuthenticationError (a ConnectionError) with backoff.
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": infra.ports.redis,
        "socket_timeout": 5,
        "retry": Retry(NoBackoff(), 0),
    }
    anonymous = redis.Redis(**options)
    wrong = redis.Redis(password="wrong", **options)
    with pytest.raises(redis.AuthenticationError):
        anonymous.set("devstack:probe", "1")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    assert redis.Redis.from_url(infra.redis_url(1), socket_timeout=5).ping() is True


# --- Kafka ----------------------------------------------------------------------------------
def test_kafka_lists_the_platform_topics(infra: Stack) -> None:
    metadata = _kafka_metadata(infra)
    assert [broker["id"] for broker in metadata["brokers"]] == [1]
    partitions = _topic_partitions(infra)
    for topic in TOPICS:
        assert partitions.get(topic.name) == topic.partitions, topic.name


def test_kafka_restarts_with_its_topics_and_data(infra: Stack) -> None:
    topic = TOPICS[0].name
    marker = f"before-restart-{uuid.uuid4()}"
    produced = _kcat("-b", infra.kafka_bootstrap, "-P", "-t", topic, "-p", "0", input_text=marker)
    assert produced.returncode == 0, produced.stderr

    infra.stop_component("kafka")
    assert not infra.component("kafka").is_running()
    assert _kcat("-b", infra.kafka_bootstrap, "-L", "-m", "2").returncode != 0

    infra.start_component("kafka")
    partitions = _topic_partitions(infra)
    assert all(partitions.get(t.name) == t.partitions for t in TOPICS)
    # The record written before the restart is still there...
    consumed = _kcat("-b", infra.kafka_bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e")
    assert marker in consumed.stdout.splitlines()
    # ...and the restarted broker takes new writes.
    after = _kcat("-b", infra.kafka_bootstrap, "-P", "-t", topic, "-p", "0", input_text="after-restart")
    assert after.returncode == 0, after.stderr


# --- secrets --------------------------------------------------------------------------------
def test_secrets_are_private_and_never_logged(infra: Stack) -> None:
    secrets_file = infra.run_dir / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    values = [infra.secrets.postgres_password, infra.secrets.redis_password]
    for log in (infra.run_dir / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert not any(value in text for value in values), f"a secret leaked into {log}"
    assert "hidden" in repr(infra.secrets)


# --- fast checks without the session stack -----------------------------------------------------
def test_service_env_has_every_variable_with_the_service_prefix() -> None:
    ports = port_plan.test_ports(40000)
    stack = Stack("test", Path(tempfile.mkdtemp(prefix="paymesh-env-")), ports)
    try:
        env = service_env("wallet", ports, stack.secrets, stack.run_dir)
    finally:
        shutil.rmtree(stack.run_dir)
    assert all(key.startswith("WALLET_") for key in env)
    assert env["WALLET_GRPC_PORT"] == str(ports.wallet)
    assert env["WALLET_METRICS_PORT"] == str(ports.metrics("wallet"))
    assert env["WALLET_REDIS_URL"].endswith(f"@127.0.0.1:{ports.redis}/1")
    assert env["WALLET_DATABASE_URL"].endswith(f"@127.0.0.1:{ports.postgres}/paymesh_wallet")
    assert "WALLET_KEY_ENCRYPTION_KEY" not in env
    assert "AUTH_KEY_ENCRYPTION_KEY" in service_env("auth", ports, stack.secrets, stack.run_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
def test_grant_traversal_opens_only_the_closed_ancestors() -> None:
    closed = Path(tempfile.mkdtemp())  # mode 700, like `mktemp -d`
    try:
        inner = closed / "repo" / ".run"
        inner.mkdir(parents=True)
        nobody = 65534
        assert grant_traversal(inner, nobody, nobody) == [closed]
        assert closed.stat().st_mode & stat.S_IXOTH
    finally:
        shutil.rmtree(closed)


def test_down_leaves_no_process_behind() -> None:
    # Its own small stack (ports base + 500) so the session stack is untouched;
    # postgres has child processes, which must die with it.
    ports = port_plan.test_ports(port_base(port_plan.test_ports()) + 500)
    stack = Stack("test", default_run_dir("test", ports), ports)
    try:
        stack.up(["postgres", "redis"])
        pids = stack.pids()
        assert set(pids) == {"postgres", "redis"}
        children = list(process_tree(pids["postgres"]))
        assert len(children) > 1, "postgres should have background workers"
        stack.down()
        assert stack.pids() == {}
        for pid in [*pids.values(), *children]:
            poll_until(functools.partial(_gone, pid), timeout=5)
    finally:
        stack.down()
        shutil.rmtree(stack.run_dir, ignore_errors=True)


def _gone(pid: int) -> bool:
    """Not running (a zombie only waits to be reaped: it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"
