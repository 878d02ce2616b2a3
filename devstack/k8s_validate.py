"""Validate the Helm chart and the ArgoCD manifests offline.

    python -m devstack.k8s_validate

1. Kubernetes JSON schemas, bundled offline: the PyPI package
   kubernetes-validate ships per-kind schemas whose ``$ref``s point at a
   shared ``_definitions.json``; each kind is written standalone (the
   definitions it reaches inlined under ``$defs``) to
   ``.tools/k8s-schemas/v1.31.0-standalone-strict/<kind>-<group>-<version>.json``,
   the names kubeconform's ``-schema-location`` template expects.
2. CRD schemas: ArgoCD's Application/ApplicationSet/AppProject and the
   Prometheus Operator's ServiceMonitor and PrometheusRule, from their Go modules
   (``go mod download``, cached in ~/go), converted from openAPIV3Schema to
   strict JSON schemas in ``.tools/k8s-schemas/crds/``.
3. ``helm lint --strict`` and ``helm template`` of charts/paymesh with its
   default values, with every optional template switched on, and with each
   ``argocd/envs/<env>/values.yaml``; the same for the app-of-apps chart
   argocd/apps. Renders are kept in ``.tools/k8s-render/`` for inspection.
4. ``kubeconform -strict`` on every render and on argocd/root-app.yaml.
5. Checks no schema can make: every ``.Values`` path in files/envoy.yaml is
   defined; the Envoy config rendered by the chart passes
   ``envoy --mode validate``; every env folder has an Application and the
   reverse; the chart's descriptor set is gen/paymesh.pb.

Exits non-zero on any failure. Nothing is fetched but Go modules.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS = REPO_ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
KUBECONFORM = TOOLS / "bin" / "kubeconform"
KUBE_VERSION = "1.31.0"
SCHEMA_ROOT = TOOLS / "k8s-schemas"
CORE_SCHEMAS = SCHEMA_ROOT / f"v{KUBE_VERSION}-standalone-strict"
CRD_SCHEMAS = SCHEMA_ROOT / "crds"
RENDER_DIR = TOOLS / "k8s-render"
CHART = REPO_ROOT / "charts" / "paymesh"
APPS_CHART = REPO_ROOT / "argocd" / "apps"
ENVS_DIR = REPO_ROOT / "argocd" / "envs"
ROOT_APP = REPO_ROOT / "argocd" / "root-app.yaml"
DESCRIPTOR = REPO_ROOT / "gen" / "paymesh.pb"
CHART_DESCRIPTOR_MOUNT = "/etc/envoy/descriptor/paymesh.pb"
BOOTSTRAP_HINT = "run devstack/bootstrap.sh (make deps) to install helm and kubeconform into .tools/bin"

# Go modules whose CRD manifests give the custom resources' schemas.
CRD_MODULES: dict[str, tuple[str, ...]] = {
    "github.com/argoproj/argo-cd/v3@v3.5.7": (
        "manifests/crds/application-crd.yaml",
        "manifests/crds/applicationset-crd.yaml",
        "manifests/crds/appproject-crd.yaml",
    ),
    "github.com/prometheus-operator/prometheus-operator@v0.85.0": (
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    ),
}
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
DEFS_URL = "/api/_definitions.json#/$defs/"

Doc = dict[str, Any]


class ValidationError(Exception):
    """A check failed; the message says which and why."""


@dataclass(frozen=True)
class Case:
    """One ``helm template`` run: a chart, values files, ``--set``s, release and namespace."""

    name: str
    chart: Path = CHART
    values: tuple[Path, ...] = ()
    sets: tuple[str, ...] = ()
    release: str = "paymesh"
    namespace: str = "paymesh"

    def args(self) -> list[str]:
        out = ["--namespace", self.namespace, "--kube-version", KUBE_VERSION]
        for path in self.values:
            out += ["--values", str(path)]
        for item in self.sets:
            out += ["--set", item]
        return out


def env_names() -> list[str]:
    return sorted(p.parent.name for p in ENVS_DIR.glob("*/values.yaml"))


def cases() -> list[Case]:
    """Every render that is validated: default, everything on, each environment, the apps chart."""
    secret_keys = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))["secrets"]["data"]
    everything_on = (
        "secrets.create=true",
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "grafanaDashboards.enabled=true",
        "telemetry.otlpEndpoint=http://otel-collector.observability.svc.cluster.local:4317",
        "telemetry.envoy.collectorHost=otel-collector.observability.svc.cluster.local",
        "components.default.hpa.enabled=true",
        "components.default.podDisruptionBudget.enabled=true",
        "envoy.hpa.enabled=true",
        "envoy.podDisruptionBudget.enabled=true",
        *(f"secrets.data.{key}=placeholder-not-a-secret" for key in secret_keys),
    )
    return [
        Case("default"),
        Case("everything-on", sets=everything_on),
        *(
            Case(f"env-{env}", values=(ENVS_DIR / env / "values.yaml",), namespace=f"paymesh-{env}")
            for env in env_names()
        ),
        Case("argocd-apps", chart=APPS_CHART, release="paymesh-apps", namespace="argocd"),
    ]


# --- tools -------------------------------------------------------------------


def _run(argv: Sequence[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, cwd=cwd, env=env)
    if proc.returncode != 0:
        raise ValidationError(f"{what} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}".rstrip())
    return proc.stdout


def require_tools() -> None:
    missing = [str(p) for p in (HELM, KUBECONFORM) if not p.exists()]
    if missing:
        raise ValidationError(f"missing {', '.join(missing)}: {BOOTSTRAP_HINT}")


def render(case: Case) -> str:
    """``helm template`` of one case (hooks included); raises ValidationError on failure."""
    require_tools()
    argv = [str(HELM), "template", case.release, str(case.chart), *case.args()]
    return _run(argv, f"helm template ({case.name})")


def lint(case: Case) -> None:
    _run([str(HELM), "lint", "--strict", str(case.chart), *case.args()], f"helm lint --strict ({case.name})")


def parse(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# --- schemas -------------------------------------------------------------------


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _reachable(schema: Doc, defs: dict[str, Any]) -> dict[str, Any]:
    """The definitions a schema reaches, transitively."""
    seen: dict[str, Any] = {}
    todo = [ref.rsplit("/", 1)[-1] for ref in _refs(schema)]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen[name] = defs[name]
            todo += [ref.rsplit("/", 1)[-1] for ref in _refs(defs[name])]
    return dict(sorted(seen.items()))


def _k8s_definitions() -> tuple[Path, dict[str, Any]]:
    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBE_VERSION}-local-strict"
    defs = json.loads((source / "_definitions.json").read_text(encoding="utf-8"))["$defs"]
    return source, defs


def _write_json(path: Path, data: Doc) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


def bundle_core_schemas() -> Path:
    """Standalone strict schemas of every top-level Kubernetes kind (cached)."""
    stamp, wanted = CORE_SCHEMAS / ".complete", f"kubernetes-validate {kubernetes_validate.__version__}\n"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return CORE_SCHEMAS
    source, defs = _k8s_definitions()
    CORE_SCHEMAS.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        if path.name.startswith("_") or "kind" not in schema.get("properties", {}):
            continue
        text = json.dumps(schema).replace(DEFS_URL, "#/$defs/")
        standalone = json.loads(text)
        standalone.pop("$id", None)
        standalone["$defs"] = _reachable(standalone, defs)
        _write_json(CORE_SCHEMAS / path.name, standalone)
    stamp.write_text(wanted, encoding="utf-8")
    return CORE_SCHEMAS


def openapi_to_json_schema(node: Any) -> Any:
    """A CRD's openAPIV3Schema as a strict JSON schema: nullable -> null type, no unknown fields."""
    if isinstance(node, list):
        return [openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: openapi_to_json_schema(value) for key, value in node.items()}
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def _crd_schema(crd: Doc, version: Doc, defs: dict[str, Any]) -> Doc:
    schema: Doc = openapi_to_json_schema(version["schema"]["openAPIV3Schema"])
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "enum": [f"{crd['spec']['group']}/{version['name']}"]}
    props["kind"] = {"type": "string", "enum": [crd["spec"]["names"]["kind"]]}
    props["metadata"] = {"$ref": f"#/$defs/{OBJECT_META}"}
    schema["additionalProperties"] = False
    schema["$defs"] = _reachable(schema, defs)
    return schema


def _go_module_dir(module: str) -> Path:
    go = shutil.which("go")
    if go is None:
        raise ValidationError(f"go is not installed; it fetches {module}'s CRDs ({BOOTSTRAP_HINT})")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    with tempfile.TemporaryDirectory() as empty:  # outside any go.mod
        out = _run([go, "mod", "download", "-json", module], f"go mod download {module}", Path(empty), env)
    return Path(json.loads(out)["Dir"])


def crd_schemas() -> Path:
    """Strict schemas of the CRDs the manifests use (cached per module version and CRD file)."""
    stamp = CRD_SCHEMAS / ".complete"
    wanted = "\n".join(f"{module} {' '.join(files)}" for module, files in sorted(CRD_MODULES.items())) + "\n"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return CRD_SCHEMAS
    _, defs = _k8s_definitions()
    CRD_SCHEMAS.mkdir(parents=True, exist_ok=True)
    for module, files in CRD_MODULES.items():
        root = _go_module_dir(module)
        for name in files:
            for crd in parse((root / name).read_text(encoding="utf-8")):
                kind, group = crd["spec"]["names"]["kind"].lower(), crd["spec"]["group"].split(".")[0]
                for version in crd["spec"]["versions"]:
                    target = CRD_SCHEMAS / f"{kind}-{group}-{version['name']}.json"
                    _write_json(target, _crd_schema(crd, version, defs))
    stamp.write_text(wanted, encoding="utf-8")
    return CRD_SCHEMAS


def kubeconform(files: Sequence[Path]) -> str:
    template = "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    argv = [
        str(KUBECONFORM), "-strict", "-summary", "-n", "2",
        "-kubernetes-version", KUBE_VERSION,
        "-schema-location", str(bundle_core_schemas() / template),
        "-schema-location", str(crd_schemas() / template),
        *map(str, files),
    ]  # fmt: skip
    return _run(argv, "kubeconform")


# --- checks beyond the schemas ------------------------------------------------------


def envoy_config(docs: Sequence[Doc]) -> str | None:
    """The envoy.yaml of the chart's Envoy ConfigMap, if rendered."""
    for doc in docs:
        if doc["kind"] == "ConfigMap" and "envoy.yaml" in doc.get("data", {}):
            text: str = doc["data"]["envoy.yaml"]
            return text
    return None


def check_envoy(case: Case, docs: Sequence[Doc]) -> None:
    text = envoy_config(docs)
    if text is None:
        return
    yaml.safe_load(text)
    envoy = shutil.which("envoy")
    if envoy is None:
        raise ValidationError(f"envoy is not installed (pip install -e '.[dev]'): {BOOTSTRAP_HINT}")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "envoy.yaml"
        config.write_text(text.replace(CHART_DESCRIPTOR_MOUNT, str(DESCRIPTOR)), encoding="utf-8")
        _run(
            [envoy, "--mode", "validate", "--log-level", "critical", "-c", str(config)],
            f"envoy ({case.name})",
        )


def check_envoy_placeholders() -> None:
    """Every .Values path files/envoy.yaml uses exists in values.yaml (tpl renders a missing one as "")."""
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    template = (CHART / "files" / "envoy.yaml").read_text(encoding="utf-8")
    for path in sorted(set(re.findall(r"\.Values((?:\.\w+)+)", template))):
        node = values
        for key in path.strip(".").split("."):
            if not isinstance(node, dict) or key not in node:
                raise ValidationError(f"files/envoy.yaml uses .Values{path}, which values.yaml does not define")
            node = node[key]


def check_applications(docs: Sequence[Doc]) -> None:
    """Each env folder has an Application whose value file exists, and the reverse."""
    apps = [d for d in docs if d["kind"] == "Application"]
    seen: set[str] = set()
    for app in apps:
        source = app["spec"]["source"]
        for value_file in source["helm"]["valueFiles"]:
            path = (REPO_ROOT / source["path"] / value_file).resolve()
            if not path.is_file() or not path.is_relative_to(ENVS_DIR):
                raise ValidationError(f"{app['metadata']['name']}: value file {value_file} is not in argocd/envs")
            seen.add(path.parent.name)
    if seen != set(env_names()) or len(apps) != len(seen):
        raise ValidationError(f"Applications cover envs {sorted(seen)}, folders are {env_names()}")


def check_descriptor() -> None:
    if (CHART / "files" / "paymesh.pb").read_bytes() != DESCRIPTOR.read_bytes():
        raise ValidationError("charts/paymesh/files/paymesh.pb differs from gen/paymesh.pb: run make gen")


# --- main ----------------------------------------------------------------------------


def validate(out: Path = RENDER_DIR) -> list[str]:
    """Runs every check; returns the lines of a report, raises ValidationError on the first failure."""
    require_tools()
    check_descriptor()
    check_envoy_placeholders()
    out.mkdir(parents=True, exist_ok=True)
    report, files = [], [ROOT_APP]
    for case in cases():
        lint(case)
        text = render(case)
        docs = parse(text)
        check_envoy(case, docs)
        if case.chart == APPS_CHART:
            check_applications(docs)
        path = out / f"{case.name}.yaml"
        path.write_text(text, encoding="utf-8")
        files.append(path)
        report.append(f"ok  {case.name}: lint, render ({len(docs)} objects)")
    report.append(kubeconform(files).strip())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.k8s_validate",
        description="Validate the Helm chart and the ArgoCD manifests offline.",
    )
    parser.add_argument("--out", type=Path, default=RENDER_DIR, help="where the renders are written")
    args = parser.parse_args(argv)
    try:
        for line in validate(args.out):
            print(line)
    except ValidationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
