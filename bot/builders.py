"""Builders of the clients and feature services the composition root (bot.app) wires together:
Telegram's Bot with its pacing, the image provider IMAGE_PROVIDER names, the transcriber, the
attachment intake, payments and the tool confirmation."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from typing import TYPE_CHECKING

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings, usd_to_micros
from bot.providers.anthropic import ClaudeGateway
from bot.providers.gemini import MAX_REFERENCES as GEMINI_MAX_REFERENCES
from bot.providers.gemini import create_gemini_client
from bot.providers.gemini_audio import GeminiTranscriber
from bot.providers.image_gateway import RetryPolicy, WorkerImageGateway
from bot.providers.image_worker import ImageWorker, WorkerSetup
from bot.providers.images import ImageGateway
from bot.providers.openai_images import MAX_REFERENCES as OPENAI_MAX_REFERENCES
from bot.services.blobs import Blobs
from bot.services.inputs import ImageIntake, InputIntake, InputsConfig
from bot.services.media import ImageLimits, ImageProcessor
from bot.services.metered import MeteredCalls
from bot.services.payments import PaymentsConfig, PaymentService
from bot.services.pdf_worker import PdfChecker
from bot.services.pricing import PriceTable
from bot.telegram.confirm import TelegramToolConfirmation
from bot.telegram.flood import (
    PACING_HEADROOM,
    OutgoingPacer,
    PacingMiddleware,
    RetryAfterMiddleware,
)
from bot.telegram.session import BotSession

if TYPE_CHECKING:
    from bot.ops.metrics import Metrics


def secret_values(settings: Settings) -> list[str]:
    """Every secret the logs must never show."""
    values = [
        settings.TELEGRAM_BOT_TOKEN.get_secret_value(),
        settings.ANTHROPIC_API_KEY.get_secret_value(),
        settings.GOOGLE_API_KEY.get_secret_value(),
    ]
    for optional in (
        settings.WEBHOOK_SECRET,
        settings.S3_ACCESS_KEY_ID,
        settings.S3_SECRET_ACCESS_KEY,
        settings.OPENAI_API_KEY,
    ):
        if optional is not None and optional.get_secret_value():
            values.append(optional.get_secret_value())
    url = settings.database_url()
    if url is not None and url.password:
        values.append(str(url.password))
    return values


def build_pacer(settings: Settings) -> OutgoingPacer:
    return OutgoingPacer(
        per_chat_rate=settings.TELEGRAM_CHAT_RATE * PACING_HEADROOM,
        global_rate=settings.TELEGRAM_GLOBAL_RATE * PACING_HEADROOM,
        global_burst=max(1, int(settings.TELEGRAM_GLOBAL_RATE)),
    )


def create_bot(
    settings: Settings, metrics: Metrics | None = None, pacer: OutgoingPacer | None = None
) -> Bot:
    if settings.TELEGRAM_API_URL:
        session = BotSession(api=TelegramAPIServer.from_base(settings.TELEGRAM_API_URL))
    else:
        session = BotSession()
    bot = Bot(
        settings.TELEGRAM_BOT_TOKEN.get_secret_value(),
        session=session,
        default=DefaultBotProperties(link_preview_is_disabled=True),
    )
    on_retry_after = metrics.telegram_retry_after if metrics is not None else None
    bot.session.middleware(
        RetryAfterMiddleware(
            max_wait=settings.TELEGRAM_RETRY_MAX_SECONDS, on_retry_after=on_retry_after
        )
    )
    bot.session.middleware(PacingMiddleware(pacer or build_pacer(settings)))
    return bot


def build_image_gateway(settings: Settings, slots: asyncio.Semaphore) -> ImageGateway:
    """The image provider IMAGE_PROVIDER names, its calls made in the image worker process
    (started with the first image)."""
    if settings.IMAGE_PROVIDER == "openai":
        assert settings.OPENAI_API_KEY is not None  # load_settings requires it
        setup = WorkerSetup(
            provider="openai",
            api_key=settings.OPENAI_API_KEY.get_secret_value(),
            base_url=settings.OPENAI_BASE_URL,
            timeout_seconds=settings.OPENAI_TIMEOUT_SECONDS,
            model=settings.IMAGE_MODEL,
            size_mode=settings.OPENAI_IMAGE_SIZES,
        )
        retries = RetryPolicy(settings.OPENAI_RETRY_ATTEMPTS, settings.OPENAI_RETRY_INITIAL_DELAY)
        max_references = OPENAI_MAX_REFERENCES
    else:
        setup = WorkerSetup(
            provider="google",
            api_key=settings.GOOGLE_API_KEY.get_secret_value(),
            base_url=settings.GEMINI_BASE_URL,
            timeout_seconds=settings.GEMINI_TIMEOUT_SECONDS,
            model=settings.IMAGE_MODEL,
        )
        retries = RetryPolicy(settings.GEMINI_RETRY_ATTEMPTS, settings.GEMINI_RETRY_INITIAL_DELAY)
        max_references = GEMINI_MAX_REFERENCES
    return WorkerImageGateway(
        ImageWorker(setup),
        provider=setup.provider,
        model=setup.model,
        max_references=max_references,
        retries=retries,
        concurrency=slots,
    )


def build_transcriber(settings: Settings, slots: asyncio.Semaphore) -> GeminiTranscriber:
    connect = functools.partial(
        create_gemini_client,
        settings.GOOGLE_API_KEY.get_secret_value(),
        settings.GEMINI_BASE_URL,
        settings.GEMINI_TIMEOUT_SECONDS,
    )
    return GeminiTranscriber(connect, model=settings.TRANSCRIBE_MODEL, concurrency=slots)


def build_intake(
    settings: Settings,
    *,
    images: ImageIntake,
    sessionmaker: async_sessionmaker[AsyncSession],
    bot: Bot,
    claude: ClaudeGateway,
    blobs: Blobs,
    metered: MeteredCalls,
    prices: PriceTable,
    transcriber: GeminiTranscriber,
    pdf_checker: PdfChecker,
) -> InputIntake:
    """Every attachment: images to the image intake; PDFs, text files, voice and audio here."""
    return InputIntake(
        images=images,
        sessionmaker=sessionmaker,
        bot=bot,
        claude=claude,
        blobs=blobs,
        metered=metered,
        prices=prices,
        transcriber=transcriber,
        pdf_checker=pdf_checker,
        config=InputsConfig(
            transcribe_model=settings.TRANSCRIBE_MODEL,
            max_audio_seconds=settings.MAX_AUDIO_SECONDS,
            retention=timedelta(days=settings.FILE_RETENTION_DAYS),
        ),
    )


def build_payments(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> PaymentService:
    return PaymentService(sessionmaker, PaymentsConfig.from_settings(settings))


def build_confirmations(
    settings: Settings, bot: Bot, prices: PriceTable, metered: MeteredCalls
) -> TelegramToolConfirmation:
    """Confirm / Cancel before a tool call whose list price is above CONFIRM_ABOVE_USD."""
    return TelegramToolConfirmation(
        bot,
        prices=prices,
        billing=metered.ledger,
        image_model=settings.IMAGE_MODEL,
        threshold_micros=usd_to_micros(settings.CONFIRM_ABOVE_USD),
        timeout=settings.CONFIRM_TIMEOUT_SECONDS,
    )


def upload_processor(settings: Settings) -> ImageProcessor:
    limits = ImageLimits.from_megabytes(settings.MAX_UPLOAD_MB, settings.MAX_IMAGE_PIXELS)
    return ImageProcessor(limits)
