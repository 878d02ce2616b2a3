"""Notify service settings: environment variables prefixed NOTIFY_."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from paymesh_runtime.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore", frozen=True)
