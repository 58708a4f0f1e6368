"""Builders the composition root (bot.app) calls for the optional scale pieces: the blob store
(local or S3), metrics (counted by the metered path) and the health/metrics server.

Each optional library is imported only when its setting is on, so the embedded default starts
exactly as before (no aiobotocore, no prometheus-client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Bot
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.services.blobs import Blobs, BlobStore

if TYPE_CHECKING:
    from bot.ops.metrics import Metrics
    from bot.ops.server import OpsServer
    from bot.services.s3_blobs import S3BlobStore


def build_blob_store(settings: Settings) -> tuple[Blobs, S3BlobStore | None]:
    """The local directory by default; S3 when BLOB_STORE_URL is s3://, reading blobs stored
    locally before the switch from the directory. The second item is the S3 store to start and
    close, if any."""
    local = BlobStore(settings.files_dir)
    if not settings.BLOB_STORE_URL:
        return local, None
    from bot.services.s3_blobs import S3BlobStore, S3Credentials, S3Location

    s3 = S3BlobStore(
        S3Location.parse(settings.BLOB_STORE_URL),
        S3Credentials(
            endpoint_url=settings.S3_ENDPOINT_URL or None,
            access_key_id=_secret(settings.S3_ACCESS_KEY_ID),
            secret_access_key=_secret(settings.S3_SECRET_ACCESS_KEY),
        ),
        fallback=local,
    )
    return s3, s3


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_metrics(settings: Settings) -> Metrics | None:
    """Metrics only when METRICS_LISTEN is set (prometheus-client is not imported otherwise)."""
    if not settings.METRICS_LISTEN:
        return None
    from bot.ops.metrics import Metrics

    return Metrics()


def build_ops_server(
    settings: Settings,
    metrics: Metrics | None,
    sessionmaker: async_sessionmaker[AsyncSession],
    bot: Bot,
) -> OpsServer | None:
    if metrics is None or not settings.METRICS_LISTEN:
        return None
    from bot.ops.server import Health, OpsServer

    return OpsServer(
        settings.METRICS_LISTEN,
        metrics=metrics,
        health=Health(sessionmaker, bot),
        sessionmaker=sessionmaker,
    )
