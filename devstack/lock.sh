#!/usr/bin/env bash
# Regenerates requirements/*.txt from pyproject.toml: every package pinned, with
# the sha256 of each of its files on PyPI, so that `pip install --require-hashes`
# (devstack/bootstrap.sh, the Dockerfile) installs exactly what was reviewed.
#   dev.txt      the project, its dev tools and the test suite (bootstrap, CI)
#   runtime.txt  the services alone (the image), the same versions as dev.txt
#   bench.txt    dev.txt plus `make bench`'s plot, the same versions as dev.txt
# Existing pins are kept unless pyproject.toml needs others; UPGRADE=1 takes the
# newest versions that pyproject.toml allows.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
compile=("$UV" pip compile --quiet --universal --python-version 3.11 --generate-hashes
  --custom-compile-command "make lock" --index-url https://pypi.org/simple)
[ "${UPGRADE:-0}" = 1 ] && compile+=(--upgrade)
mkdir -p requirements
"${compile[@]}" pyproject.toml --extra dev -o requirements/dev.txt
"${compile[@]}" pyproject.toml -c requirements/dev.txt -o requirements/runtime.txt
"${compile[@]}" pyproject.toml --extra dev --extra bench -c requirements/dev.txt -o requirements/bench.txt
