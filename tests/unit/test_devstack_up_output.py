"""What `make up` (python -m devstack up) prints once the stack is up: where to look next, the trace
backend and Prometheus included. No process is started: the printing is given a stack object."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.__main__ import _print_first_steps
from devstack.ports import LOCAL, test_ports
from devstack.stack import ALL, Stack


def test_up_prints_the_jaeger_and_prometheus_addresses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _print_first_steps(Stack("local", tmp_path, LOCAL), list(ALL))
    lines = capsys.readouterr().out.splitlines()
    (traces,) = [line for line in lines if line.startswith("traces:")]
    (metrics,) = [line for line in lines if line.startswith("metrics:")]
    assert "http://127.0.0.1:16686 " in traces
    assert "python -m devstack.traces --request-id" in traces
    assert "http://127.0.0.1:19090 " in metrics


def test_a_test_stack_prints_its_own_ports_and_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ports = test_ports(28000)
    _print_first_steps(Stack("test", tmp_path, ports), list(ALL))
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{ports.jaeger_ui} " in out
    assert "devstack.traces --profile test" in out
    assert f"http://127.0.0.1:{ports.prometheus} " in out


def test_without_the_observability_components_neither_address_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _print_first_steps(Stack("local", tmp_path, LOCAL), ["postgres", "redis", "kafka"])
    out = capsys.readouterr().out
    assert "traces:" not in out
    assert "metrics:" not in out
