"""The metrics the dashboards and alert rules read are the ones the running services and Envoy export.

Scrapes every target of the test stack's Prometheus (devstack.prometheus_server)
and compares what they export with every metric name in
charts/paymesh/files/observability (dashboards and alert rules); runs each
query against that Prometheus, which must accept it; and checks that a payment
moves the business counters it should. The catalogue of docs/observability.md
("Metrics") is compared with the scrape both ways.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devstack.stack import Stack
from tests.e2e.test_authorization import Edge

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "charts" / "paymesh" / "files" / "observability"
CATALOGUE = ROOT / "docs" / "observability.md"
# Every metric the dashboards and rules use has one of these prefixes, or is Prometheus's own `up`.
METRIC = re.compile(r"\b(?:paymesh|envoy|process)_[a-z0-9_]+\b|\bup\b(?=\{)")
MATCHERS = re.compile(r"\{[^}]*\}")
GROUPING = re.compile(r"\b(?:by|without)\s*\([^)]*\)")
SAMPLE_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
JOBS = {"auth", "wallet", "payment", "notify", "envoy"}
# Grafana's variables, as a dashboard would fill them in.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$kind": "payment",
    "$currency": ".*",
}


def _queries() -> dict[str, str]:
    """Every PromQL expression of the dashboards and the rules, by where it is."""
    found = {}
    for path in sorted((OBSERVABILITY / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            for target in panel.get("targets", []):
                found[f"{path.name}: {panel['title']} ({target['refId']})"] = target["expr"]
    for group in yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            found[f"alerts.yaml: {rule['alert']}"] = rule["expr"]
    return found


def _prometheus(stack: Stack, path: str) -> Any:
    url = f"http://127.0.0.1:{stack.ports.prometheus}{path}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return body["data"]


@cache
def _targets(port: int) -> tuple[tuple[str, str, str], ...]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=10) as reply:
        active = json.load(reply)["data"]["activeTargets"]
    return tuple((t["labels"]["job"], t["scrapeUrl"], t["health"]) for t in active)


def _exported(scrape_url: str) -> set[str]:
    """Every sample name a target can export: its samples, and the ones its metric families declare (a
    labelled metric nothing has observed yet exports no sample, only its HELP and TYPE). Read from the
    text format itself: prometheus_client's parser renames counters (Envoy's lack `_total`)."""
    with urllib.request.urlopen(scrape_url, timeout=10) as reply:  # noqa: S310 (a target on loopback)
        text = reply.read().decode()
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names |= {name, *(name + suffix for suffix in HISTOGRAM_SUFFIXES if kind == "histogram")}
        elif line and not line.startswith("#"):
            match = SAMPLE_NAME.match(line)
            assert match, f"{scrape_url}: not a sample: {line!r}"
            names.add(match.group())
    return names


def _metric_names(expr: str) -> set[str]:
    """The metrics an expression names: identifiers with a metric prefix outside label matchers and
    `by (...)` / `without (...)` lists, and `up`."""
    outside = GROUPING.sub("", MATCHERS.sub("{}", expr))
    return set(METRIC.findall(outside))


def _wait_until_up(stack: Stack, timeout: float = 30) -> tuple[tuple[str, str, str], ...]:
    deadline = time.monotonic() + timeout
    while True:
        _targets.cache_clear()
        targets = _targets(stack.ports.prometheus)
        if {job for job, _, health in targets if health == "up"} >= JOBS or time.monotonic() > deadline:
            return targets
        time.sleep(1)


def test_prometheus_scrapes_every_service_and_envoy(stack: Stack) -> None:
    targets = _wait_until_up(stack)
    assert {job for job, _, _ in targets} == JOBS
    assert all(health == "up" for _, _, health in targets), targets


def test_every_metric_of_the_dashboards_and_rules_is_exported(stack: Stack) -> None:
    exported = set().union(*(_exported(url) for _, url, _ in _wait_until_up(stack)))
    queries = _queries()
    assert len(queries) > 40
    missing = {}
    for where, expr in queries.items():
        names = _metric_names(expr)
        assert names, f"{where}: names no metric this test knows: {expr}"
        names.discard("up")  # Prometheus's own, per target (test_prometheus_scrapes_every_service_and_envoy)
        if names - exported:
            missing[where] = sorted(names - exported)
    assert not missing, f"metrics no running service exports: {missing}"


def _families(scrape_url: str) -> set[str]:
    """The metric families a target declares (`# TYPE` lines), without prometheus_client's `_created`."""
    with urllib.request.urlopen(scrape_url, timeout=10) as reply:  # noqa: S310 (a target on loopback)
        text = reply.read().decode()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    return {name for name in names if not name.endswith("_created")}


def _documented() -> set[str]:
    """The metric names in the first column of docs/observability.md's catalogue table ("## Metrics")."""
    section = CATALOGUE.read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`((?:paymesh|envoy|process)_[a-z0-9_]+)`", row)}


def test_the_documented_catalogue_is_what_the_stack_exports(stack: Stack) -> None:
    targets = _wait_until_up(stack)
    exported = set().union(*(_exported(url) for _, url, _ in targets))
    documented = _documented()
    assert len(documented) > 20
    assert documented - exported == set(), "documented, but exported by no target"
    ours = {name for _, url, _ in targets for name in _families(url) if name.startswith("paymesh_")}
    assert ours - documented == set(), "exported, but not in docs/observability.md"


def test_prometheus_accepts_every_query(stack: Stack) -> None:
    for where, expr in _queries().items():
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr.replace("$labels", "").replace("$value", ""), f"{where}: unknown variable in {expr}"
        _prometheus(stack, "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def _sample(stack: Stack, service: str, name: str, labels: dict[str, str]) -> float:
    url = f"http://127.0.0.1:{stack.ports.metrics(service)}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


def test_a_payment_moves_the_business_and_pipeline_counters(stack: Stack) -> None:
    edge = Edge(stack)
    payer, shop = edge.person(), edge.person("MERCHANT")
    succeeded = {"kind": "payment", "state": "SUCCEEDED", "currency": "USD"}
    before = {
        "succeeded": _sample(stack, "payment", "paymesh_payment_state_changes_total", succeeded),
        "amount": _sample(stack, "payment", "paymesh_payment_state_amount_minor_units_total", succeeded),
        "credits": _sample(
            stack, "wallet", "paymesh_ledger_postings_total", {"currency": "USD", "direction": "credit"}
        ),
        "published": _sample(stack, "payment", "paymesh_outbox_published_total", {"topic": "paymesh.payments.v1"}),
    }
    body = {
        "source": {"card_token": "tok_visa"},
        "destination_wallet_id": payer.wallet_id,
        "amount": {"currency": "USD", "amount": "700"},
    }
    assert edge.pay(payer, body)["state"] == "SUCCEEDED"
    body = {
        "source": {"wallet_id": payer.wallet_id},
        "destination_wallet_id": shop.wallet_id,
        "amount": {"currency": "USD", "amount": "250"},
    }
    reply = edge.call("POST", "/v1/payments", payer, body, **{"idempotency-key": uuid.uuid4().hex})
    assert reply.json()["state"] == "SUCCEEDED"

    assert _sample(stack, "payment", "paymesh_payment_state_changes_total", succeeded) == before["succeeded"] + 2
    assert (
        _sample(stack, "payment", "paymesh_payment_state_amount_minor_units_total", succeeded) == before["amount"] + 950
    )
    # The card deposit credits the payer, the payment the merchant.
    credits = _sample(stack, "wallet", "paymesh_ledger_postings_total", {"currency": "USD", "direction": "credit"})
    assert credits == before["credits"] + 2
    deadline = time.monotonic() + 20
    while (
        _sample(stack, "payment", "paymesh_outbox_published_total", {"topic": "paymesh.payments.v1"})
        < before["published"] + 6
    ):
        assert time.monotonic() < deadline, "the relay did not publish the two payments' six events"
        time.sleep(0.5)
    assert _sample(stack, "payment", "paymesh_outbox_oldest_unpublished_age_seconds", {}) < 60
    assert (
        _sample(stack, "notify", "paymesh_notification_deliveries_total", {"channel": "email", "outcome": "delivered"})
        > 0
    )
