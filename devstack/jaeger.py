"""Jaeger, the stack's trace backend: the all-in-one `jaeger` program (v2) with in-memory storage.

It takes OTLP over gRPC (Envoy and the services export there, devstack.tracing)
and HTTP, and serves its query API (`/api/traces/<trace id>`, `/api/services`,
`/api/traces?service=...`) and UI on the UI port; everything binds 127.0.0.1.
A binary built from the Go module has no UI assets (the UI is a separate npm
build, not published to the registry): the UI port then serves Jaeger's
placeholder page, and `python -m devstack.traces` prints traces from the
query API instead. Traces live in
memory only (the newest MAX_TRACES), so a restart forgets them. The binary is
built from the Go module proxy by devstack/bootstrap.sh into .tools/bin.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from devstack.components import Component
from devstack.ports import HOST
from devstack.procs import StackError

MAX_TRACES = 5_000

_CONFIG = """\
# Rendered by devstack/jaeger.py; Jaeger v2 is an OpenTelemetry Collector distribution.
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    # No self-metrics server (it would take the collector's fixed port 8888 in every stack).
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    # Its own spans would go to an OTLP collector on the default port 4317: not ours, maybe another stack's.
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: {host}:{ui}
    grpc:
      endpoint: {host}:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: {max_traces}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {host}:{otlp_grpc}
      http:
        endpoint: {host}:{otlp_http}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


class Jaeger(Component):
    name = "jaeger"
    start_timeout = 30.0
    stop_timeout = 10.0

    @property
    def config_path(self) -> str:
        return str(self.ctx.run_dir / "jaeger.yaml")

    def address(self) -> str:
        """The UI (and query API); OTLP comes in on ports.otlp_grpc and ports.otlp_http."""
        return self.ui_url()

    def ui_url(self) -> str:
        return f"http://{HOST}:{self.ctx.ports.jaeger_ui}"

    def ports(self) -> list[int]:
        p = self.ctx.ports
        return [p.jaeger_ui, p.jaeger_query_grpc, p.otlp_grpc, p.otlp_http]

    def rendered(self) -> str:
        p = self.ctx.ports
        return _CONFIG.format(
            host=HOST,
            ui=p.jaeger_ui,
            query_grpc=p.jaeger_query_grpc,
            otlp_grpc=p.otlp_grpc,
            otlp_http=p.otlp_http,
            max_traces=MAX_TRACES,
        )

    def prepare(self) -> None:
        (self.ctx.run_dir / "jaeger.yaml").write_text(self.rendered())

    def command(self) -> list[str]:
        binary = self.ctx.repo / ".tools" / "bin" / "jaeger"
        if not binary.exists():
            raise StackError("jaeger: .tools/bin/jaeger is missing; run devstack/bootstrap.sh (make deps)")
        return [str(binary), "--config", self.config_path]

    def is_healthy(self) -> bool:
        # The query API answers (the UI and the OTLP receivers start with it).
        try:
            # The URL is always http://127.0.0.1:<ui port>.
            with urllib.request.urlopen(f"{self.ui_url()}/api/services", timeout=2) as reply:  # noqa: S310
                return bool(reply.status == 200 and "data" in json.load(reply))
        except (urllib.error.URLError, OSError, ValueError):
            return False
