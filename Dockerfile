# One image for the four services: the Deployment picks the service with
# `python -m <name>_svc` (and `python -m <name>_svc migrate` in the hook Job).
# Runs as uid 10001 on a read-only root filesystem (see charts/paymesh).
FROM python:3.11-slim AS deps
WORKDIR /app
COPY pyproject.toml README.md ./
# Only the runtime dependencies (not the dev extras), resolved from pyproject.toml.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
      > requirements.txt \
 && pip install --no-cache-dir --prefix=/install -r requirements.txt

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app:/app/gen
RUN groupadd --gid 10001 paymesh && useradd --uid 10001 --gid 10001 --no-create-home paymesh
COPY --from=deps /install /usr/local
WORKDIR /app
COPY gen gen
COPY paymesh_runtime paymesh_runtime
COPY auth_svc auth_svc
COPY wallet_svc wallet_svc
COPY payment_svc payment_svc
COPY notify_svc notify_svc
USER 10001:10001
EXPOSE 50051 50052 50053 50054
ENTRYPOINT []
CMD ["python", "-m", "wallet_svc"]
