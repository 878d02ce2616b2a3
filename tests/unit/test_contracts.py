"""The contracts: generated code is fresh, and the edge exposes exactly the
documented routes while internal methods stay unroutable."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]

# The public route table of the API reference: method -> (verb, path).
EDGE_ROUTES: dict[str, tuple[str, str]] = {
    "paymesh.auth.v1.AuthService.Register": ("post", "/v1/auth/register"),
    "paymesh.auth.v1.AuthService.Login": ("post", "/v1/auth/login"),
    "paymesh.auth.v1.AuthService.Refresh": ("post", "/v1/auth/refresh"),
    "paymesh.auth.v1.AuthService.Logout": ("post", "/v1/auth/logout"),
    "paymesh.auth.v1.AuthService.GetMe": ("get", "/v1/users/me"),
    "paymesh.auth.v1.AuthService.GetJwks": ("get", "/.well-known/jwks.json"),
    "paymesh.wallet.v1.WalletService.CreateWallet": ("post", "/v1/wallets"),
    "paymesh.wallet.v1.WalletService.ListWallets": ("get", "/v1/wallets"),
    "paymesh.wallet.v1.WalletService.GetWallet": ("get", "/v1/wallets/{wallet_id}"),
    "paymesh.wallet.v1.WalletService.ListEntries": ("get", "/v1/wallets/{wallet_id}/entries"),
    "paymesh.wallet.v1.WalletService.FreezeWallet": ("post", "/v1/wallets/{wallet_id}:freeze"),
    "paymesh.wallet.v1.WalletService.UnfreezeWallet": ("post", "/v1/wallets/{wallet_id}:unfreeze"),
    "paymesh.wallet.v1.WalletService.CloseWallet": ("post", "/v1/wallets/{wallet_id}:close"),
    "paymesh.payment.v1.PaymentService.CreatePayment": ("post", "/v1/payments"),
    "paymesh.payment.v1.PaymentService.GetPayment": ("get", "/v1/payments/{payment_id}"),
    "paymesh.payment.v1.PaymentService.ListPayments": ("get", "/v1/payments"),
    "paymesh.payment.v1.PaymentService.CapturePayment": ("post", "/v1/payments/{payment_id}:capture"),
    "paymesh.payment.v1.PaymentService.CancelPayment": ("post", "/v1/payments/{payment_id}:cancel"),
    "paymesh.payment.v1.PaymentService.CreateRefund": ("post", "/v1/payments/{payment_id}/refunds"),
    "paymesh.payment.v1.PaymentService.ListRefunds": ("get", "/v1/payments/{payment_id}/refunds"),
    "paymesh.payment.v1.PaymentService.CreatePayout": ("post", "/v1/payouts"),
    "paymesh.payment.v1.PaymentService.GetPayout": ("get", "/v1/payouts/{payout_id}"),
    "paymesh.payment.v1.PaymentService.HandleProcessorWebhook": (
        "post",
        "/v1/processor-webhooks/{processor}",
    ),
    "paymesh.notify.v1.NotifyService.ListNotifications": ("get", "/v1/notifications"),
    "paymesh.notify.v1.NotifyService.CreateWebhookEndpoint": ("post", "/v1/webhook-endpoints"),
    "paymesh.notify.v1.NotifyService.ListWebhookEndpoints": ("get", "/v1/webhook-endpoints"),
    "paymesh.notify.v1.NotifyService.GetWebhookEndpoint": ("get", "/v1/webhook-endpoints/{endpoint_id}"),
    "paymesh.notify.v1.NotifyService.DeleteWebhookEndpoint": (
        "delete",
        "/v1/webhook-endpoints/{endpoint_id}",
    ),
}

# Methods only the mesh may call: they must carry no route.
INTERNAL_METHODS = {
    "paymesh.wallet.v1.WalletService.CreateHold",
    "paymesh.wallet.v1.WalletService.GetHold",
    "paymesh.wallet.v1.WalletService.CaptureHold",
    "paymesh.wallet.v1.WalletService.ReleaseHold",
    "paymesh.wallet.v1.WalletService.PostTransaction",
    "paymesh.wallet.v1.WalletService.PostTransactions",
}


def _paymesh_methods() -> dict[str, descriptor_pb2.MethodDescriptorProto]:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen/paymesh.pb").read_bytes())
    return {
        f"{file.package}.{service.name}.{method.name}": method
        for file in descriptors.file
        if file.package.startswith("paymesh.")
        for service in file.service
        for method in service.method
    }


def _route(method: descriptor_pb2.MethodDescriptorProto) -> tuple[str, str] | None:
    if not method.options.HasExtension(annotations_pb2.http):
        return None
    rule = method.options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    return (verb, getattr(rule, verb)) if verb else None


def test_every_edge_method_carries_its_documented_route() -> None:
    methods = _paymesh_methods()
    routes = {name: _route(method) for name, method in methods.items()}
    assert {name: routes.get(name) for name in EDGE_ROUTES} == EDGE_ROUTES


def test_internal_methods_carry_no_route_and_nothing_else_is_unrouted() -> None:
    methods = _paymesh_methods()
    unrouted = {name for name, method in methods.items() if _route(method) is None}
    assert unrouted == INTERNAL_METHODS


def test_descriptor_set_carries_error_details_for_the_transcoder() -> None:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen/paymesh.pb").read_bytes())
    names = {file.name for file in descriptors.file}
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto"} <= names
    assert all(file.HasField("source_code_info") for file in descriptors.file if file.name.startswith("paymesh/"))


def test_generated_code_matches_the_contracts(tmp_path: Path) -> None:
    """Regenerates into a copy of the tree and compares with the committed gen/, the client SDK's
    messages and stubs, and docs/openapi.json."""
    copy = tmp_path / "repo"
    for part in ("protos", "devstack"):
        shutil.copytree(ROOT / part, copy / part)
    (copy / "docs").mkdir()
    (copy / ".tools").symlink_to(ROOT / ".tools")  # protoc-gen-openapiv2 (devstack/bootstrap.sh)
    # gen.sh runs `python3` and mypy-protobuf's plugins: this interpreter's, as under make (.venv/bin first).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    generated = subprocess.run(
        ["bash", str(copy / "devstack/gen.sh")], check=False, capture_output=True, text=True, env=env
    )
    assert generated.returncode == 0, generated.stderr[-4000:]
    stale = []
    for tree in ("gen", SDK_PROTO):
        stale += _differences(filecmp.dircmp(ROOT / tree, copy / tree, ignore=["__pycache__"]))
    if (ROOT / "docs/openapi.json").read_bytes() != (copy / "docs/openapi.json").read_bytes():
        stale.append("docs/openapi.json")
    assert not stale, f"generated files are stale, run `make gen`: {stale}"


SDK_PROTO = "clients/python/src/paymesh_client/proto"


def _differences(diff: filecmp.dircmp[str]) -> list[str]:
    found = [*diff.left_only, *diff.right_only, *diff.diff_files]
    for sub in diff.subdirs.values():
        found += _differences(sub)
    return found


@pytest.mark.parametrize("proto", sorted((ROOT / "protos").rglob("*.proto")), ids=lambda p: p.stem)
def test_every_proto_lives_in_a_versioned_package_matching_its_folder(proto: Path) -> None:
    package = next(
        line.split()[1].rstrip(";") for line in proto.read_text().splitlines() if line.startswith("package ")
    )
    assert package == ".".join(proto.parent.relative_to(ROOT / "protos").parts)
    assert package.split(".")[-1] == "v1"


def test_api_reference_is_generated_from_the_current_contracts() -> None:
    from devstack import apidoc

    assert (ROOT / "docs/api.md").read_text() == apidoc.render(), "run `make gen`"
