# paymesh: every developer and CI command. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# The project's virtual environment (devstack/bootstrap.sh creates it): its python,
# ruff, mypy, lint-imports and pytest come first on the PATH of every target.
PY ?= $(CURDIR)/.venv/bin/python
PROFILE ?= local
export PATH := $(CURDIR)/.venv/bin:$(CURDIR)/.tools/bin:$(PATH)

.PHONY: help deps gen gen-check lint buf-lint buf-breaking up down status logs test test-unit test-fast k8s-validate bench chaos lock clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: ## install every prerequisite from the registries (idempotent)
	@bash devstack/bootstrap.sh

gen: deps ## regenerate gen/ (Python stubs, .pyi, descriptor set) from protos/
	@bash devstack/gen.sh
	@cp gen/paymesh.pb charts/paymesh/files/paymesh.pb
	@$(PY) -m devstack.envoy_config --helm > charts/paymesh/files/envoy.yaml
	@$(PY) -m devstack.apidoc > docs/api.md

gen-check: gen ## fail if gen/ or the chart's generated files differ from what is committed
	@git diff --exit-code --stat -- gen charts/paymesh/files docs/api.md docs/openapi.json clients/python/src/paymesh_client/proto \
	  || { echo "gen/ is stale: run 'make gen' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen charts/paymesh/files docs/openapi.json clients/python/src/paymesh_client/proto)" \
	  || { git status --porcelain -- gen charts/paymesh/files docs/openapi.json clients/python/src/paymesh_client/proto; echo "untracked generated files: run 'make gen' and commit"; exit 1; }

buf-lint: deps ## buf lint (STANDARD) and buf format
	@bash devstack/buf.sh lint

buf-breaking: deps ## buf breaking against main (FILE rules)
	@bash devstack/buf.sh breaking $${BUF_AGAINST:-main}

lint: deps buf-lint ## ruff, mypy, import contracts, buf
	@ruff check .
	@ruff format --check .
	@mypy
	@lint-imports

k8s-validate: deps ## helm lint + render + kubeconform (offline schemas) for the chart and ArgoCD
	@$(PY) -m devstack.k8s_validate

up: deps ## start the whole mesh locally (PostgreSQL, Redis, Kafka, services, Envoy on :8080, Jaeger, Prometheus)
	@$(PY) -m devstack up --profile $(PROFILE)

down: ## stop everything `make up` started
	@$(PY) -m devstack down --profile $(PROFILE)

status: ## health of every component
	@$(PY) -m devstack status --profile $(PROFILE)

logs: ## the logs' last lines (NAME=payment for one, LINES=200, FOLLOW=1 to follow as tail -f does)
	@$(PY) -m devstack logs --profile $(PROFILE) $(NAME) $(if $(LINES),--lines $(LINES)) $(if $(filter 1 yes true,$(FOLLOW)),--follow)

test-unit: deps ## fast tests without I/O
	@$(PY) -m pytest -q tests/unit

test: deps gen-check lint buf-breaking ## the whole suite: checks, unit, integration and end-to-end tests on real components
	@$(PY) -m pytest -q -p no:cacheprovider --durations=15

bench: ## the money path under bounded load vs pgbench's ceiling, then the ledger check (BENCH_ARGS=--help); docs/performance.md
	@PAYMESH_BENCH_TOOLS=1 bash devstack/bootstrap.sh
	@$(PY) -m devstack up --profile local
	@$(PY) -m devstack.bench $(BENCH_ARGS)

chaos: deps ## seeded faults vs money safety on its own stack, exit 1 on a violation (SEED=1, CHAOS_ARGS=--help); docs/reliability.md
	@$(PY) -m devstack.chaos --seed $(or $(SEED),1) $(CHAOS_ARGS)

lock: deps ## pin every Python dependency with hashes into requirements/*.txt (UPGRADE=1 for newest)
	bash devstack/lock.sh

clean: down ## remove run state (keeps installed tools)
	@rm -rf .run
