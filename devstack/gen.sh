#!/usr/bin/env bash
# Generates gen/ from protos/: Python messages, .pyi type stubs, gRPC stubs and
# the descriptor set Envoy's grpc_json_transcoder loads. google/api and
# google/rpc come from the googleapis-common-protos wheel's .proto files.
set -euo pipefail
cd "$(dirname "$0")/.."
GOOGLEAPIS=$(python3 -c 'import google.api.annotations_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parents[2])')
OUT=gen
rm -rf "$OUT/paymesh" "$OUT/paymesh.pb"
mkdir -p "$OUT"
mapfile -t PROTOS < <(cd protos && find paymesh -name '*.proto' | LC_ALL=C sort)
python3 -m grpc_tools.protoc -Iprotos -I"$GOOGLEAPIS" \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" "${PROTOS[@]}"
# The transcoder needs every dependency in the set, including google/rpc's
# status and error_details so that ErrorInfo details render as JSON.
python3 -m grpc_tools.protoc -Iprotos -I"$GOOGLEAPIS" \
  --include_imports --include_source_info --descriptor_set_out="$OUT/paymesh.pb" \
  "${PROTOS[@]}" google/rpc/status.proto google/rpc/error_details.proto
# Every generated folder is a regular package so that mypy and setuptools see it.
find "$OUT/paymesh" -type d -exec sh -c 'touch "$1/__init__.py"' _ {} \;
