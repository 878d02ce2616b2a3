"""`make bench`: bounded load on loopback against the running local mesh.

Sets up two customers through the edge (register, login, a USD wallet each, a
card deposit into the payer's wallet), then drives ghz for a fixed time per
scenario and prints throughput and latency percentiles:

- GetWallet through Envoy (gRPC, bearer token): the read path.
- CreatePayment wallet → wallet through Envoy: the money path (edge → payment →
  wallet → PostgreSQL, two ledger transactions and outbox rows per payment).
- CreatePayment straight to payment_svc, with the claims headers Envoy would
  set: the same path without the edge, to see what Envoy costs.

After the runs it checks the ledger agrees with what ghz counted: the payer's
balance fell by exactly (successful payments × amount). Results go to
.run/bench/<timestamp>.json; docs/performance.md interprets them.
Every run is bounded (`--duration`) and stops by itself; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devstack.components import REPO_ROOT
from devstack.ports import LOCAL, Ports

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
    return int(wallet["posted"]["amount"])


def _run_ghz(
    name: str, target: str, call: str, data: dict[str, Any], metadata: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    out = subprocess.run(
        [
            _ghz(),
            "--insecure",
            f"--protoset={PROTOSET}",
            f"--call={call}",
            f"--data={json.dumps(data)}",
            f"--metadata={json.dumps(metadata)}",
            f"--concurrency={args.concurrency}",
            f"--connections={args.connections}",
            f"--duration={args.duration}s",
            "--timeout=10s",
            "--format=json",
            target,
        ],
        capture_output=True,
        text=True,
        timeout=args.duration + 60,
        check=False,
    )
    if not out.stdout.strip():
        sys.exit(f"ghz failed for {name}: {out.stderr}")
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def _summary(name: str, report: dict[str, Any]) -> dict[str, Any]:
    latencies = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    codes = report.get("statusCodeDistribution") or {}
    return {
        "scenario": name,
        "requests": report["count"],
        "rps": round(report["rps"], 1),
        "p50_ms": round(latencies.get(50, 0.0), 2),
        "p95_ms": round(latencies.get(95, 0.0), 2),
        "p99_ms": round(latencies.get(99, 0.0), 2),
        "codes": codes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per scenario (bounded)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--connections", type=int, default=2, help="HTTP/2 connections")
    args = parser.parse_args(argv)
    ports: Ports = LOCAL
    edge_addr = f"127.0.0.1:{ports.envoy}"
    with httpx.Client(base_url=f"http://{edge_addr}", timeout=10) as edge:
        payer = _customer(edge, "payer")
        payee = _customer(edge, "payee")
        _deposit(edge, payer, DEPOSIT)
        before = _posted(edge, payer)

        pay = {
            "source": {"wallet_id": payer.wallet_id},
            "destination_wallet_id": payee.wallet_id,
            "amount": {"currency": "USD", "amount": PAYMENT_AMOUNT},
        }
        bearer = {"authorization": f"Bearer {payer.token}"}
        direct_claims = {"x-paymesh-user-id": payer.user_id, "x-paymesh-role": "CUSTOMER"}
        scenarios: list[tuple[str, str, str, dict[str, Any], dict[str, str]]] = [
            (
                "GetWallet via Envoy",
                edge_addr,
                "paymesh.wallet.v1.WalletService.GetWallet",
                {"wallet_id": payer.wallet_id},
                bearer,
            ),
            (
                "CreatePayment via Envoy",
                edge_addr,
                "paymesh.payment.v1.PaymentService.CreatePayment",
                pay,
                {**bearer, "idempotency-key": "{{newUUID}}"},
            ),
            (
                "CreatePayment direct to payment_svc",
                f"127.0.0.1:{ports.payment}",
                "paymesh.payment.v1.PaymentService.CreatePayment",
                pay,
                {**direct_claims, "idempotency-key": "{{newUUID}}"},
            ),
        ]
        results = []
        for name, target, call, data, metadata in scenarios:
            print(f"[bench] {name}: {args.duration}s at {args.concurrency} in flight", flush=True)
            results.append(_summary(name, _run_ghz(name, target, call, data, metadata, args)))

        paid = sum(r["codes"].get("OK", 0) for r in results if r["scenario"].startswith("CreatePayment"))
        after = _posted(edge, payer)
    ledger_ok = before - after == paid * PAYMENT_AMOUNT
    print(f"\n{'scenario':40} {'reqs':>7} {'rps':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  codes")
    for r in results:
        print(
            f"{r['scenario']:40} {r['requests']:>7} {r['rps']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} "
            f"{r['p99_ms']:>8}  {r['codes']}"
        )
    print(f"\nledger check: payer balance fell by {before - after}; OK payments × amount = {paid * PAYMENT_AMOUNT}")
    out_dir = REPO_ROOT / ".run" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results, "ledger_ok": ledger_ok}, indent=2))
    print(f"results: {out}")
    if not ledger_ok:
        sys.exit("ledger check FAILED: the balance does not match the successful payments")


if __name__ == "__main__":
    main()
