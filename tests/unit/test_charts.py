"""The Helm chart and the ArgoCD manifests: offline validation and security properties.

Renders with .tools/bin/helm (no cluster, no network); fails, never skips,
when the tools are missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
import yaml

from devstack import k8s_validate as kv

Doc = dict[str, Any]
SERVICES = ("auth", "wallet", "payment", "notify")
CHART_CASES = [c for c in kv.cases() if c.chart == kv.CHART]


@pytest.fixture(autouse=True)
def _tools_are_installed() -> None:
    if not kv.HELM.exists() or not kv.KUBECONFORM.exists():
        pytest.fail(f"{kv.HELM} or {kv.KUBECONFORM} is missing: {kv.BOOTSTRAP_HINT}")


@cache
def _docs(case: kv.Case) -> tuple[Doc, ...]:
    return tuple(kv.parse(kv.render(case)))


def _case(name: str) -> kv.Case:
    return next(c for c in kv.cases() if c.name == name)


def _of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _pod_specs(docs: tuple[Doc, ...]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def _deployment(docs: tuple[Doc, ...], component: str) -> Doc:
    return next(
        d for d in _of_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )


def test_the_offline_validation_passes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "devstack.k8s_validate"],
        cwd=kv.REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in proc.stdout


@pytest.mark.parametrize("case", CHART_CASES, ids=lambda c: c.name)
def test_every_container_runs_as_non_root_on_a_read_only_root_without_capabilities(case: kv.Case) -> None:
    for name, pod in _pod_specs(_docs(case)):
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["runAsNonRoot"] is True, name
            assert ctx["runAsUser"] == 10001, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name


@pytest.mark.parametrize("case", CHART_CASES, ids=lambda c: c.name)
def test_every_service_is_probed_with_native_grpc_health_on_its_port(case: kv.Case) -> None:
    for service in SERVICES:
        container = _deployment(_docs(case), service)["spec"]["template"]["spec"]["containers"][0]
        grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == grpc_port, (service, probe)


def test_envoy_is_probed_on_its_listener_because_its_admin_port_stays_on_loopback() -> None:
    docs = _docs(_case("default"))
    container = _deployment(docs, "envoy")["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["http"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "http"}
    admin = yaml.safe_load(kv.envoy_config(docs) or "")["admin"]["address"]["socket_address"]
    assert admin["address"] == "127.0.0.1"


@pytest.mark.parametrize("case", CHART_CASES, ids=lambda c: c.name)
def test_a_default_deny_network_policy_covers_every_pod_of_the_release(case: kv.Case) -> None:
    docs = _docs(case)
    deny = [
        p["spec"]
        for p in _of_kind(docs, "NetworkPolicy")
        if set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert len(deny) == 1
    selector = deny[0]["podSelector"]["matchLabels"].items()
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            assert selector <= doc["spec"]["template"]["metadata"]["labels"].items(), doc["metadata"]["name"]


def test_the_network_policies_admit_exactly_the_calls_the_services_make() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in _of_kind(_docs(_case("default")), "NetworkPolicy")}
    egress_to = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in policies["paymesh-payment"]["egress"]
        for peer in rule.get("to", [])
        if "podSelector" in peer
    }
    assert egress_to == {"wallet", "auth"}
    callers_of = {
        callee: {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for rule in policies[f"paymesh-{callee}"]["ingress"]
            for peer in rule["from"]
            if "podSelector" in peer
        }
        for callee in ("wallet", "auth")
    }
    # The services fetch auth_svc's JWKS to verify end users' tokens themselves (docs/auth.md).
    assert callers_of == {"wallet": {"envoy", "payment"}, "auth": {"envoy", "wallet", "payment", "notify"}}


def test_no_secret_is_rendered_unless_the_chart_is_asked_to_create_it() -> None:
    for case in CHART_CASES:
        secrets = _of_kind(_docs(case), "Secret")
        assert bool(secrets) == ("secrets.create=true" in case.sets), case.name


def test_the_created_secret_holds_exactly_the_keys_the_pods_read() -> None:
    docs = _docs(_case("everything-on"))
    (secret,) = _of_kind(docs, "Secret")
    read = {
        env["valueFrom"]["secretKeyRef"]["key"]
        for _, pod in _pod_specs(docs)
        for container in pod["containers"]
        for env in container.get("env", [])
        if "valueFrom" in env
    }
    assert set(secret["data"]) == read
    assert "AUTH_KEY_ENCRYPTION_KEY" in read


def test_the_envoy_config_points_at_the_in_cluster_services() -> None:
    case = kv.Case("other-release", release="edge", namespace="payments")
    config = yaml.safe_load(kv.envoy_config(_docs(case)) or "")
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for port, service in enumerate(SERVICES, start=50051):
        endpoint = clusters[service]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"] == {
            "address": f"edge-paymesh-{service}.payments.svc.cluster.local",
            "port_value": port,
        }
    issuer = yaml.safe_load((kv.CHART / "values.yaml").read_text(encoding="utf-8"))["auth"]["jwtIssuer"]
    assert f'issuer: "{issuer}"' in (kv.envoy_config(_docs(case)) or "")


def test_the_jwt_audience_value_reaches_both_envoy_and_auth_svc() -> None:
    """One value: a token auth_svc issues for `auth.jwtAudience` is one Envoy accepts."""
    default = yaml.safe_load(kv.envoy_config(_docs(_case("default"))) or "")
    audience = yaml.safe_load((kv.CHART / "values.yaml").read_text(encoding="utf-8"))["auth"]["jwtAudience"]
    assert _jwt_provider(default)["audiences"] == [audience]

    docs = _docs(kv.Case("audience", sets=("auth.jwtAudience=https://api.example.com",)))
    assert _jwt_provider(yaml.safe_load(kv.envoy_config(docs) or ""))["audiences"] == ["https://api.example.com"]
    auth = _deployment(docs, "auth")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in auth["env"]}
    assert env["AUTH_JWT_AUDIENCE"] == "https://api.example.com"


def _jwt_provider(config: Doc) -> Doc:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    jwt_authn = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.jwt_authn")
    provider: Doc = jwt_authn["typed_config"]["providers"]["paymesh"]
    return provider


def test_the_edge_health_endpoint_checks_every_in_cluster_service() -> None:
    config = yaml.safe_load(kv.envoy_config(_docs(_case("default"))) or "")
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    health = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.health_check")
    assert set(health["typed_config"]["cluster_min_healthy_percentages"]) == set(SERVICES)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for service in SERVICES:
        (check,) = clusters[service]["health_checks"]
        assert check["grpc_health_check"]["service_name"] == f"paymesh.{service}.v1.{service.capitalize()}Service"


def test_an_explicit_upstream_replaces_the_in_cluster_service() -> None:
    case = kv.Case("upstream", sets=("envoy.upstreams.auth.host=auth.example.net",))
    config = yaml.safe_load(kv.envoy_config(_docs(case)) or "")
    auth = next(c for c in config["static_resources"]["clusters"] if c["name"] == "auth")
    address = auth["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "auth.example.net", "port_value": 50051}


def test_the_values_schema_rejects_an_unknown_key() -> None:
    with pytest.raises(kv.ValidationError, match="bogus"):
        kv.render(kv.Case("bogus", sets=("components.auth.bogus=1",)))


def test_prod_leaves_replicas_to_the_autoscalers_staging_runs_two_and_dev_one() -> None:
    prod = _docs(_case("env-prod"))
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in _of_kind(prod, "HorizontalPodAutoscaler")}
    for deployment in _of_kind(prod, "Deployment"):
        assert "replicas" not in deployment["spec"]
        assert deployment["metadata"]["name"] in targets
    for env, replicas in (("staging", 2), ("dev", 1)):
        docs = _docs(_case(f"env-{env}"))
        assert not _of_kind(docs, "HorizontalPodAutoscaler")
        assert {d["spec"]["replicas"] for d in _of_kind(docs, "Deployment")} == {replicas}


def test_migrations_run_as_hooks_before_install_and_upgrade() -> None:
    jobs = _of_kind(_docs(_case("default")), "Job")
    commands = sorted(j["spec"]["template"]["spec"]["containers"][0]["command"] for j in jobs)
    assert commands == sorted(["python", "-m", f"{s}_svc", "migrate"] for s in SERVICES)
    for job in jobs:
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"


def test_config_changes_roll_the_pods() -> None:
    docs = _docs(_case("everything-on"))
    envoy = _deployment(docs, "envoy")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" in envoy
    for service in SERVICES:
        annotations = _deployment(docs, service)["spec"]["template"]["metadata"]["annotations"]
        assert "checksum/secret" in annotations


def test_each_environment_is_an_application_that_syncs_itself() -> None:
    apps = _of_kind(_docs(_case("argocd-apps")), "Application")
    assert sorted(a["metadata"]["name"] for a in apps) == [f"paymesh-{e}" for e in kv.env_names()]
    assert kv.env_names() == ["dev", "prod", "staging"]
    for app in apps:
        policy = app["spec"]["syncPolicy"]
        assert policy["automated"] == {"prune": True, "selfHeal": True}
        assert "CreateNamespace=true" in policy["syncOptions"]
        assert policy["retry"]["backoff"]["factor"] >= 2
    root = yaml.safe_load(kv.ROOT_APP.read_text(encoding="utf-8"))
    assert root["spec"]["source"]["path"] == "argocd/apps"
    assert root["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_the_chart_descriptor_set_is_a_copy_of_gen() -> None:
    assert (kv.CHART / "files" / "paymesh.pb").read_bytes() == kv.DESCRIPTOR.read_bytes(), (
        "charts/paymesh/files/paymesh.pb is stale: make gen"
    )


# --- observability: traces, Envoy's stats, alert rules, dashboards -----------------------------------
OBSERVABILITY = kv.CHART / "files" / "observability"


def _envoy_listeners(config: Doc) -> dict[str, Doc]:
    return {listener["name"]: listener for listener in config["static_resources"]["listeners"]}


def test_the_services_get_the_standard_opentelemetry_variables() -> None:
    docs = _docs(_case("everything-on"))
    for service in SERVICES:
        env = {e["name"]: e for e in _deployment(docs, service)["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["OTEL_SERVICE_NAME"]["value"] == f"{service}_svc"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].startswith("http://otel-collector.")
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "grpc"
        assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
        assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"] == "service.namespace=paymesh,k8s.namespace.name=paymesh"
        assert env["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"]["value"] == "otel,host"  # host.name: the pod
        assert f"{service.upper()}_OTLP_ENDPOINT" not in env
    default = _deployment(_docs(_case("default")), "payment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in {e["name"] for e in default}  # no collector, no export


def test_otlp_headers_come_from_the_secret_when_named() -> None:
    docs = _docs(
        kv.Case(
            "otlp-headers",
            sets=("telemetry.otlpEndpoint=https://otlp.example.com", "telemetry.otlpHeadersSecretKey=OTLP_HEADERS"),
        )
    )
    env = {e["name"]: e for e in _deployment(docs, "wallet")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {"name": "paymesh", "key": "OTLP_HEADERS"}


def test_envoy_traces_to_the_collector_only_when_given_one_at_the_services_ratio() -> None:
    assert "tracing" not in _hcm(yaml.safe_load(kv.envoy_config(_docs(_case("default"))) or ""))
    config = yaml.safe_load(kv.envoy_config(_docs(_case("everything-on"))) or "")
    tracing = _hcm(config)["tracing"]
    assert tracing["random_sampling"]["value"] == 2  # telemetry.samplingRatio 0.02, in percent
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    (tag,) = tracing["custom_tags"]
    assert tag["tag"] == "http.url"
    assert "WQ" in tag["value"]  # the query string stays out of traces
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    endpoint = clusters["otlp_collector"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": "otel-collector.observability.svc.cluster.local",
        "port_value": 4317,
    }
    # Envoy may reach the collector where networkPolicy.otlp says it is (as the services may).
    sets = ("telemetry.envoy.collectorHost=collector", "networkPolicy.otlp.cidrs={10.1.0.0/16}")
    policies = _of_kind(_docs(kv.Case("otlp-egress", sets=sets)), "NetworkPolicy")
    egress = next(p for p in policies if p["metadata"]["name"] == "paymesh-envoy")["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"port": 4317, "protocol": "TCP"}]} in egress


def _hcm(config: Doc) -> Doc:
    hcm: Doc = _envoy_listeners(config)["edge"]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def test_envoys_stats_are_served_on_their_own_port_and_nothing_else_of_the_admin_interface() -> None:
    docs = _docs(_case("default"))
    config = yaml.safe_load(kv.envoy_config(docs) or "")
    stats = _envoy_listeners(config)["stats"]
    assert stats["address"]["socket_address"]["port_value"] == 9902
    routes = stats["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0] == {"match": {"path": "/stats/prometheus"}, "route": {"cluster": "envoy_admin"}}
    assert routes[1]["direct_response"]["status"] == 404
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    services = {s["metadata"]["name"]: s for s in _of_kind(docs, "Service")}
    assert [p["port"] for p in services["paymesh-envoy"]["spec"]["ports"]] == [8080]  # not on the public Service
    assert services["paymesh-envoy-stats"]["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in services["paymesh-envoy-stats"]["spec"]["ports"]] == [9902]
    policy = next(p for p in _of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "paymesh-envoy")
    stats_rules = [rule for rule in policy["spec"]["ingress"] if rule["ports"][0]["port"] == 9902]
    assert [rule["from"] for rule in stats_rules] == [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    ]


def test_the_service_monitors_scrape_every_service_and_envoy_with_the_component_as_job() -> None:
    docs = _docs(_case("everything-on"))
    monitors = {m["metadata"]["name"]: m["spec"] for m in _of_kind(docs, "ServiceMonitor")}
    assert set(monitors) == {f"paymesh-{name}" for name in (*SERVICES, "envoy")}
    assert {m["jobLabel"] for m in monitors.values()} == {"app.kubernetes.io/component"}
    envoy = monitors["paymesh-envoy"]
    assert envoy["endpoints"][0]["path"] == "/stats/prometheus"
    selected = [
        s["metadata"]["name"]
        for s in _of_kind(docs, "Service")
        if envoy["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert selected == ["paymesh-envoy-stats"]


def test_the_prometheus_rule_ships_the_alert_rules_file_unchanged() -> None:
    assert not _of_kind(_docs(_case("default")), "PrometheusRule")
    (rule,) = _of_kind(_docs(_case("everything-on")), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text(encoding="utf-8"))


def test_each_dashboard_is_a_configmap_for_grafanas_sidecar() -> None:
    assert not [c for c in _of_kind(_docs(_case("default")), "ConfigMap") if "-dashboard-" in c["metadata"]["name"]]
    maps = [c for c in _of_kind(_docs(_case("everything-on")), "ConfigMap") if "-dashboard-" in c["metadata"]["name"]]
    files = sorted((OBSERVABILITY / "dashboards").glob("*.json"))
    assert len(maps) == len(files) == 3
    by_file = {name: text for c in maps for name, text in c["data"].items()}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    for path in files:
        assert json.loads(by_file[path.name]) == json.loads(path.read_text(encoding="utf-8"))
