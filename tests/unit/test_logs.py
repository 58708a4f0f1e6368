"""Logging: JSON or console, stdlib routed through structlog, secrets and base64 redacted."""

from __future__ import annotations

import base64
import io
import json
import logging

import structlog

from bot.logs import Redactor, configure_logging
from tests.harness import FAKE_ANTHROPIC_KEY, FAKE_BOT_TOKEN, FAKE_GOOGLE_KEY


def _capture(log_format: str) -> io.StringIO:
    out = io.StringIO()
    configure_logging(
        log_format=log_format,
        secrets=[FAKE_BOT_TOKEN, FAKE_ANTHROPIC_KEY, FAKE_GOOGLE_KEY, "db-password-123"],
        stream=out,
    )
    return out


def test_json_lines_with_redaction_of_every_secret_kind() -> None:
    out = _capture("json")
    blob = base64.b64encode(bytes(range(256)) * 4).decode()
    log = structlog.get_logger("test")
    log.info(
        "request_sent",
        url=f"https://api.telegram.org/bot{FAKE_BOT_TOKEN}/getMe",
        key=FAKE_ANTHROPIC_KEY,
        nested={"google": FAKE_GOOGLE_KEY, "data": blob},
        dsn="postgresql+asyncpg://bot:db-password-123@db:5432/bot",
    )
    logging.getLogger("aiogram.dispatcher").warning(
        "Failed to fetch https://api.telegram.org/bot%s/getUpdates",
        "987654321:AAH-unknown_token_shape_abcdefghij",
    )
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "request_sent"
    assert second["logger"] == "aiogram.dispatcher"
    text = out.getvalue()
    for secret in (
        FAKE_BOT_TOKEN,
        FAKE_ANTHROPIC_KEY,
        FAKE_GOOGLE_KEY,
        "db-password-123",
        blob[:300],
    ):
        assert secret not in text
    assert "987654321:AAH-unknown_token_shape" not in text
    assert "/bot[REDACTED]/getMe" in text


def test_exception_tracebacks_are_redacted() -> None:
    out = _capture("json")
    try:
        raise RuntimeError(f"boom with {FAKE_ANTHROPIC_KEY}")
    except RuntimeError:
        structlog.get_logger("test").exception("tool_crashed")
    assert FAKE_ANTHROPIC_KEY not in out.getvalue()
    assert "tool_crashed" in out.getvalue()


def test_console_renderer() -> None:
    out = _capture("console")
    structlog.get_logger("test").info("turn_completed", user_id=5)
    assert "turn_completed" in out.getvalue()
    assert "user_id" in out.getvalue()
    assert not out.getvalue().lstrip().startswith("{")


def test_redactor_keeps_ordinary_text() -> None:
    redactor = Redactor([])
    assert redactor.redact_text("user 12345 said hello") == "user 12345 said hello"
    assert redactor.redact_value(b"\x00" * 10) == "<10 bytes>"


def test_library_chatter_is_debug_and_the_bots_own_lines_stay() -> None:
    """pgserver's and alembic's INFO records (whole initdb/pg_ctl command lines) show only at
    DEBUG, as debug; their warnings and the bot's own INFO lines always show."""
    for level, expect_chatter in (("INFO", False), ("DEBUG", True)):
        out = io.StringIO()
        configure_logging(log_format="json", level=level, stream=out)
        logging.getLogger("pgserver").info("Running commandline: initdb ...")
        logging.getLogger("alembic.runtime.plugins").info("setup plugin x")
        logging.getLogger("pgserver").warning("pg_ctl failed")
        structlog.get_logger("bot.app").info("bot_started")
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        events = {r["event"]: r["level"] for r in records}
        assert events["pg_ctl failed"] == "warning"
        assert events["bot_started"] == "info"
        if expect_chatter:
            assert events["Running commandline: initdb ..."] == "debug"
            assert events["setup plugin x"] == "debug"
        else:
            assert set(events) == {"pg_ctl failed", "bot_started"}
