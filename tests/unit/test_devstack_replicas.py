"""Replicas in devstack: their ports, names, start stages, environment and the topology a run dir keeps.

No process is started here; tests/e2e/test_replicas.py runs replicas for real.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import ports as port_plan
from devstack.bench import options as bench_options
from devstack.bench.scenarios import stack_cpu
from devstack.components import Context
from devstack.credentials import Secrets
from devstack.ports import LOCAL, MAX_REPLICAS, REPLICABLE, parse_replicas
from devstack.procs import StackError
from devstack.services import Service, service_env
from devstack.stack import ALL, Stack
from devstack.topology import Topology, instance_name, parse_instance

SECRETS = Secrets(**{f.name: "x" * 44 for f in dataclasses.fields(Secrets)})
SCALED = Topology(replicas={"payment": 2, "wallet": 3})


def _every_port(ports: port_plan.Ports) -> list[int]:
    fixed = [f.name for f in dataclasses.fields(ports) if f.name not in (*port_plan.SERVICES, "metrics_offset")]
    found = [getattr(ports, name) for name in fixed]
    for service in port_plan.SERVICES:
        replicas = range(1, (MAX_REPLICAS if service in REPLICABLE else 1) + 1)
        found += [port for k in replicas for port in (ports.grpc(service, k), ports.metrics(service, k))]
    return found


@pytest.mark.parametrize("base", [30000, 42000])
def test_every_replica_port_is_distinct_and_stays_within_its_test_base(base: int) -> None:
    found = _every_port(port_plan.test_ports(base))
    assert len(found) == len(set(found))
    assert all(base < port < base + 2000 for port in found)


def test_the_first_replica_keeps_the_profile_port_and_the_next_ones_add_the_stride() -> None:
    assert LOCAL.grpc("payment", 1) == LOCAL.payment == 50053
    assert (LOCAL.grpc("payment", 2), LOCAL.metrics("payment", 2)) == (50153, 51153)
    assert (LOCAL.grpc("wallet", 2), LOCAL.metrics("wallet", 2)) == (50152, 51152)
    with pytest.raises(ValueError, match="no replica"):
        LOCAL.grpc("auth", 2)
    with pytest.raises(ValueError, match="no replica"):
        LOCAL.grpc("payment", MAX_REPLICAS + 1)


def test_replica_counts_are_parsed_and_bad_ones_refused() -> None:
    assert parse_replicas("payment=2, wallet_svc=3") == {"payment": 2, "wallet": 3}
    assert parse_replicas("") == {}
    for bad in ("notify=2", "payment", "payment=two", "payment=0", f"wallet={MAX_REPLICAS + 1}"):
        with pytest.raises(ValueError, match="SERVICE=N"):
            parse_replicas(bad)


def test_replica_names_round_trip() -> None:
    assert [instance_name("payment", k) for k in (1, 2)] == ["payment", "payment-2"]
    assert parse_instance("payment-2") == ("payment", 2)
    assert parse_instance("payment") == ("payment", 1)
    # Not a replica: another name that happens to contain a dash and a number.
    assert parse_instance("payment-test-30053") == ("payment-test-30053", 1)
    assert parse_instance("auth-2") == ("auth-2", 1)


def test_a_topology_leaves_out_single_replicas_and_refuses_what_it_cannot_run() -> None:
    assert Topology(replicas={"payment": 1, "wallet": 1}) == Topology()
    assert SCALED.instances("wallet") == ["wallet", "wallet-2", "wallet-3"]
    assert SCALED.instances("auth") == ["auth"]
    with pytest.raises(ValueError, match="replicas"):
        Topology(replicas={"notify": 2})
    with pytest.raises(ValueError, match="edge limits"):
        Topology(edge_limits="off")


def test_the_run_dir_keeps_the_topology_of_the_last_up_until_down(tmp_path: Path) -> None:
    assert Topology.recorded(tmp_path) == Topology()
    chosen = Topology(replicas={"payment": 2}, edge_limits="shadow")
    chosen.record(tmp_path)
    assert Topology.recorded(tmp_path) == chosen
    stack = Stack("test", tmp_path, port_plan.test_ports(40000))
    assert stack.topology == chosen  # status, logs and down see the replicas the last up started
    stack.down()  # nothing runs: only forgets
    assert Topology.recorded(tmp_path) == Topology()
    assert stack.topology == Topology()


def test_later_replicas_start_a_stage_after_the_first_and_before_envoy(tmp_path: Path) -> None:
    stack = Stack("test", tmp_path, port_plan.test_ports(40000), SCALED)
    stages = stack.stages
    stage_of = {name: i for i, stage in enumerate(stages) for name in stage}
    assert stage_of["wallet-2"] == stage_of["wallet-3"] == stage_of["wallet"] + 1
    assert stage_of["payment-2"] == stage_of["payment"] + 1
    assert stage_of["envoy"] > stage_of["payment-2"]
    assert set(stack.names) == {*ALL, "wallet-2", "wallet-3", "payment-2"}
    assert Stack("test", tmp_path, port_plan.test_ports(40000), Topology()).names == list(ALL)


def test_a_service_name_stands_for_all_its_replicas(tmp_path: Path) -> None:
    stack = Stack("test", tmp_path, port_plan.test_ports(40000), SCALED)
    assert stack.resolve(["payment_svc"]) == ["payment", "payment-2"]
    assert stack.resolve(["payment-2"]) == ["payment-2"]
    assert {"wallet-3", "payment-2", "notify"} <= set(stack.resolve(["services"]))
    assert stack.resolve(["infra"]) == ["postgres", "redis", "kafka"]
    with pytest.raises(StackError, match="unknown component"):
        stack.resolve(["payment-3"])


def test_replicas_beyond_the_topology_are_surplus_until_stopped(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    for name in ("payment", "payment-2", "wallet-2"):
        (pids / f"{name}.pid").write_text("1 1\n")
    stack = Stack("test", tmp_path, port_plan.test_ports(40000), Topology(replicas={"wallet": 2}))
    assert stack.surplus() == ["payment-2"]
    assert stack.resolve(["payment"]) == ["payment", "payment-2"]  # so that `up` and `down` stop it


def test_each_replica_has_its_own_ports_log_and_pid_file_and_callers_list_every_wallet(tmp_path: Path) -> None:
    ports = port_plan.test_ports(40000)
    ctx = Context("test", tmp_path, ports, SECRETS, topology=SCALED)
    second = Service(ctx, "payment", 2)
    assert second.name == "payment-2"
    assert second.ports() == [ports.grpc("payment", 2), ports.metrics("payment", 2)]
    assert (second.log_path.name, second.process.pid_path.name) == ("payment-2.log", "payment-2.pid")
    env = second.own_env()
    assert env["PAYMENT_GRPC_PORT"] == str(ports.payment + port_plan.REPLICA_PORT_STRIDE)
    assert env["PAYMENT_METRICS_PORT"] == str(ports.metrics("payment", 2))
    wallets = ",".join(f"127.0.0.1:{ports.grpc('wallet', k)}" for k in (1, 2, 3))
    assert env["PAYMENT_WALLET_ADDR"] == f"ipv4:{wallets}"
    # One live payment_svc process per replica name: each replica has its own.
    assert env["PAYMENT_REPLICA_ID"] == "payment-2"
    assert Service(ctx, "payment", 1).own_env()["PAYMENT_REPLICA_ID"] == "payment"
    assert service_env("payment", ports, SECRETS, tmp_path)["PAYMENT_WALLET_ADDR"] == f"127.0.0.1:{ports.wallet}"


def test_a_change_of_wallet_replicas_changes_the_configuration_its_callers_restart_for(tmp_path: Path) -> None:
    ports = port_plan.test_ports(40000)

    def fingerprint(topology: Topology, replica: int = 1) -> str:
        ctx = Context("test", tmp_path, ports, SECRETS, topology=topology)
        return Service(ctx, "payment", replica).config_fingerprint()

    assert fingerprint(Topology()) == fingerprint(Topology(edge_limits="shadow"))
    assert fingerprint(Topology()) != fingerprint(Topology(replicas={"wallet": 2}))
    assert fingerprint(SCALED, 1) != fingerprint(SCALED, 2)


def test_the_bench_scales_payment_and_wallet_and_keeps_the_edge_buckets_in_shadow_by_default() -> None:
    defaults = bench_options.parse([])
    assert (defaults.replicas, defaults.edge_limits) == (1, "shadow")
    chosen = bench_options.parse(["--replicas", "2", "--edge-limits", "enforce"])
    assert (chosen.replicas, chosen.edge_limits) == (2, "enforce")
    for argv in (["--replicas", "0"], ["--replicas", str(MAX_REPLICAS + 1)], ["--edge-limits", "off"]):
        with pytest.raises(SystemExit):
            bench_options.parse(argv)


def test_the_bench_counts_a_replicas_cpu_as_its_service() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = stack_cpu({"payment": os.getpid(), "payment-2": child.pid})
        assert {process.component for process in found.values()} == {"payment"}
        assert any(pid == child.pid for pid, _ in found)
    finally:
        child.kill()
        child.wait()
