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

# The client SDK (clients/python): the same protos again, typed by mypy-protobuf
# (.pyi of the messages and of the sync and async gRPC stubs), under
# paymesh_client.proto so that it never shadows a server's `paymesh` package,
# with the google/api and google/rpc files they import, so that the SDK needs
# grpcio and protobuf only. Their serialized descriptors are byte for byte
# those of gen/ and googleapis-common-protos: both load into one process.
SDK=clients/python/src/paymesh_client/proto
BIN=$(python3 -c 'import os, sys; print(os.path.dirname(sys.executable))')
rm -rf "$SDK"
mkdir -p "$SDK"
GOOGLE_PROTOS=(google/api/annotations.proto google/api/http.proto google/api/field_behavior.proto
  google/api/httpbody.proto google/rpc/status.proto google/rpc/error_details.proto)
python3 -m grpc_tools.protoc -Iprotos -I"$GOOGLEAPIS" \
  --plugin=protoc-gen-mypy="$BIN/protoc-gen-mypy" --plugin=protoc-gen-mypy_grpc="$BIN/protoc-gen-mypy_grpc" \
  --python_out="$SDK" --mypy_out=quiet:"$SDK" --grpc_python_out="$SDK" --mypy_grpc_out=quiet:"$SDK" \
  "${PROTOS[@]}" "${GOOGLE_PROTOS[@]}"
python3 -m devstack.sdk_gen "$SDK"

# The edge's OpenAPI document (docs/openapi.json), from the same google.api.http
# annotations Envoy transcodes, by grpc-gateway's protoc-gen-openapiv2
# (devstack/bootstrap.sh installs it); devstack/openapi.py adds the bearer
# token and the Idempotency-Key header that the protos do not describe.
OPENAPI_TMP=$(mktemp -d)
trap 'rm -rf "$OPENAPI_TMP"' EXIT
python3 -m grpc_tools.protoc -Iprotos -I"$GOOGLEAPIS" \
  --plugin=protoc-gen-openapiv2="$PWD/.tools/bin/protoc-gen-openapiv2" --openapiv2_out="$OPENAPI_TMP" \
  --openapiv2_opt=allow_merge=true,merge_file_name=paymesh,json_names_for_fields=false \
  --openapiv2_opt=openapi_naming_strategy=simple,preserve_rpc_order=true,ignore_go_package_option=true \
  "${PROTOS[@]}"
python3 -m devstack.openapi "$OPENAPI_TMP/paymesh.swagger.json" > docs/openapi.json
