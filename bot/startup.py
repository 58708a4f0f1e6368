"""Start-up's first contact with Telegram: getMe, retried while Telegram cannot be reached; a
rejected token or an unreachable server is a StartupError with one line for the operator."""

from __future__ import annotations

import asyncio

import structlog
from aiogram import Bot
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import User

from bot.config import Settings
from bot.secret_files import secret_source

log = structlog.get_logger(__name__)

# How long an unreachable Telegram is retried, and the wait for one getMe.
CONNECT_PATIENCE_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


async def connect_to_telegram(
    bot: Bot, settings: Settings, *, patience: float = CONNECT_PATIENCE_SECONDS
) -> User:
    """getMe, retried for at most `patience` seconds while Telegram cannot be reached; a rejected
    token or an unreachable server becomes a StartupError with one line for the operator."""
    where = settings.TELEGRAM_API_URL or "https://api.telegram.org"
    token_source = secret_source("TELEGRAM_BOT_TOKEN")
    reason = f"no answer within {patience:g} s"
    delay = 0.5
    try:
        async with asyncio.timeout(patience):
            while True:
                try:
                    return await bot.get_me(request_timeout=CONNECT_TIMEOUT_SECONDS)
                except (TelegramNetworkError, TelegramServerError, ClientDecodeError) as exc:
                    reason = _reason(exc)
                    log.warning("telegram_unreachable", error=reason, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)
    except TelegramUnauthorizedError:
        raise StartupError(
            "Telegram rejected the bot token (401 Unauthorized): check the token in "
            f"{token_source}; it must be the one @BotFather gave (it may have been revoked)."
        ) from None
    except TelegramNotFound:
        raise StartupError(
            f"The Bot API server at {where} answered 404 to getMe: check the token in "
            f"{token_source}, and TELEGRAM_API_URL if it is set."
        ) from None
    except TimeoutError:
        raise StartupError(
            f"Cannot reach Telegram at {where} ({reason}): check the network, DNS and any "
            "proxy, and TELEGRAM_API_URL if it is set."
        ) from None
    except TelegramAPIError as exc:
        raise StartupError(
            f"The Bot API server at {where} gave an answer to getMe that is not Telegram's "
            f"({_reason(exc)}): check TELEGRAM_API_URL if it is set."
        ) from None


def _reason(exc: Exception) -> str:
    """A short reason without the traceback: the innermost message, on one line."""
    text = str(exc.__cause__ or exc) if isinstance(exc, TelegramNetworkError) else str(exc)
    text = text.removeprefix("HTTP Client says - ").removeprefix("Telegram server says - ")
    return " ".join(text.split())[:200] or type(exc).__name__
