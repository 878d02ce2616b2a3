"""Render the edge Envoy configuration from the single template in envoy/.

One source, three uses:

- ``render("local", LOCAL)`` and ``render("test", test_ports())``: everything
  on 127.0.0.1, upstreams are the local service ports (every replica of a
  scaled service an endpoint of its cluster: ``replicas={"payment": 2}``), the
  descriptor is the repo's ``gen/paymesh.pb``. ``rate_limits="shadow"`` keeps
  the buckets but only counts what they would refuse (``make bench``).
- ``render_helm()``: the same template with Helm expressions in place of the
  values; committed as ``charts/paymesh/files/envoy.yaml`` for the chart to
  ``tpl``.

CLI::

    python -m devstack.envoy_config --profile local --out .run/envoy.yaml
    python -m devstack.envoy_config --profile local --replicas payment=2,wallet=2 --rate-limits shadow
    python -m devstack.envoy_config --helm > charts/paymesh/files/envoy.yaml

Templating is ``string.Template`` (no dependency): every ``${name}`` is a YAML
scalar or a block of YAML lines; values are formatted here, not in the template.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from devstack.ports import HOST, SERVICES, Ports, local_ports, parse_replicas, test_ports
from devstack.tracing import edge_sampling_percent

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = REPO_ROOT / "envoy"
DESCRIPTOR_PATH = REPO_ROOT / "gen" / "paymesh.pb"
HELM_OUTPUT_PATH = REPO_ROOT / "charts" / "paymesh" / "files" / "envoy.yaml"
HELM_DESCRIPTOR_PATH = "/etc/envoy/descriptor/paymesh.pb"
# The edge's OpenAPI document (`make gen`), served by Envoy itself at OPENAPI_PATH.
OPENAPI_DOCUMENT = REPO_ROOT / "docs" / "openapi.json"
OPENAPI_PATH = "/openapi.json"

PROFILES = ("local", "test")
# The `aud` of access tokens on the local and test stacks: auth_svc issues it
# (devstack.services passes it as AUTH_JWT_AUDIENCE) and Envoy requires it. The
# Helm rendering takes `.Values.auth.jwtAudience` instead, the value the chart
# gives auth_svc.
JWT_AUDIENCE = "paymesh"

# Cluster name -> the gRPC service the edge exposes (and transcodes) on it.
EDGE_SERVICES: Mapping[str, str] = {
    "auth": "paymesh.auth.v1.AuthService",
    "wallet": "paymesh.wallet.v1.WalletService",
    "payment": "paymesh.payment.v1.PaymentService",
    "notify": "paymesh.notify.v1.NotifyService",
}

# Methods callable without a token (as JSON or native gRPC): sign-up, login,
# refresh, the key set Envoy itself fetches, and processor webhooks (signed by
# the processor, verified by payment_svc).
PUBLIC_METHODS = (
    "/paymesh.auth.v1.AuthService/Register",
    "/paymesh.auth.v1.AuthService/Login",
    "/paymesh.auth.v1.AuthService/Refresh",
    "/paymesh.auth.v1.AuthService/GetJwks",
    "/paymesh.payment.v1.PaymentService/HandleProcessorWebhook",
)

# The edge's own health endpoint, public like the methods above: answered by
# Envoy's health_check filter, 200 while each EDGE_SERVICES cluster has a
# healthy host (hosts are actively checked with grpc.health.v1), else 503.
HEALTH_PATH = "/healthz"
# Minimum share of healthy hosts per cluster for a 200 on HEALTH_PATH. Envoy
# compares whole percents, so 1 means "at least one healthy host" (up to 100
# hosts): the edge reports healthy while it can reach every service.
HEALTH_MIN_HEALTHY_PERCENT = 1

# Header that selects the test profile's tiny rate-limit buckets (see
# TEST_PROBE_LIMIT); the route does not exist in the other profiles.
RATELIMIT_PROBE_HEADER = "x-paymesh-ratelimit-probe"

# The verified JWT `sub`, written by jwt_authn (claim_to_headers) on
# authenticated methods only: the key of the per-user rate-limit buckets.
USER_ID_HEADER = "x-paymesh-user-id"
# Distinct users or addresses each route keeps a bucket for (Envoy drops the
# least recently used past this; a bucket is a few dozen bytes).
MAX_DYNAMIC_DESCRIPTORS = 10_000
# The IETF draft (draft-ietf-httpapi-ratelimit-headers) names every reply of
# a rate-limited route carries; Envoy writes them with an `x-` prefix.
RATELIMIT_RESPONSE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per caller: ``per_second`` refill, up to ``burst`` tokens.

    Each authenticated user (JWT `sub`) and each client address calling a
    public method has a bucket of its own on each route group.
    """

    per_second: int
    burst: int


@dataclass(frozen=True)
class RateLimits:
    auth: RateLimit
    payment: RateLimit
    # wallet, notify and GET /openapi.json (each its own group).
    default: RateLimit

    def for_cluster(self, cluster: str) -> RateLimit:
        return {"auth": self.auth, "payment": self.payment}.get(cluster, self.default)


PRODUCTION_LIMITS = RateLimits(
    auth=RateLimit(per_second=20, burst=40),
    payment=RateLimit(per_second=200, burst=400),
    default=RateLimit(per_second=500, burst=1000),
)
# The test stack runs whole suites through the edge: generous buckets so that
# no unrelated test is throttled; 429 is tested on the probe route instead.
TEST_LIMITS = RateLimits(
    auth=RateLimit(per_second=200, burst=400),
    payment=RateLimit(per_second=500, burst=1000),
    default=RateLimit(per_second=1000, burst=2000),
)
TEST_PROBE_LIMIT = RateLimit(per_second=5, burst=10)

# How the per-service buckets act (local and test stacks; Helm always
# enforces). "shadow": Envoy still runs every bucket and counts in
# `<route>.http_local_rate_limit.rate_limited` what it would refuse, but lets
# everything through, so a load test measures the mesh and still learns
# whether the production buckets would have capped it (devstack.bench). The
# test profile's probe bucket is a test device, not a capacity limit: always
# enforced.
RATE_LIMIT_MODES = ("enforce", "shadow")


@dataclass(frozen=True)
class HealthCheck:
    """Active grpc.health.v1 checks of each host of a service cluster."""

    interval_seconds: int
    timeout_seconds: int
    # Consecutive failures before a host is unhealthy / passes before it is back.
    unhealthy_threshold: int
    healthy_threshold: int


PRODUCTION_HEALTH_CHECK = HealthCheck(interval_seconds=5, timeout_seconds=2, unhealthy_threshold=2, healthy_threshold=1)
# The test stack notices a stopped service within ~2 s and its return within ~1 s.
TEST_HEALTH_CHECK = HealthCheck(interval_seconds=1, timeout_seconds=1, unhealthy_threshold=2, healthy_threshold=1)

LOCAL_CORS_ORIGIN_REGEX = r"^http://(localhost|127\.0\.0\.1)(:[0-9]+)?$"

# How long Envoy keeps auth_svc's key set. Envoy does not refetch it for an
# unknown kid, so auth_svc publishes a rotated-in key longer than this before
# signing with it (key_publish_lead_seconds), and a key removed from the set
# stops verifying tokens within this time. The test profile keeps it short so
# the rotation tests run in seconds.
JWKS_CACHE_SECONDS: Mapping[str, int] = {"local": 300, "test": 3, "helm": 300}
# Margin on top of the cache before a new key signs (a fetch in flight, retries).
KEY_PUBLISH_MARGIN_SECONDS: Mapping[str, int] = {"local": 60, "test": 2, "helm": 60}
# The longest access token the edge accepts (exp - iat); auth_svc's
# AUTH_ACCESS_TOKEN_TTL_SECONDS (default 900) must not exceed it.
JWT_MAX_LIFETIME_SECONDS = 3600
# Tolerated clock difference for exp/nbf: expired tokens are refused promptly.
JWT_CLOCK_SKEW_SECONDS = 5
# Dynamic-metadata key (namespace envoy.filters.http.jwt_authn) of jwt_authn's
# failure status, read by the local reply mappers.
JWT_FAILURE_METADATA_KEY = "jwt_failure"
JWT_AUDIENCE_FAILURE = "Audiences in Jwt are not allowed"


def jwt_issuer(profile: str) -> str:
    """The `iss` of the local and test stacks' tokens (auth_svc issues, Envoy checks)."""
    return f"paymesh-{profile}"


def key_publish_lead_seconds(profile: str) -> int:
    """How long auth_svc must publish a new key before signing with it behind this edge."""
    return JWKS_CACHE_SECONDS[profile] + KEY_PUBLISH_MARGIN_SECONDS[profile]


@dataclass(frozen=True)
class LocalReply:
    """How Envoy's own error for one HTTP status is rendered (google.rpc.Status)."""

    http_status: int
    grpc_code: int
    reason: str


# No API request comes near this: a payment is a few hundred bytes, a batch of
# webhook event types a few kilobytes.
MAX_REQUEST_BODY_BYTES = 1_048_576

# Same JSON shape as a transcoded service error: {"code": <gRPC code>,
# "message", "details": [ErrorInfo]}, with reasons from paymesh.common.v1.
LOCAL_REPLIES = (
    LocalReply(400, 3, "VALIDATION_FAILED"),  # e.g. malformed JSON body
    LocalReply(401, 16, "UNAUTHENTICATED"),  # missing/invalid JWT
    LocalReply(403, 7, "PERMISSION_DENIED"),  # e.g. a CORS origin not allowed
    LocalReply(404, 5, "RESOURCE_NOT_FOUND"),  # no such route / internal method
    LocalReply(413, 3, "REQUEST_TOO_LARGE"),  # a JSON body over max_request_body_bytes (transcoder)
    LocalReply(429, 8, "RATE_LIMITED"),  # local_ratelimit
    LocalReply(503, 14, "DEPENDENCY_UNAVAILABLE"),  # upstream down
    LocalReply(504, 4, "DEPENDENCY_UNAVAILABLE"),  # upstream timeout
)


@dataclass(frozen=True)
class Upstream:
    host: str
    port: str


@dataclass(frozen=True)
class EdgeTracing:
    """Envoy's OpenTelemetry tracer: the share of new traces sampled and the OTLP/gRPC collector.

    `condition`: a Helm expression the tracing blocks are rendered under
    (`{{- if ... }}`), for a chart that traces only when given a collector.
    """

    sampling_percent: str
    collector_host: str
    collector_port: str
    cluster_type: str
    condition: str = ""


# The name of the edge's spans in the trace backend (the services use their module names).
EDGE_SERVICE_NAME = "envoy"


@dataclass(frozen=True)
class EdgeSettings:
    """Every value the template needs, already formatted as YAML scalars."""

    admin_address: str
    admin_port: str
    listener_address: str
    listener_port: str
    # Every replica of a service is an endpoint of its cluster (round robin).
    upstreams: Mapping[str, tuple[Upstream, ...]]
    cluster_type: str
    descriptor_path: str
    jwt_issuer: str
    jwt_audience: str
    cors_origin_regex: str
    max_downstream_connections: str
    # The largest HTTP/JSON request body the edge transcodes; larger: 413 REQUEST_TOO_LARGE.
    max_request_body_bytes: str
    limits: RateLimits
    jwks_cache_seconds: int
    health_check: HealthCheck
    ratelimit_probe: RateLimit | None = None
    rate_limits_enforced: bool = True
    tracing: EdgeTracing | None = None
    # A listener serving only GET /stats/prometheus (Helm: Prometheus cannot reach the loopback admin port).
    stats_port: str = ""
    # Proxies in front of Envoy whose X-Forwarded-For entry is trusted as the
    # client address (per-address rate limits): none on the local stacks.
    xff_trusted_hops: str = "0"


def _yaml_str(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(value)


def _load_template(name: str) -> Template:
    return Template((TEMPLATE_DIR / name).read_text(encoding="utf-8"))


def settings_for(
    profile: str, ports: Ports, replicas: Mapping[str, int] | None = None, rate_limits: str = "enforce"
) -> EdgeSettings:
    """Values for the local or test stack: everything on 127.0.0.1.

    `replicas`: how many replicas of a service run (default 1 each); each is
    an endpoint of the service's cluster. `rate_limits`: RATE_LIMIT_MODES.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    if rate_limits not in RATE_LIMIT_MODES:
        raise ValueError(f"unknown rate-limit mode {rate_limits!r}; expected one of {RATE_LIMIT_MODES}")
    is_test = profile == "test"
    counts = replicas or {}
    return EdgeSettings(
        admin_address=HOST,
        admin_port=str(ports.envoy_admin),
        listener_address=HOST,
        listener_port=str(ports.envoy),
        upstreams={
            name: tuple(Upstream(HOST, str(ports.grpc(name, k))) for k in range(1, counts.get(name, 1) + 1))
            for name in SERVICES
        },
        cluster_type="STATIC",
        descriptor_path=_yaml_str(str(DESCRIPTOR_PATH)),
        jwt_issuer=_yaml_str(jwt_issuer(profile)),
        jwt_audience=_yaml_str(JWT_AUDIENCE),
        cors_origin_regex=_yaml_str(LOCAL_CORS_ORIGIN_REGEX),
        max_downstream_connections="10000",
        max_request_body_bytes=str(MAX_REQUEST_BODY_BYTES),
        limits=TEST_LIMITS if is_test else PRODUCTION_LIMITS,
        jwks_cache_seconds=JWKS_CACHE_SECONDS[profile],
        health_check=TEST_HEALTH_CHECK if is_test else PRODUCTION_HEALTH_CHECK,
        ratelimit_probe=TEST_PROBE_LIMIT if is_test else None,
        rate_limits_enforced=rate_limits == "enforce",
        # The stack's Jaeger (devstack.jaeger), sampling like the services (devstack.tracing).
        tracing=EdgeTracing(
            sampling_percent=str(edge_sampling_percent()),
            collector_host=HOST,
            collector_port=str(ports.otlp_grpc),
            cluster_type="STATIC",
        ),
    )


def helm_settings() -> EdgeSettings:
    """Values as Helm expressions, resolved by the chart's ``tpl``."""
    return EdgeSettings(
        # The admin interface can stop Envoy: never outside the pod.
        admin_address=HOST,
        admin_port="{{ .Values.envoy.adminPort }}",
        listener_address="0.0.0.0",  # noqa: S104 -- in-cluster edge; the NetworkPolicy limits who reaches it
        listener_port="{{ .Values.envoy.port }}",
        # One endpoint per service: STRICT_DNS resolves it to every pod behind
        # the Service, so the chart scales with its replica counts.
        upstreams={
            name: (
                Upstream(
                    f"{{{{ .Values.envoy.upstreams.{name}.host }}}}",
                    f"{{{{ .Values.envoy.upstreams.{name}.port }}}}",
                ),
            )
            for name in SERVICES
        },
        cluster_type="STRICT_DNS",
        descriptor_path=_yaml_str(HELM_DESCRIPTOR_PATH),
        jwt_issuer="{{ .Values.auth.jwtIssuer | quote }}",
        # The value the chart also gives auth_svc as AUTH_JWT_AUDIENCE.
        jwt_audience="{{ .Values.auth.jwtAudience | quote }}",
        cors_origin_regex="{{ .Values.envoy.cors.allowedOriginRegex | quote }}",
        max_downstream_connections="10000",
        max_request_body_bytes="{{ .Values.envoy.maxRequestBodyBytes }}",
        limits=PRODUCTION_LIMITS,
        jwks_cache_seconds=JWKS_CACHE_SECONDS["helm"],
        health_check=PRODUCTION_HEALTH_CHECK,
        # Optional: traced only when the chart names a collector; the services' sampling ratio, in percent.
        tracing=EdgeTracing(
            sampling_percent="{{ mulf (float64 .Values.telemetry.samplingRatio) 100 }}",
            collector_host="{{ .Values.telemetry.envoy.collectorHost | quote }}",
            collector_port="{{ .Values.telemetry.envoy.collectorPort }}",
            cluster_type="STRICT_DNS",
            condition=".Values.telemetry.envoy.collectorHost",
        ),
        stats_port="{{ .Values.envoy.statsPort }}",
        xff_trusted_hops="{{ .Values.envoy.trustedProxyHops }}",
    )


def internal_grpc_paths(descriptor_path: Path = DESCRIPTOR_PATH) -> list[str]:
    """gRPC paths of the edge services' methods that have no HTTP binding."""
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes())
    edge_services = set(EDGE_SERVICES.values())
    paths = []
    for file in descriptor_set.file:
        for service in file.service:
            full_name = f"{file.package}.{service.name}"
            if full_name not in edge_services:
                continue
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    paths.append(f"/{full_name}/{method.name}")
    return paths


def _blocked_routes(grpc_paths: Iterable[str]) -> Iterator[str]:
    for path in grpc_paths:
        yield f"              - match: {{path: {_yaml_str(path)}}}"
        yield '                direct_response: {status: 404, body: {inline_string: "no such route"}}'


def _public_rules() -> str:
    return "\n".join(f"              - match: {{path: {_yaml_str(path)}}}" for path in PUBLIC_METHODS)


def _health_clusters() -> str:
    return "\n".join(f"                {name}: {{value: {HEALTH_MIN_HEALTHY_PERCENT}}}" for name in EDGE_SERVICES)


def _rate_limit(name: str, limit: RateLimit, enforced: bool = True) -> str:
    """A route's local_ratelimit config: a bucket per user, or per address without one."""
    return _load_template("ratelimit.yaml.tmpl").substitute(
        name=name,
        user_header=USER_ID_HEADER,
        burst=limit.burst,
        per_second=limit.per_second,
        max_dynamic_descriptors=MAX_DYNAMIC_DESCRIPTORS,
        enforced_percent=100 if enforced else 0,
    )


def _service_route(name: str, cluster: str, match: str, limit: RateLimit, enforced: bool = True) -> str:
    return _load_template("route.yaml.tmpl").substitute(
        name=name, cluster=cluster, match=match, rate_limit=_rate_limit(name, limit, enforced).rstrip("\n")
    )


def openapi_document() -> str:
    """docs/openapi.json as committed (`make gen`): the body of GET /openapi.json."""
    return OPENAPI_DOCUMENT.read_text(encoding="utf-8")


def _openapi_route(settings: EdgeSettings) -> str:
    document = openapi_document()
    if "{{" in document or "}}" in document:
        # The Helm rendering goes through `tpl`, which would evaluate them.
        raise ValueError(f"{OPENAPI_DOCUMENT} contains a template delimiter ({{{{ or }}}})")
    route = _load_template("openapi_route.yaml.tmpl").substitute(
        name="openapi",
        path=_yaml_str(OPENAPI_PATH),
        body=_yaml_str(document),
        rate_limit=_rate_limit("openapi", settings.limits.default, settings.rate_limits_enforced).rstrip("\n"),
    )
    return route.rstrip("\n")


def _max_direct_response_bytes() -> int:
    # The document is inlined at render time, so its size is known; the
    # margin covers the other direct responses ("no such route").
    return len(openapi_document().encode("utf-8")) + 4096


def _ratelimit_header_mutations() -> str:
    lines = []
    for name in RATELIMIT_RESPONSE_HEADERS:
        lines += [
            f'                - append: {{header: {{key: {name}, value: "%RESP(x-{name})%"}}, '
            "append_action: OVERWRITE_IF_EXISTS_OR_ADD}",
        ]
    lines += [f"                - remove: x-{name}" for name in RATELIMIT_RESPONSE_HEADERS]
    return "\n".join(lines)


def _service_routes(settings: EdgeSettings) -> str:
    routes = []
    if settings.ratelimit_probe is not None:
        # Test profile only: a tiny bucket that a test selects with a header,
        # so it can provoke 429 without throttling anything else.
        probe_match = (
            f'{{prefix: "/{EDGE_SERVICES["auth"]}/", '
            f"headers: [{{name: {RATELIMIT_PROBE_HEADER}, present_match: true}}]}}"
        )
        routes.append(_service_route("ratelimit_probe", "auth", probe_match, settings.ratelimit_probe))
    for cluster, service in EDGE_SERVICES.items():
        match = f'{{prefix: "/{service}/"}}'
        limit = settings.limits.for_cluster(cluster)
        routes.append(_service_route(cluster, cluster, match, limit, settings.rate_limits_enforced))
    return "".join(routes).rstrip("\n")


def _service_clusters(settings: EdgeSettings) -> str:
    template = _load_template("cluster.yaml.tmpl")
    clusters = (
        template.substitute(
            service=name,
            cluster_type=settings.cluster_type,
            lb_endpoints=_lb_endpoints(upstreams),
            grpc_service=_yaml_str(EDGE_SERVICES[name]),
            hc_interval=f"{settings.health_check.interval_seconds}s",
            hc_timeout=f"{settings.health_check.timeout_seconds}s",
            hc_unhealthy_threshold=settings.health_check.unhealthy_threshold,
            hc_healthy_threshold=settings.health_check.healthy_threshold,
        )
        for name, upstreams in settings.upstreams.items()
    )
    return "".join(clusters).rstrip("\n")


def _lb_endpoints(upstreams: Iterable[Upstream]) -> str:
    return "\n".join(
        "        - endpoint:\n"
        "            address:\n"
        f"              socket_address: {{address: {upstream.host}, port_value: {upstream.port}}}"
        for upstream in upstreams
    )


_NATIVE_GRPC_FILTERS = [
    # A transcoded JSON request also has a gRPC content-type by now, but
    # carries the original path.
    "                  - header_filter:",
    "                      header: {name: content-type, string_match: {prefix: application/grpc}}",
    "                  - header_filter:",
    "                      header: {name: x-envoy-original-path, present_match: false}",
]
_AUDIENCE_FAILURE_FILTER = [
    "                  - metadata_filter:",
    "                      matcher:",
    "                        filter: envoy.filters.http.jwt_authn",
    f"                        path: [{{key: {JWT_FAILURE_METADATA_KEY}}}, {{key: message}}]",
    f"                        value: {{string_match: {{exact: {_yaml_str(JWT_AUDIENCE_FAILURE)}}}}}",
    # The default (true) would match every request without a JWT failure.
    "                      match_if_key_not_found: false",
]
_HEALTH_RUNTIME_KEY = "edge.local_reply.healthz"
_HEALTH_PATH_FILTER = [
    "                  - header_filter:",
    f'                      header: {{name: ":path", string_match: {{exact: {_yaml_str(HEALTH_PATH)}}}}}',
]


def _status_filter(op: str, status: int, runtime_key: str) -> list[str]:
    return [
        "                  - status_code_filter:",
        "                      comparison:",
        f"                        op: {op}",
        f"                        value: {{default_value: {status}, runtime_key: {runtime_key}}}",
    ]


def _health_status_filter(op: str, status: int) -> list[str]:
    return _status_filter(op, status, _HEALTH_RUNTIME_KEY)


_TEXT_BODY = '                text_format_source: {inline_string: "%LOCAL_REPLY_BODY%"}'


def _json_status_body(grpc_code: int, reason: str) -> list[str]:
    return [
        "                json_format:",
        f"                  code: {grpc_code}",
        '                  message: "%LOCAL_REPLY_BODY%"',
        "                  details:",
        '                  - "@type": type.googleapis.com/google.rpc.ErrorInfo',
        f"                    reason: {reason}",
        "                    domain: paymesh",
    ]


def _local_reply_mappers() -> str:
    lines: list[str] = [
        # A token for another audience is not valid here: 401 like any other
        # bad token (jwt_authn says 403), for gRPC (UNAUTHENTICATED) and JSON.
        "            - filter:",
        "                and_filter:",
        "                  filters:",
        *_NATIVE_GRPC_FILTERS,
        *_AUDIENCE_FAILURE_FILTER,
        "              status_code: 401",
        "              body_format_override:",
        _TEXT_BODY,
        "            - filter:",
        "                and_filter:",
        "                  filters:",
        "                  - status_code_filter:",
        "                      comparison: {op: EQ, value: {default_value: 403, runtime_key: edge.local_reply.aud}}",
        *_AUDIENCE_FAILURE_FILTER,
        "              status_code: 401",
        "              body_format_override:",
        *_json_status_body(16, "UNAUTHENTICATED"),
        # GET /openapi.json is a direct response, hence a local reply: its
        # body as it is, not wrapped in the Status document below.
        "            - filter:",
        "                and_filter:",
        "                  filters:",
        "                  - header_filter:",
        f'                      header: {{name: ":path", string_match: {{exact: {_yaml_str(OPENAPI_PATH)}}}}}',
        *_status_filter("EQ", 200, "edge.local_reply.openapi"),
        "              body_format_override:",
        _TEXT_BODY,
        "                content_type: application/json",
        # Native gRPC clients get the status in grpc-status and just the text
        # in grpc-message, not a JSON document.
        "            - filter:",
        "                and_filter:",
        "                  filters:",
        *_NATIVE_GRPC_FILTERS,
        "              body_format_override:",
        _TEXT_BODY,
        # GET /healthz (the health_check filter replies locally): a small JSON
        # document either way, with the 503 shaped like every other error.
        "            - filter:",
        "                and_filter:",
        "                  filters:",
        *_HEALTH_PATH_FILTER,
        *_health_status_filter("EQ", 200),
        "              body_format_override:",
        '                json_format: {status: "SERVING"}',
        "            - filter:",
        "                and_filter:",
        "                  filters:",
        *_HEALTH_PATH_FILTER,
        *_health_status_filter("GE", 300),
        '              body: {inline_string: "NOT_SERVING"}',
        "              body_format_override:",
        *_json_status_body(14, "DEPENDENCY_UNAVAILABLE"),
    ]
    for reply in LOCAL_REPLIES:
        lines += [
            "            - filter:",
            "                status_code_filter:",
            "                  comparison:",
            "                    op: EQ",
            f"                    value: {{default_value: {reply.http_status}, "
            f"runtime_key: edge.local_reply.status_{reply.http_status}}}",
            "              body_format_override:",
            *_json_status_body(reply.grpc_code, reply.reason),
        ]
    return "\n".join(lines)


def _under(condition: str, block: str) -> str:
    """`block`, inside a Helm `if` on `condition` when there is one."""
    if not condition:
        return block
    return f"{{{{- if {condition} }}}}\n{block}\n{{{{- end }}}}"


def _tracing(settings: EdgeSettings) -> tuple[str, str]:
    """The connection manager's tracing block and the collector's cluster ("" and "" without tracing)."""
    tracing = settings.tracing
    if tracing is None:
        return "", ""
    block = _load_template("tracing.yaml.tmpl").substitute(
        sampling_percent=tracing.sampling_percent, service_name=_yaml_str(EDGE_SERVICE_NAME)
    )
    cluster = _load_template("otlp_cluster.yaml.tmpl").substitute(
        cluster_type=tracing.cluster_type, host=tracing.collector_host, port=tracing.collector_port
    )
    return (_under(tracing.condition, block.rstrip("\n")), _under(tracing.condition, cluster.rstrip("\n")))


def _stats(settings: EdgeSettings) -> tuple[str, str]:
    """The stats listener and the admin cluster it forwards to ("" and "" without it)."""
    if not settings.stats_port:
        return "", ""
    listener = _load_template("stats.yaml.tmpl").substitute(
        listener_address=settings.listener_address, stats_port=settings.stats_port
    )
    cluster = _load_template("admin_cluster.yaml.tmpl").substitute(admin_port=settings.admin_port)
    return listener.rstrip("\n"), cluster.rstrip("\n")


def render_settings(settings: EdgeSettings) -> str:
    """The complete Envoy bootstrap YAML for ``settings``."""
    tracing, otlp_cluster = _tracing(settings)
    stats_listener, admin_cluster = _stats(settings)
    return _load_template("envoy.yaml.tmpl").substitute(
        admin_address=settings.admin_address,
        admin_port=settings.admin_port,
        listener_address=settings.listener_address,
        listener_port=settings.listener_port,
        descriptor_path=settings.descriptor_path,
        jwt_issuer=settings.jwt_issuer,
        jwt_audience=settings.jwt_audience,
        cors_origin_regex=settings.cors_origin_regex,
        health_path=_yaml_str(HEALTH_PATH),
        health_clusters=_health_clusters(),
        max_downstream_connections=settings.max_downstream_connections,
        max_request_body_bytes=settings.max_request_body_bytes,
        jwks_cache_duration=f"{settings.jwks_cache_seconds}s",
        jwt_clock_skew_seconds=str(JWT_CLOCK_SKEW_SECONDS),
        jwt_max_lifetime=f"{JWT_MAX_LIFETIME_SECONDS}s",
        jwt_failure_metadata_key=JWT_FAILURE_METADATA_KEY,
        local_reply_mappers=_local_reply_mappers(),
        public_rules=_public_rules(),
        internal_method_routes="\n".join(_blocked_routes(internal_grpc_paths())),
        service_routes=_service_routes(settings),
        openapi_route=_openapi_route(settings),
        openapi_path=_yaml_str(OPENAPI_PATH),
        max_direct_response_bytes=str(_max_direct_response_bytes()),
        ratelimit_header_mutations=_ratelimit_header_mutations(),
        xff_trusted_hops=settings.xff_trusted_hops,
        service_clusters=_service_clusters(settings),
        tracing=tracing,
        stats_listener=stats_listener,
        extra_clusters="\n".join(block for block in (otlp_cluster, admin_cluster) if block),
    )


def render(profile: str, ports: Ports, replicas: Mapping[str, int] | None = None, rate_limits: str = "enforce") -> str:
    """Envoy config for the ``local`` or ``test`` stack listening on ``ports`` (see settings_for)."""
    return render_settings(settings_for(profile, ports, replicas, rate_limits))


def render_helm() -> str:
    """Envoy config for the Helm chart (charts/paymesh/files/envoy.yaml)."""
    header = (
        "# GENERATED by `python -m devstack.envoy_config --helm` from envoy/*.tmpl;\n"
        "# do not edit. The chart renders it with `tpl`.\n"
    )
    return header + render_settings(helm_settings())


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devstack.envoy_config", description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--profile", choices=PROFILES, help="render for the local or test stack")
    target.add_argument("--helm", action="store_true", help="render with Helm expressions for the chart")
    parser.add_argument(
        "--port-base",
        type=int,
        default=None,
        help="test profile: port base (default: PAYMESH_TEST_PORT_BASE or 30000)",
    )
    parser.add_argument(
        "--replicas",
        default="",
        metavar="SERVICE=N,...",
        help="local/test profile: replicas per service, each an endpoint of its cluster (e.g. payment=2,wallet=2)",
    )
    parser.add_argument(
        "--rate-limits",
        choices=RATE_LIMIT_MODES,
        default="enforce",
        help="local/test profile: shadow counts what the buckets would refuse but lets it through",
    )
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.helm:
        text = render_helm()
    else:
        ports = local_ports() if args.profile == "local" else test_ports(args.port_base)
        try:
            replicas = parse_replicas(args.replicas)
        except ValueError as exc:
            raise SystemExit(f"--replicas: {exc}") from exc
        text = render(args.profile, ports, replicas, args.rate_limits)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
