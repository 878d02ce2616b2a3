# One image for the four services: the Deployment picks the service with
# `python -m <name>_svc` (and `python -m <name>_svc migrate` in the hook Job).
# Runs as uid 10001 on a read-only root filesystem (see charts/paymesh).
FROM python:3.11-slim AS deps
WORKDIR /app
# The lock alone first, so that this layer (every dependency) is rebuilt only
# when a pin changes. requirements/runtime.txt (`make lock`) holds the services'
# dependencies at the versions of the dev lock the test suite ran with, each
# file checked against its sha256: the image runs exactly what was tested.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --no-cache-dir --prefix=/install --require-hashes -r requirements/runtime.txt
# Then paymesh itself, with no dependency of its own choosing: all it imports
# is pinned above. A real install (not the sources on PYTHONPATH): the wheel
# carries the migrations and locale files (pyproject.toml's package data).
COPY pyproject.toml ./
COPY gen gen
COPY paymesh_runtime paymesh_runtime
COPY auth_svc auth_svc
COPY wallet_svc wallet_svc
COPY payment_svc payment_svc
COPY notify_svc notify_svc
RUN pip install --no-cache-dir --prefix=/install --no-deps .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 paymesh && useradd --uid 10001 --gid 10001 --no-create-home paymesh
COPY --from=deps /install /usr/local
WORKDIR /app
USER 10001:10001
EXPOSE 50051 50052 50053 50054
ENTRYPOINT []
CMD ["python", "-m", "wallet_svc"]
