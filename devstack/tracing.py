"""How the local and test stacks trace: one sampling decision for Envoy and the services, one backend.

Envoy starts each trace (or continues a client's `traceparent`) and decides
whether it is sampled; the services follow that decision
(`parentbased_traceidratio`), and use the same ratio for what reaches them
without a trace (a call straight to a service). Spans go over OTLP/gRPC to
the stack's Jaeger (devstack.jaeger).

The ratio: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` from the
environment of `make up` when set, else every trace (a developer's stack and
the tests want to see each request). Production samples a few percent
(charts/paymesh, `telemetry.samplingRatio`); for figures at that ratio:
`OTEL_TRACES_SAMPLER_ARG=0.02 make up` (docs/performance.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from devstack.ports import HOST, Ports

DEFAULT_RATIO = 1.0
# What the chart samples in production (charts/paymesh/values.yaml, telemetry.samplingRatio), and so what
# `make bench` measures by default (devstack/bench, --trace-ratio).
PRODUCTION_RATIO = 0.02
DEFAULT_SAMPLER = "parentbased_traceidratio"
# The SDK's batch span processor exports every 5 s by default; the tests look for spans sooner.
EXPORT_DELAY_MS = {"local": 1000, "test": 200}
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
_SAMPLER_PERCENT = {
    "always_on": 100.0,
    "parentbased_always_on": 100.0,
    "always_off": 0.0,
    "parentbased_always_off": 0.0,
}


def sampler(environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """OTEL_TRACES_SAMPLER and its argument, as the environment says or by default."""
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip() or DEFAULT_SAMPLER
    argument = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if name in _RATIO_SAMPLERS and not argument:
        argument = str(DEFAULT_RATIO)
    return name, argument


def edge_sampling_percent(environ: Mapping[str, str] = os.environ) -> float:
    """The share of new traces Envoy samples (percent), matching the services' sampler."""
    name, argument = sampler(environ)
    if name in _SAMPLER_PERCENT:
        return _SAMPLER_PERCENT[name]
    try:
        ratio = float(argument)
    except ValueError:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1, not {argument!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1, not {argument!r}")
    return round(ratio * 100, 4)


def otlp_endpoint(ports: Ports) -> str:
    return f"http://{HOST}:{ports.otlp_grpc}"


def service_otel_env(
    module: str, instance: str, profile: str, ports: Ports, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The standard OpenTelemetry variables of one service process (paymesh_runtime.telemetry_export)."""
    name, argument = sampler(environ)
    env = {
        "OTEL_SERVICE_NAME": module,
        "OTEL_RESOURCE_ATTRIBUTES": f"service.namespace=paymesh,service.instance.id={instance},"
        f"deployment.environment.name={profile}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint(ports),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_SAMPLER": name,
        "OTEL_BSP_SCHEDULE_DELAY": str(EXPORT_DELAY_MS.get(profile, 1000)),
    }
    if argument:
        env["OTEL_TRACES_SAMPLER_ARG"] = argument
    return env
