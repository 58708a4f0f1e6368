"""The composition root: every client, service and task is built here, and closed here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from aiogram import Bot, Dispatcher
from aiogram.utils.i18n import I18n
from anthropic import AsyncAnthropic
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.builders import (
    build_confirmations,
    build_image_gateway,
    build_pacer,
    build_payments,
    build_transcriber,
    create_bot,
    upload_processor,
)
from bot.config import Settings, usd_to_micros
from bot.db.session import create_sessionmaker
from bot.health import heartbeat_path
from bot.i18n import create_i18n
from bot.ops.wiring import build_blob_store, build_metrics, build_ops_server
from bot.providers.anthropic import ClaudeGateway, create_anthropic_client
from bot.providers.gemini_audio import GeminiTranscriber
from bot.providers.images import ImageGateway
from bot.services.blobs import Blobs
from bot.services.cancellation import RunningTurns
from bot.services.controls import ControlsService
from bot.services.conversations import ConversationStore
from bot.services.files import FilesConfig, FileService
from bot.services.inbox import Inbox
from bot.services.ledger import Ledger
from bot.services.metered import MeteredCalls
from bot.services.payments import PaymentService
from bot.services.pdf_worker import PdfChecker
from bot.services.price_file import load_price_table
from bot.services.pricing import PriceTable
from bot.services.users import UserService
from bot.telegram.flood import OutgoingPacer
from bot.telegram.poller import Poller
from bot.telegram.response_models import pin_response_models
from bot.telegram.stars import TelegramStars
from bot.telegram.turns import TurnScheduler
from bot.wiring import attach_cluster, build_agent_loop, build_chat, build_telegram_dispatcher

if TYPE_CHECKING:
    from bot.ops.cluster import Cluster
    from bot.ops.metrics import Metrics
    from bot.ops.server import OpsServer
    from bot.services.s3_blobs import S3BlobStore

log = structlog.get_logger(__name__)


@dataclass
class Application:
    """Everything the running bot holds, so shutdown can close it in order."""

    settings: Settings
    bot: Bot
    anthropic: AsyncAnthropic
    images: ImageGateway
    files: FileService
    transcriber: GeminiTranscriber
    pdf_checker: PdfChecker
    sessionmaker: async_sessionmaker[AsyncSession]
    billing: Ledger
    inbox: Inbox
    scheduler: TurnScheduler
    dispatcher: Dispatcher
    poller: Poller
    payments: PaymentService
    stars_api: TelegramStars
    i18n: I18n
    users: UserService
    s3_blobs: S3BlobStore | None = None
    metrics: Metrics | None = None
    ops_server: OpsServer | None = None
    cluster: Cluster | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    response_models: list[type[Any]] = field(default_factory=pin_response_models)


@dataclass(frozen=True)
class Core:
    """The database side: sessions, prices, the ledger, the metered path (counted by the metrics
    when they are on), the inbox, the conversations, the users and their own controls."""

    sessionmaker: async_sessionmaker[AsyncSession]
    prices: PriceTable
    ledger: Ledger
    metered: MeteredCalls
    inbox: Inbox
    conversations: ConversationStore
    users: UserService
    metrics: Metrics | None
    controls: ControlsService


@dataclass(frozen=True)
class Clients:
    """The outside world: Telegram, Claude, the image model and the transcriber, sharing
    provider slots; where blobs are kept; and the PDF checker's child process."""

    bot: Bot
    pacer: OutgoingPacer
    anthropic: AsyncAnthropic
    claude: ClaudeGateway
    images: ImageGateway
    transcriber: GeminiTranscriber
    pdf_checker: PdfChecker
    provider_slots: asyncio.Semaphore
    blobs: Blobs
    s3_blobs: S3BlobStore | None


def build_application(
    settings: Settings, engine: AsyncEngine, prices: PriceTable | None = None
) -> Application:
    core = build_core(settings, engine, prices)
    clients = build_clients(settings, core.metrics)
    files = build_file_service(settings, core, clients)
    confirmations = build_confirmations(settings, clients.bot, core.prices, core.metered)
    loop = build_agent_loop(settings, core, clients, files, confirmations)
    i18n, running = create_i18n(), RunningTurns()
    chat = build_chat(settings, core, clients, files, loop, i18n=i18n, running=running)
    # Twice the provider slots: turns busy with the database or Telegram leave room for those
    # waiting on a provider; more would wait inside the turn, holding its memory.
    scheduler = TurnScheduler(max_running=2 * settings.MAX_CONCURRENT_PROVIDER_CALLS)
    payments, stars_api = build_payments(settings, core.sessionmaker), TelegramStars(clients.bot)
    dp = build_telegram_dispatcher(
        settings,
        core,
        clients,
        chat=chat,
        scheduler=scheduler,
        extras={
            "confirmations": confirmations,
            "payments": payments,
            "stars_api": stars_api,
            "running": running,
            "i18n": i18n,
        },
    )
    app = Application(
        settings=settings,
        bot=clients.bot,
        anthropic=clients.anthropic,
        images=clients.images,
        files=files,
        transcriber=clients.transcriber,
        pdf_checker=clients.pdf_checker,
        sessionmaker=core.sessionmaker,
        billing=core.ledger,
        inbox=core.inbox,
        scheduler=scheduler,
        dispatcher=dp,
        poller=build_poller(settings, clients.bot, dp, core.inbox),
        payments=payments,
        stars_api=stars_api,
        i18n=i18n,
        users=core.users,
        s3_blobs=clients.s3_blobs,
        metrics=core.metrics,
        ops_server=build_ops_server(settings, core.metrics, core.sessionmaker, clients.bot),
    )
    if settings.BOT_MODE == "webhook":
        app.cluster = attach_cluster(app, engine, clients.pacer, chat)
    return app


def build_core(settings: Settings, engine: AsyncEngine, prices: PriceTable | None) -> Core:
    sessionmaker = create_sessionmaker(engine)
    prices = prices or load_price_table(settings)
    ledger = Ledger(
        sessionmaker,
        markup=settings.PRICE_MARKUP,
        hold_ttl=timedelta(seconds=settings.HOLD_TTL_SECONDS),
    )
    metrics = build_metrics(settings)
    metered = MeteredCalls(ledger, metrics.call_recorded if metrics is not None else None)
    conversations = ConversationStore(
        sessionmaker, recent_files_limit=settings.RECENT_FILES_IN_CONTEXT
    )
    users = UserService(sessionmaker, ledger, starter_micros=settings.starter_balance_micros)
    inbox = Inbox(sessionmaker)
    controls = ControlsService(
        sessionmaker, low_balance_micros=usd_to_micros(settings.LOW_BALANCE_USD)
    )
    return Core(
        sessionmaker, prices, ledger, metered, inbox, conversations, users, metrics, controls
    )


def build_clients(settings: Settings, metrics: Metrics | None) -> Clients:
    anthropic = create_anthropic_client(
        settings.ANTHROPIC_API_KEY.get_secret_value(),
        settings.ANTHROPIC_BASE_URL,
        settings.ANTHROPIC_TIMEOUT_SECONDS,
    )
    slots = asyncio.Semaphore(settings.MAX_CONCURRENT_PROVIDER_CALLS)
    claude = ClaudeGateway(anthropic, max_retries=settings.ANTHROPIC_MAX_RETRIES, concurrency=slots)
    pacer = build_pacer(settings)
    blobs, s3_blobs = build_blob_store(settings)
    return Clients(
        bot=create_bot(settings, metrics, pacer),
        pacer=pacer,
        anthropic=anthropic,
        claude=claude,
        images=build_image_gateway(settings, slots),
        transcriber=build_transcriber(settings, slots),
        pdf_checker=PdfChecker(),
        provider_slots=slots,
        blobs=blobs,
        s3_blobs=s3_blobs,
    )


def build_file_service(settings: Settings, core: Core, clients: Clients) -> FileService:
    return FileService(
        sessionmaker=core.sessionmaker,
        claude=clients.claude,
        blobs=clients.blobs,
        processor=upload_processor(settings),
        config=FilesConfig(
            retention=timedelta(days=settings.FILE_RETENTION_DAYS),
            blob_retention=timedelta(days=settings.BLOB_RETENTION_DAYS),
            image_model=settings.IMAGE_MODEL,
        ),
    )


def build_poller(settings: Settings, bot: Bot, dp: Dispatcher, inbox: Inbox) -> Poller:
    from bot.telegram.dispatcher import ALLOWED_UPDATES

    return Poller(
        bot,
        dp,
        inbox,
        allowed_updates=ALLOWED_UPDATES,
        timeout=settings.POLLING_TIMEOUT_SECONDS,
        heartbeat=heartbeat_path(settings.DATA_DIR),
    )
