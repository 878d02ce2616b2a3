"""`make bench`: bounded load on loopback against the running local mesh.

Sets up customers through the edge (register, login, a USD wallet each, a card
deposit into each payer's wallet), then drives ghz for a fixed time per
scenario and prints throughput and latency percentiles:

- GetWallet straight to wallet_svc: the read path (through Envoy the edge's
  rate limit would be what is measured).
- CreatePayment wallet → wallet, several payer → payee pairs, through Envoy: the money
  path (edge → payment → wallet → PostgreSQL, ledger transactions and outbox
  rows per payment).
- The same straight to payment_svc, with the claims headers Envoy would set:
  what the edge costs.
- The same from one payer to one payee: every payment locks the same two
  wallet rows (a hot account).

For each payment scenario it also reports the CPU time each component of the
stack spent per successful payment (from /proc), which says where a payment's
cycles go on this machine. After the runs it checks that the ledger agrees
with the payments: the payers' balances fell by exactly the sum of their
SUCCEEDED payments. Results go to
.run/bench/<timestamp>.json; docs/performance.md interprets them.
Every run is bounded (`--duration`) and stops by itself; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devstack.components import REPO_ROOT
from devstack.cpu import component_cpu_seconds
from devstack.ports import LOCAL, Ports
from devstack.stack import Stack

PROTOSET = REPO_ROOT / "gen" / "paymesh.pb"
PAYMENT_AMOUNT = 100  # minor units
DEPOSIT = 1_000_000_000


@dataclass(frozen=True)
class Customer:
    user_id: str
    token: str
    wallet_id: str


def _ghz() -> str:
    found = shutil.which("ghz") or str(REPO_ROOT / ".tools" / "bin" / "ghz")
    if not Path(found).exists():
        sys.exit("ghz is missing: PAYMESH_BENCH_TOOLS=1 bash devstack/bootstrap.sh (make bench does this)")
    return found


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 300:
        sys.exit(
            f"setup failed: {response.request.method} {response.request.url} → {response.status_code} {response.text}"
        )
    body: dict[str, Any] = response.json()
    return body


def _customer(edge: httpx.Client, label: str) -> Customer:
    email = f"bench-{label}-{uuid.uuid4().hex[:8]}@example.com"
    password = uuid.uuid4().hex
    user = _check(
        edge.post(
            "/v1/auth/register",
            json={"email": email, "password": password, "display_name": label, "account_type": "CUSTOMER"},
        )
    )
    token = _check(edge.post("/v1/auth/login", json={"email": email, "password": password}))["access_token"]
    wallet = _check(edge.post("/v1/wallets", json={"currency": "USD"}, headers={"authorization": f"Bearer {token}"}))
    return Customer(user.get("user_id") or user["id"], token, wallet["wallet_id"])


def _deposit(edge: httpx.Client, customer: Customer, amount: int) -> None:
    payment = _check(
        edge.post(
            "/v1/payments",
            json={
                "source": {"card_token": "tok_visa"},
                "destination_wallet_id": customer.wallet_id,
                "amount": {"currency": "USD", "amount": str(amount)},
            },
            headers={"authorization": f"Bearer {customer.token}", "idempotency-key": uuid.uuid4().hex},
        )
    )
    deadline = time.monotonic() + 30
    while payment["state"] != "SUCCEEDED":
        if time.monotonic() > deadline or payment["state"] in ("FAILED", "CANCELED"):
            sys.exit(f"deposit did not succeed: {payment}")
        time.sleep(0.2)
        payment = _check(
            edge.get(f"/v1/payments/{payment['payment_id']}", headers={"authorization": f"Bearer {customer.token}"})
        )


def _posted(edge: httpx.Client, customer: Customer) -> int:
    wallet = _check(
        edge.get(f"/v1/wallets/{customer.wallet_id}", headers={"authorization": f"Bearer {customer.token}"})
    )
    return int(wallet["posted_balance"]["amount"])


def _paid_from(edge: httpx.Client, customer: Customer) -> int:
    """Sum of the customer's SUCCEEDED payments out of their wallet, from payment_svc's own records.

    ghz counts a call cut off at the end of a run as failed although the
    payment may have completed server-side (the saga does not stop when the
    client goes away), so the ledger is compared with the payments, not with ghz.
    """
    time.sleep(2)  # let calls cut off at the end of the last run settle
    total, token = 0, ""
    while True:
        page = _check(
            edge.get(
                "/v1/payments",
                params={"page_size": 100, "page_token": token},
                headers={"authorization": f"Bearer {customer.token}"},
            )
        )
        for payment in page.get("payments", []):
            if payment["state"] == "SUCCEEDED" and payment["source"].get("wallet_id") == customer.wallet_id:
                total += int(payment["amount_captured"]["amount"])
        token = page.get("next_page_token", "")
        if not token:
            return total


def _ghz_command(
    target: str, call: str, data: dict[str, Any], metadata: dict[str, str], concurrency: int, args: argparse.Namespace
) -> list[str]:
    return [
        _ghz(),
        "--insecure",
        f"--protoset={PROTOSET}",
        f"--call={call}",
        f"--data={json.dumps(data)}",
        f"--metadata={json.dumps(metadata)}",
        f"--concurrency={concurrency}",
        f"--connections={min(args.connections, concurrency)}",
        f"--duration={args.duration}s",
        "--timeout=10s",
        "--format=json",
        target,
    ]


def _run_ghz(
    name: str, target: str, call: str, jobs: list[tuple[dict[str, Any], dict[str, str]]], args: argparse.Namespace
) -> dict[str, Any]:
    """Runs one ghz per (data, metadata) job at once, splitting the concurrency, and merges their reports.

    ghz cannot vary metadata per request, so several payers (each with their
    own token) need one ghz each. Merged percentiles are the worst of the parts.
    """
    per_job = max(1, args.concurrency // len(jobs))
    running = [
        subprocess.Popen(
            _ghz_command(target, call, data, metadata, per_job, args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for data, metadata in jobs
    ]
    reports = []
    for process in running:
        out, err = process.communicate(timeout=args.duration + 60)
        if not out.strip():
            sys.exit(f"ghz failed for {name}: {err}")
        reports.append(json.loads(out))
    return _merge(reports)


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    codes: dict[str, int] = {}
    worst: dict[int, float] = {}
    for report in reports:
        for code, count in (report.get("statusCodeDistribution") or {}).items():
            codes[code] = codes.get(code, 0) + count
        for point in report.get("latencyDistribution") or []:
            worst[point["percentage"]] = max(worst.get(point["percentage"], 0), point["latency"])
    return {
        "count": sum(r["count"] for r in reports),
        "rps": sum(r["rps"] for r in reports),
        "statusCodeDistribution": codes,
        "latencyDistribution": [{"percentage": p, "latency": v} for p, v in sorted(worst.items())],
    }


def _summary(name: str, report: dict[str, Any], cpu_seconds: dict[str, float]) -> dict[str, Any]:
    latencies = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    codes = report.get("statusCodeDistribution") or {}
    succeeded = max(1, int(codes.get("OK", 0)))
    return {
        "scenario": name,
        "requests": report["count"],
        "rps": round(report["rps"], 1),
        "p50_ms": round(latencies.get(50, 0.0), 2),
        "p95_ms": round(latencies.get(95, 0.0), 2),
        "p99_ms": round(latencies.get(99, 0.0), 2),
        "codes": codes,
        "cpu_ms_per_call": {
            component: round(seconds * 1000 / succeeded, 1)
            for component, seconds in sorted(cpu_seconds.items(), key=lambda item: -item[1])
            if seconds > 0
        },
    }


def _measured(roots: dict[str, int], run: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
    """Runs a scenario; returns ghz's report and the CPU seconds each component spent meanwhile."""
    before = component_cpu_seconds(roots)
    report = run()
    after = component_cpu_seconds(roots)
    return report, {component: after[component] - before.get(component, 0.0) for component in after}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per scenario (bounded)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--connections", type=int, default=2, help="HTTP/2 connections per ghz")
    parser.add_argument("--payers", type=int, default=4, help="paying customers (each its own wallet)")
    args = parser.parse_args(argv)
    ports: Ports = LOCAL
    edge_addr = f"127.0.0.1:{ports.envoy}"
    with httpx.Client(base_url=f"http://{edge_addr}", timeout=10) as edge:
        payers = [_customer(edge, f"payer{i}") for i in range(args.payers)]
        # Payer i pays payee i: no wallet row is shared between the payers' streams.
        payees = [_customer(edge, f"payee{i}") for i in range(args.payers)]
        for payer in payers:
            _deposit(edge, payer, DEPOSIT)
        before = sum(_posted(edge, payer) for payer in payers)

        def pay(payer: Customer, payee: Customer) -> dict[str, Any]:
            return {
                "source": {"wallet_id": payer.wallet_id},
                "destination_wallet_id": payee.wallet_id,
                "amount": {"currency": "USD", "amount": PAYMENT_AMOUNT},
            }

        def bearer(payer: Customer) -> dict[str, str]:
            return {"authorization": f"Bearer {payer.token}"}

        def claims(payer: Customer) -> dict[str, str]:
            # What Envoy forwards after verifying the token.
            return {"x-paymesh-user-id": payer.user_id, "x-paymesh-role": "CUSTOMER"}

        key = {"idempotency-key": "{{newUUID}}"}
        hot = payers[0]
        scenarios: list[tuple[str, str, str, list[tuple[dict[str, Any], dict[str, str]]]]] = [
            (
                "GetWallet direct to wallet_svc",
                f"127.0.0.1:{ports.wallet}",
                "paymesh.wallet.v1.WalletService.GetWallet",
                [({"wallet_id": hot.wallet_id}, claims(hot))],
            ),
            (
                f"CreatePayment via Envoy, {len(payers)} payers",
                edge_addr,
                "paymesh.payment.v1.PaymentService.CreatePayment",
                [(pay(p, q), {**bearer(p), **key}) for p, q in zip(payers, payees, strict=True)],
            ),
            (
                f"CreatePayment direct, {len(payers)} payers",
                f"127.0.0.1:{ports.payment}",
                "paymesh.payment.v1.PaymentService.CreatePayment",
                [(pay(p, q), {**claims(p), **key}) for p, q in zip(payers, payees, strict=True)],
            ),
            (
                "CreatePayment via Envoy, 1 payer → 1 payee",
                edge_addr,
                "paymesh.payment.v1.PaymentService.CreatePayment",
                [(pay(hot, payees[0]), {**bearer(hot), **key})],
            ),
        ]
        results = []
        roots = Stack.for_profile("local").pids()
        for name, target, call, jobs in scenarios:
            print(f"[bench] {name}: {args.duration}s at {args.concurrency} in flight", flush=True)
            report, cpu = _measured(roots, functools.partial(_run_ghz, name, target, call, jobs, args))
            results.append(_summary(name, report, cpu))

        paid = sum(_paid_from(edge, payer) for payer in payers)
        after = sum(_posted(edge, payer) for payer in payers)
    ledger_ok = before - after == paid
    print(f"\n{'scenario':40} {'reqs':>7} {'rps':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  codes")
    for r in results:
        print(
            f"{r['scenario']:40} {r['requests']:>7} {r['rps']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} "
            f"{r['p99_ms']:>8}  {r['codes']}"
        )
    print("\nCPU ms per successful call, by component:")
    for r in results:
        print(f"  {r['scenario']:40} " + ", ".join(f"{c} {ms}" for c, ms in r["cpu_ms_per_call"].items()))
    print(f"\nledger check: the payers' balances fell by {before - after}; their SUCCEEDED payments total {paid}")
    out_dir = REPO_ROOT / ".run" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results, "ledger_ok": ledger_ok}, indent=2))
    print(f"results: {out}")
    if not ledger_ok:
        sys.exit("ledger check FAILED: the balance does not match the successful payments")


if __name__ == "__main__":
    main()
