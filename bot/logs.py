"""structlog setup: console on a TTY, JSON otherwise, stdlib logs routed through it, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

_BOT_TOKEN = re.compile(r"(?<![A-Za-z0-9])(bot)?\d{5,}:[A-Za-z0-9_-]{20,}")
_ANTHROPIC_KEY = re.compile(r"sk-ant-[A-Za-z0-9_-]{8,}")
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_-]{20,}")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{200,}={0,2}")
_DSN_PASSWORD = re.compile(r"(postgres(?:ql)?(?:\+asyncpg)?://[^:/@\s]+:)([^@\s]+)(@)")


class Redactor:
    """Removes secrets and long base64 runs from every string in a log event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact_text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _BOT_TOKEN.sub(lambda m: (m.group(1) or "") + REDACTED, text)
        text = _ANTHROPIC_KEY.sub(REDACTED, text)
        text = _GOOGLE_KEY.sub(REDACTED, text)
        text = _DSN_PASSWORD.sub(r"\1" + REDACTED + r"\3", text)
        return _BASE64_RUN.sub("[BASE64 REDACTED]", text)

    def redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, bytes | bytearray):
            return f"<{len(value)} bytes>"
        if isinstance(value, Mapping):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(v) for v in value]
        return value

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        return {key: self.redact_value(value) for key, value in event_dict.items()}


# Libraries whose INFO records are their own chatter (pgserver's whole initdb/pg_ctl command lines
# and outputs, alembic's plugin set-up): shown as DEBUG, so a normal start shows the bot's lines.
QUIET_LIBRARIES = ("pgserver", "alembic")


class DemoteLibraryInfo(logging.Filter):
    """INFO records from `QUIET_LIBRARIES` become DEBUG, shown only when the level allows."""

    def __init__(self, level: int, prefixes: tuple[str, ...] = QUIET_LIBRARIES) -> None:
        super().__init__()
        self._level = level
        self._prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.startswith(self._prefixes):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self._level <= logging.DEBUG
        return True


class _RedactRendered:
    """Final safety net on the rendered line (tracebacks are rendered late)."""

    def __init__(self, renderer: Processor, redactor: Redactor) -> None:
        self._renderer = renderer
        self._redactor = redactor

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> Any:
        rendered = self._renderer(logger, name, event_dict)
        if isinstance(rendered, str):
            return self._redactor.redact_text(rendered)
        return rendered


def configure_logging(
    *,
    log_format: str | None,
    level: str = "INFO",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the stdlib root logger once, at start-up."""
    out = stream or sys.stderr
    fmt = log_format or ("console" if out.isatty() else "json")
    redactor = Redactor(secrets)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        tail: list[Processor] = [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        tail = []
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tail,
            redactor,
            _RedactRendered(renderer, redactor),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(DemoteLibraryInfo(logging.getLevelNamesMapping()[level]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "httpx", "httpcore", "httpx2", "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)


def bind_context(values: MutableMapping[str, Any]) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**values)
