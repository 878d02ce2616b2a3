#!/usr/bin/env bash
# buf lint and buf breaking, offline. google/api and google/rpc come from the
# googleapis-common-protos wheel, copied into third_party/googleapis.
#   devstack/buf.sh lint
#   devstack/buf.sh breaking [git-ref]   (default: main; skipped when the ref
#                                          has no contracts yet)
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=node_modules/.bin/buf

vendor_googleapis() {  # dest
  local src dest=$1
  src=$(python3 -c 'import google.api.annotations_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parents[2])')
  rm -rf "$dest" && mkdir -p "$dest/google/api" "$dest/google/rpc"
  cp "$src"/google/api/{annotations,http,httpbody,field_behavior}.proto "$dest/google/api/"
  cp "$src"/google/rpc/{status,error_details}.proto "$dest/google/rpc/"
}

case "${1:-lint}" in
  lint)
    vendor_googleapis third_party/googleapis
    "$BUF" lint
    "$BUF" format --diff --exit-code protos
    ;;
  breaking)
    ref=${2:-main}
    if ! git cat-file -e "$ref:buf.yaml" 2>/dev/null; then
      echo "buf breaking: $ref has no contracts yet; nothing to compare"; exit 0
    fi
    vendor_googleapis third_party/googleapis
    base=$(mktemp -d); trap 'rm -rf "$base"' EXIT
    git archive "$ref" protos buf.yaml | tar -x -C "$base"
    vendor_googleapis "$base/third_party/googleapis"
    "$BUF" build "$base" -o "$base/against.binpb"
    # Compare image to image: the workspace has two modules (ours and the
    # vendored googleapis), so both sides are built the same way first.
    "$BUF" build -o "$base/current.binpb"
    "$BUF" breaking "$base/current.binpb" --against "$base/against.binpb" --config buf.yaml
    echo "buf breaking: no breaking change against $ref"
    ;;
  *) echo "usage: $0 lint|breaking [ref]" >&2; exit 2 ;;
esac
