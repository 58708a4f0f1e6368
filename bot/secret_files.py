"""Secrets from files (Docker secrets): `<SECRETS_DIR>/<name>` or `<name>.txt`, lower-case names;
and where a secret's value came from, for the operator's messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

SECRET_NAMES = ("TELEGRAM_BOT_TOKEN", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY")
# Secrets that only some configurations need (design section 3).
OPTIONAL_SECRET_NAMES = (
    "DATABASE_PASSWORD",
    "OPENAI_API_KEY",
    "WEBHOOK_SECRET",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
)
DEFAULT_SECRETS_DIR = Path("secrets")


class SecretFilesSource(PydanticBaseSettingsSource):
    """Reads each secret from `<dir>/<name>` or `<dir>/<name>.txt` (lower-case names)."""

    def __init__(self, settings_cls: type[BaseSettings], secrets_dir: Path) -> None:
        super().__init__(settings_cls)
        self._dir = secrets_dir

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for candidate in (field_name.lower(), f"{field_name.lower()}.txt"):
            path = self._dir / candidate
            if path.is_file():
                return path.read_text(encoding="utf-8").strip(), field_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in (*SECRET_NAMES, *OPTIONAL_SECRET_NAMES):
            if name not in self.settings_cls.model_fields:
                continue
            value, _, _ = self.get_field_value(self.settings_cls.model_fields[name], name)
            if value:
                values[name] = value
        return values


def missing_secret_message(name: str) -> str:
    return (
        f"Missing secret {name}: put it in the file {secrets_dir()}/{name.lower()} "
        f"(or {name.lower()}.txt), or set the environment variable {name}."
    )


def secrets_dir() -> str:
    return os.environ.get("SECRETS_DIR") or str(DEFAULT_SECRETS_DIR)


def secret_source(name: str) -> str:
    """Where a secret's value came from, the way Settings looks (environment first, then files)."""
    if os.environ.get(name):
        return f"the environment variable {name}"
    for candidate in (name.lower(), f"{name.lower()}.txt"):
        path = Path(secrets_dir()) / candidate
        if path.is_file():
            return f"the file {path}"
    return f"{name} (not set)"
