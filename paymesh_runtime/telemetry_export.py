"""Where a service's spans go, as the standard OpenTelemetry variables say.

Read once at start-up (paymesh_runtime.telemetry.configure_tracing):

- `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`: no export, nothing
  recorded. `OTEL_TRACES_EXPORTER` is `otlp` (the default) or `none`.
- `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`,
  else the service's `<SVC>_OTLP_ENDPOINT`: the collector; none, no export.
- `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: `grpc` (default) or `http/protobuf`.
- `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`, `_TIMEOUT`, `_COMPRESSION`,
  `_CERTIFICATE`, `_INSECURE`: read by the exporter itself.
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource;
  `service.name` is the service's module name (`payment_svc`) unless they say.
- `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`: sampling
  (paymesh_runtime.telemetry); `OTEL_BSP_*`: the batch span processor, read
  by the SDK.

The older `<SVC>_OTLP_ENDPOINT` (e.g. `PAYMENT_OTLP_ENDPOINT`) still works
when no standard endpoint is set: gRPC, plaintext unless it says `https://`.
An endpoint over `http://` is plaintext, `https://` TLS (or
`OTEL_EXPORTER_OTLP_INSECURE`). A value the SDK would only warn about (an
unknown protocol or exporter) stops the service at start-up instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace.export import SpanExporter

from paymesh_runtime.settings import ServiceSettings

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
PROTOCOLS = (GRPC, HTTP_PROTOBUF)


@dataclass(frozen=True)
class TraceExport:
    """The collector a service exports to: its endpoint, protocol, and whether a standard variable named it."""

    endpoint: str
    protocol: str
    standard: bool


def _first(environ: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return ""


def trace_export(settings: ServiceSettings, environ: Mapping[str, str] = os.environ) -> TraceExport | None:
    """The export the variables configure, or None when spans go nowhere."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if exporter == "none":
        return None
    if exporter != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER must be otlp or none, not {exporter!r}")
    protocol = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL") or GRPC
    if protocol not in PROTOCOLS:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL must be one of {PROTOCOLS}, not {protocol!r}")
    standard = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if standard:
        return TraceExport(standard, protocol, standard=True)
    if settings.otlp_endpoint:
        return TraceExport(settings.otlp_endpoint, protocol, standard=False)
    return None


def span_exporter(export: TraceExport) -> SpanExporter:
    """The OTLP exporter of `export`; given no endpoint, it reads the standard variables itself."""
    if export.protocol == HTTP_PROTOBUF:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        if export.standard:
            return HttpExporter()
        return HttpExporter(endpoint=f"{export.endpoint.rstrip('/')}/v1/traces")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    if export.standard:
        return GrpcExporter()
    # <SVC>_OTLP_ENDPOINT is usually host:port of an in-cluster collector: plaintext unless it says https.
    scheme = urlsplit(export.endpoint).scheme if "://" in export.endpoint else ""
    return GrpcExporter(endpoint=export.endpoint, insecure=scheme != "https")


def service_resource(service: str, environ: Mapping[str, str] = os.environ) -> Resource:
    """The resource of the service's spans: OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (read by the
    SDK), with the service's module name as `service.name` unless one of them names it."""
    named = environ.get("OTEL_SERVICE_NAME", "").strip() or any(
        part.split("=", 1)[0].strip() == SERVICE_NAME for part in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
    )
    return Resource.create({} if named else {SERVICE_NAME: service})
