"""The composition root: every client, service and task is built here, and closed here."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from anthropic import AsyncAnthropic
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.agent.loop import AgentLoop, LoopConfig
from bot.agent.tools.analyze_image import AnalyzeImageTool, VisionConfig
from bot.agent.tools.generate_image import GenerateImageTool
from bot.agent.tools.registry import ToolRegistry
from bot.config import Settings
from bot.db.session import create_sessionmaker
from bot.providers.anthropic import ClaudeGateway, create_anthropic_client
from bot.providers.gemini import GatewayConfig, GeminiImageGateway, create_gemini_client
from bot.services.blobs import BlobStore
from bot.services.conversations import ConversationStore
from bot.services.delivery import FileDelivery
from bot.services.files import GENERATED_MAX_BYTES, FilesConfig, FileService
from bot.services.inbox import Inbox
from bot.services.intake import ImageIntake
from bot.services.ledger import Ledger
from bot.services.media import ImageLimits, ImageProcessor
from bot.services.metered import MeteredCalls
from bot.services.pricing import PriceTable
from bot.services.usage import ImageRateLimit, UsageReports
from bot.services.users import UserService
from bot.telegram.delivery import TelegramFileSender
from bot.telegram.dispatcher import ALLOWED_UPDATES, build_dispatcher
from bot.telegram.flood import (
    PACING_HEADROOM,
    OutgoingPacer,
    PacingMiddleware,
    RetryAfterMiddleware,
)
from bot.telegram.handlers import admin as admin_handlers
from bot.telegram.handlers import billing as billing_handlers
from bot.telegram.poller import Poller
from bot.telegram.response_models import pin_response_models
from bot.telegram.sending import MessageSender
from bot.telegram.session import BotSession
from bot.telegram.submit import TurnSubmitter
from bot.telegram.turns import TurnScheduler
from bot.telegram.ui import TelegramTurnUI
from bot.turns.chat import ChatConfig, ChatService

log = structlog.get_logger(__name__)


def create_bot(settings: Settings) -> Bot:
    if settings.TELEGRAM_API_URL:
        session = BotSession(api=TelegramAPIServer.from_base(settings.TELEGRAM_API_URL))
    else:
        session = BotSession()
    bot = Bot(
        settings.TELEGRAM_BOT_TOKEN.get_secret_value(),
        session=session,
        default=DefaultBotProperties(link_preview_is_disabled=True),
    )
    bot.session.middleware(RetryAfterMiddleware(max_wait=settings.TELEGRAM_RETRY_MAX_SECONDS))
    pacer = OutgoingPacer(
        per_chat_rate=settings.TELEGRAM_CHAT_RATE * PACING_HEADROOM,
        global_rate=settings.TELEGRAM_GLOBAL_RATE * PACING_HEADROOM,
        global_burst=max(1, int(settings.TELEGRAM_GLOBAL_RATE)),
    )
    bot.session.middleware(PacingMiddleware(pacer))
    return bot


@dataclass
class Application:
    """Everything the running bot holds, so shutdown can close it in order."""

    settings: Settings
    bot: Bot
    anthropic: AsyncAnthropic
    images: GeminiImageGateway
    files: FileService
    sessionmaker: async_sessionmaker[AsyncSession]
    billing: Ledger
    inbox: Inbox
    scheduler: TurnScheduler
    dispatcher: Dispatcher
    poller: Poller
    background: list[asyncio.Task[None]] = field(default_factory=list)
    response_models: list[type[Any]] = field(default_factory=pin_response_models)


@dataclass(frozen=True)
class Core:
    """The database side: sessions, prices, the ledger, the metered path, the inbox and the
    conversations (one of each: the conversation store caches what it read)."""

    sessionmaker: async_sessionmaker[AsyncSession]
    prices: PriceTable
    ledger: Ledger
    metered: MeteredCalls
    inbox: Inbox
    conversations: ConversationStore


@dataclass(frozen=True)
class Clients:
    """The outside world: Telegram, Claude and the image model, sharing provider slots."""

    bot: Bot
    anthropic: AsyncAnthropic
    claude: ClaudeGateway
    images: GeminiImageGateway
    provider_slots: asyncio.Semaphore


def build_application(settings: Settings, engine: AsyncEngine) -> Application:
    core = build_core(settings, engine)
    clients = build_clients(settings)
    files = build_file_service(settings, core, clients)
    loop = build_agent_loop(settings, core, clients, files)
    chat = build_chat(settings, core, clients, files, loop)
    # Twice the provider slots: turns busy with the database or Telegram leave room for those
    # waiting on a provider; more would wait inside the turn, holding its memory.
    scheduler = TurnScheduler(max_running=2 * settings.MAX_CONCURRENT_PROVIDER_CALLS)
    turns = TurnSubmitter(scheduler, chat, merge_window=settings.MERGE_WINDOW_SECONDS)
    dp = build_telegram_dispatcher(settings, core, turns)
    poller = Poller(
        clients.bot,
        dp,
        core.inbox,
        allowed_updates=ALLOWED_UPDATES,
        timeout=settings.POLLING_TIMEOUT_SECONDS,
    )
    return Application(
        settings=settings,
        bot=clients.bot,
        anthropic=clients.anthropic,
        images=clients.images,
        files=files,
        sessionmaker=core.sessionmaker,
        billing=core.ledger,
        inbox=core.inbox,
        scheduler=scheduler,
        dispatcher=dp,
        poller=poller,
    )


def build_core(settings: Settings, engine: AsyncEngine) -> Core:
    sessionmaker = create_sessionmaker(engine)
    prices = PriceTable()
    prices.check_models(settings.CLAUDE_MODEL, settings.vision_model, settings.IMAGE_MODEL)
    ledger = Ledger(
        sessionmaker,
        markup=settings.PRICE_MARKUP,
        hold_ttl=timedelta(seconds=settings.HOLD_TTL_SECONDS),
    )
    conversations = ConversationStore(
        sessionmaker, recent_files_limit=settings.RECENT_FILES_IN_CONTEXT
    )
    return Core(
        sessionmaker, prices, ledger, MeteredCalls(ledger), Inbox(sessionmaker), conversations
    )


def build_clients(settings: Settings) -> Clients:
    anthropic = create_anthropic_client(
        settings.ANTHROPIC_API_KEY.get_secret_value(),
        settings.ANTHROPIC_BASE_URL,
        settings.ANTHROPIC_TIMEOUT_SECONDS,
    )
    slots = asyncio.Semaphore(settings.MAX_CONCURRENT_PROVIDER_CALLS)
    claude = ClaudeGateway(anthropic, max_retries=settings.ANTHROPIC_MAX_RETRIES, concurrency=slots)
    return Clients(
        create_bot(settings), anthropic, claude, build_image_gateway(settings, slots), slots
    )


def build_image_gateway(settings: Settings, slots: asyncio.Semaphore) -> GeminiImageGateway:
    connect = functools.partial(
        create_gemini_client,
        settings.GOOGLE_API_KEY.get_secret_value(),
        settings.GEMINI_BASE_URL,
        settings.GEMINI_TIMEOUT_SECONDS,
    )
    config = GatewayConfig(
        model=settings.IMAGE_MODEL,
        retry_attempts=settings.GEMINI_RETRY_ATTEMPTS,
        retry_initial_delay=settings.GEMINI_RETRY_INITIAL_DELAY,
    )
    return GeminiImageGateway(connect, config, concurrency=slots)


def build_file_service(settings: Settings, core: Core, clients: Clients) -> FileService:
    return FileService(
        sessionmaker=core.sessionmaker,
        claude=clients.claude,
        blobs=BlobStore(settings.files_dir),
        processor=upload_processor(settings),
        config=FilesConfig(
            retention=timedelta(days=settings.FILE_RETENTION_DAYS),
            blob_retention=timedelta(days=settings.BLOB_RETENTION_DAYS),
            image_model=settings.IMAGE_MODEL,
        ),
    )


def upload_processor(settings: Settings) -> ImageProcessor:
    limits = ImageLimits.from_megabytes(settings.MAX_UPLOAD_MB, settings.MAX_IMAGE_PIXELS)
    return ImageProcessor(limits)


def build_agent_loop(
    settings: Settings, core: Core, clients: Clients, files: FileService
) -> AgentLoop:
    generated = ImageProcessor(
        ImageLimits(max_bytes=GENERATED_MAX_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS)
    )
    delivery = FileDelivery(
        files=files, sender=TelegramFileSender(clients.bot), processor=generated
    )
    return AgentLoop(
        claude=clients.claude,
        registry=ToolRegistry(build_tools(settings, core, clients, files)),
        metered=core.metered,
        prices=core.prices,
        files=delivery,
        config=LoopConfig(
            model=settings.CLAUDE_MODEL,
            max_tokens=settings.CLAUDE_MAX_TOKENS,
            max_iterations=settings.MAX_TOOL_ITERATIONS,
        ),
    )


def build_tools(
    settings: Settings, core: Core, clients: Clients, files: FileService
) -> list[GenerateImageTool | AnalyzeImageTool]:
    vision = VisionConfig(model=settings.vision_model, max_tokens=settings.VISION_MAX_TOKENS)
    rate_limit = ImageRateLimit(core.sessionmaker, per_hour=settings.RATE_LIMIT_IMAGES_PER_HOUR)
    return [
        GenerateImageTool(
            gateway=clients.images,
            files=files,
            metered=core.metered,
            prices=core.prices,
            rate_limit=rate_limit,
        ),
        AnalyzeImageTool(
            claude=clients.claude,
            config=vision,
            files=files,
            metered=core.metered,
            prices=core.prices,
        ),
    ]


def build_chat(
    settings: Settings, core: Core, clients: Clients, files: FileService, loop: AgentLoop
) -> ChatService:
    sender = MessageSender(clients.bot)

    def ui_factory(chat_id: int, update_id: int) -> TelegramTurnUI:
        return TelegramTurnUI(
            clients.bot,
            sender,
            chat_id=chat_id,
            draft_id=update_id,
            draft_interval=settings.DRAFT_INTERVAL_SECONDS,
        )

    intake = ImageIntake(bot=clients.bot, files=files, processor=upload_processor(settings))
    return ChatService(
        loop=loop,
        conversations=core.conversations,
        inbox=core.inbox,
        intake=intake,
        ui_factory=ui_factory,
        config=ChatConfig(
            context_token_budget=settings.CONTEXT_TOKEN_BUDGET,
            turn_timeout=settings.TURN_TIMEOUT_SECONDS,
        ),
    )


def build_telegram_dispatcher(settings: Settings, core: Core, turns: TurnSubmitter) -> Dispatcher:
    users = UserService(
        core.sessionmaker, core.ledger, starter_micros=settings.starter_balance_micros
    )
    return build_dispatcher(
        settings,
        inbox=core.inbox,
        users=users,
        extra_routers=[billing_handlers.build_router(), admin_handlers.build_router()],
        billing=core.ledger,
        usage=UsageReports(core.sessionmaker),
        prices=core.prices,
        conversations=core.conversations,
        turns=turns,
    )
