"""How the local and test stacks trace (devstack.tracing): one sampling decision for Envoy and the
services, both sending to the stack's own Jaeger, and the environment of `make up` able to change the
ratio for both at once."""

from __future__ import annotations

import pytest
import yaml

from devstack import envoy_config, tracing
from devstack.bench import options as bench_options
from devstack.components import REPO_ROOT
from devstack.ports import test_ports

PORTS = test_ports(28000)


def test_every_service_exports_to_the_stacks_jaeger_under_its_own_name() -> None:
    env = tracing.service_otel_env("payment_svc", "payment-2", "test", PORTS, environ={})
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://127.0.0.1:{PORTS.otlp_grpc}"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_SERVICE_NAME"] == "payment_svc"
    attributes = dict(pair.split("=") for pair in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attributes == {
        "service.namespace": "paymesh",
        "service.instance.id": "payment-2",
        "deployment.environment.name": "test",
    }
    # A developer's stack and the tests see every trace unless told otherwise.
    assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == ("parentbased_traceidratio", "1.0")
    assert tracing.edge_sampling_percent({}) == 100.0


def test_a_ratio_set_for_make_up_reaches_the_services_and_envoy_alike() -> None:
    environ = {"OTEL_TRACES_SAMPLER_ARG": "0.02"}
    env = tracing.service_otel_env("wallet_svc", "wallet", "local", PORTS, environ=environ)
    assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == ("parentbased_traceidratio", "0.02")
    assert tracing.edge_sampling_percent(environ) == 2.0
    assert tracing.edge_sampling_percent({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}) == 0.0


@pytest.mark.parametrize("ratio", ["2", "-0.1", "half"])
def test_a_ratio_outside_zero_to_one_stops_the_stack_before_anything_starts(ratio: str) -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        tracing.edge_sampling_percent({"OTEL_TRACES_SAMPLER_ARG": ratio})


def test_the_stacks_envoy_traces_to_the_same_jaeger_at_the_same_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    config = yaml.safe_load(envoy_config.render("test", PORTS))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["tracing"]["random_sampling"]["value"] == 25.0
    assert hcm["tracing"]["provider"]["name"] == "envoy.tracers.opentelemetry"
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    (otlp,) = [c for name, c in clusters.items() if "otlp" in name]
    address = otlp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == ("127.0.0.1", PORTS.otlp_grpc)


def test_the_bench_samples_by_default_what_the_chart_samples_in_production() -> None:
    values = yaml.safe_load((REPO_ROOT / "charts/paymesh/values.yaml").read_text())
    assert float(values["telemetry"]["samplingRatio"]) == tracing.PRODUCTION_RATIO
    assert bench_options.parse([]).trace_ratio == tracing.PRODUCTION_RATIO
