"""An embedded Postgres cluster from the `pgserver` wheel, used when DATABASE_URL is unset."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

log = structlog.get_logger(__name__)


class EmbeddedPostgres:
    """Starts (or reuses) a cluster in `data_dir` and stops it on `stop()`."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self._data_dir = data_dir
        self._delete_on_stop = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        # pgserver asks platformdirs for a runtime dir it does not need; without XDG_RUNTIME_DIR
        # (containers, CI, sudo) that warns on every start.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

        self._data_dir.mkdir(parents=True, exist_ok=True)
        mode = "delete" if self._delete_on_stop else "stop"
        get_server: Any = pgserver.get_server  # type: ignore[attr-defined]
        self._server = get_server(self._data_dir, cleanup_mode=mode)
        url = asyncpg_url(self._server.get_uri())
        log.info("embedded_postgres_started", data_dir=str(self._data_dir))
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            log.info("embedded_postgres_stopped")


def asyncpg_url(uri: str) -> str:
    """`postgresql://postgres:@/postgres?host=/sock` -> SQLAlchemy asyncpg URL."""
    parts = urlsplit(uri)
    host = parse_qs(parts.query).get("host", [""])[0]
    user = parts.username or "postgres"
    database = parts.path.lstrip("/") or "postgres"
    if host.startswith("/"):
        return f"postgresql+asyncpg://{user}@/{database}?host={host}"
    netloc = parts.netloc
    return f"postgresql+asyncpg://{netloc}/{database}"
