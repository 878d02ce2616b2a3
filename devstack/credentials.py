"""The secrets of one run dir, generated once and kept in ``<run-dir>/secrets.env``.

The file (mode 600) is the only place the values live: nothing here prints
them, and ``Secrets`` hides them from repr() so tracebacks do not leak them.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, fields
from pathlib import Path

SECRETS_FILE = "secrets.env"


def _password() -> str:
    # Hex only: safe unquoted in URLs, redis.conf and SQL string literals.
    return secrets.token_hex(24)


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def _hmac_key() -> str:
    return secrets.token_urlsafe(48)


@dataclass(frozen=True, repr=False)
class Secrets:
    postgres_password: str
    redis_password: str
    service_token_secret: str
    key_encryption_key: str
    processor_webhook_secret: str
    notify_secret_encryption_key: str
    # <P>_PAGE_TOKEN_KEY of wallet, payment and notify (paymesh_runtime.pagination).
    page_token_key: str

    def __repr__(self) -> str:
        return "Secrets(<hidden; see secrets.env>)"


_GENERATORS = {
    "postgres_password": _password,
    "redis_password": _password,
    "service_token_secret": lambda: secrets.token_urlsafe(48),
    "key_encryption_key": _fernet_key,
    "processor_webhook_secret": _webhook_secret,
    "notify_secret_encryption_key": _fernet_key,
    "page_token_key": _hmac_key,
}


def _env_key(field_name: str) -> str:
    return f"PAYMESH_{field_name.upper()}"


def _parse(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def _write(path: Path, values: dict[str, str]) -> None:
    body = "# paymesh devstack secrets for this run dir; generated once, never printed.\n"
    body += "".join(f"{key}={value}\n" for key, value in values.items())
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # Created 600 from the start: the values never sit in a world-readable file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    os.replace(tmp, path)


def load_or_create(run_dir: Path) -> Secrets:
    """Read ``secrets.env``, generating (and saving) any value it lacks."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SECRETS_FILE
    stored = _parse(path) if path.exists() else {}
    values: dict[str, str] = {}
    for field in fields(Secrets):
        key = _env_key(field.name)
        values[key] = stored.get(key) or _GENERATORS[field.name]()
    if values != stored:
        _write(path, {**stored, **values})
    os.chmod(path, 0o600)
    return Secrets(**{field.name: values[_env_key(field.name)] for field in fields(Secrets)})
