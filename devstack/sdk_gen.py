"""Finishes the client SDK's generated code (devstack/gen.sh): `python -m devstack.sdk_gen DIR`.

protoc writes absolute imports of the proto packages (`from paymesh.wallet.v1
import wallet_pb2`, `from google.api import annotations_pb2`); in the SDK they
live under `paymesh_client.proto`, so each is rewritten to point there.
`google.protobuf` stays: it is the protobuf runtime's own. The gRPC modules of
files without a service hold nothing and are dropped, and every folder becomes
a regular package, so that setuptools ships it and mypy finds it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGE = "paymesh_client.proto"
# The proto packages generated into the SDK, as Python packages.
_IMPORT = re.compile(r"^(\s*)(from|import) (paymesh|google\.api|google\.rpc)([ .])", re.MULTILINE)


def rewrite_imports(source: str) -> str:
    """The same module with its proto packages' imports moved under PACKAGE."""
    return _IMPORT.sub(rf"\1\2 {PACKAGE}.\3\4", source)


def has_service(grpc_module: Path) -> bool:
    return "Stub" in grpc_module.read_text()


def finish(root: Path) -> None:
    for path in sorted(root.rglob("*_pb2_grpc.py")):
        if not has_service(path):
            path.unlink()
            path.with_suffix(".pyi").unlink(missing_ok=True)
    for path in sorted([*root.rglob("*.py"), *root.rglob("*.pyi")]):
        path.write_text(rewrite_imports(path.read_text()))
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()


if __name__ == "__main__":
    finish(Path(sys.argv[1]))
