"""The composition root: every client, service and task is built here, and closed here."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from aiogram.utils.i18n import I18n
from anthropic import AsyncAnthropic
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.agent.loop import AgentLoop, LoopConfig
from bot.agent.tools.analyze_image import AnalyzeImageTool, VisionClient
from bot.agent.tools.generate_image import GenerateImageTool, ImageRateLimit
from bot.agent.tools.registry import ToolRegistry
from bot.config import Settings
from bot.db.lifecycle import database
from bot.db.session import create_sessionmaker
from bot.integrations.anthropic import ClaudeGateway, create_anthropic_client
from bot.integrations.gemini import GatewayConfig, GeminiImageGateway, create_gemini_client
from bot.logs import configure_logging
from bot.services.billing import BillingService
from bot.services.blobs import BlobStore
from bot.services.cancellation import RunningTurns
from bot.services.chat import ChatConfig, ChatService, IncomingMessage
from bot.services.conversations import ConversationStore
from bot.services.files import GENERATED_MAX_BYTES, FilesConfig, FileService
from bot.services.inbox import Inbox
from bot.services.media import ImageLimits, ImageProcessor
from bot.services.pricing import PriceTable, UnknownModelError
from bot.services.users import UserService
from bot.telegram.dispatcher import ALLOWED_UPDATES, build_dispatcher
from bot.telegram.flood import (
    PACING_HEADROOM,
    OutgoingPacer,
    PacingMiddleware,
    RetryAfterMiddleware,
)
from bot.telegram.handlers import admin as admin_handlers
from bot.telegram.handlers import billing as billing_handlers
from bot.telegram.handlers import groups as group_handlers
from bot.telegram.handlers import preferences as preferences_handlers
from bot.telegram.handlers import stop as stop_handlers
from bot.telegram.i18n import (
    DEFAULT_LOCALE,
    LANGUAGE_NAMES,
    N_,
    bot_commands,
    create_i18n,
    pick_locale,
)
from bot.telegram.poller import Poller
from bot.telegram.response_models import pin_response_models
from bot.telegram.sending import MessageSender
from bot.telegram.session import BotSession
from bot.telegram.submit import TurnSubmitter
from bot.telegram.turns import TurnScheduler
from bot.telegram.ui import TelegramTurnUI

log = structlog.get_logger(__name__)

RESTART_NOTICE = N_(
    "I was restarted while working on your last message, so it was not finished. "
    "Nothing was charged for the unfinished part. Please send it again."
)


def secret_values(settings: Settings) -> list[str]:
    values = [
        settings.TELEGRAM_BOT_TOKEN.get_secret_value(),
        settings.ANTHROPIC_API_KEY.get_secret_value(),
        settings.GOOGLE_API_KEY.get_secret_value(),
    ]
    if settings.DATABASE_URL is not None:
        from sqlalchemy.engine import make_url

        password = make_url(settings.DATABASE_URL.get_secret_value()).password
        if password:
            values.append(str(password))
    return values


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
    billing: BillingService
    inbox: Inbox
    scheduler: TurnScheduler
    poller: Poller
    i18n: I18n
    users: UserService
    background: list[asyncio.Task[None]] = field(default_factory=list)
    response_models: list[type[Any]] = field(default_factory=pin_response_models)


def unpriced_models_problem(settings: Settings, prices: PriceTable) -> str | None:
    """One line naming the configured models without a price, or None when all are priced."""
    try:
        prices.check_models(settings.CLAUDE_MODEL, settings.vision_model, settings.IMAGE_MODEL)
    except UnknownModelError as exc:
        return str(exc)
    unpriced = [m for m in settings.chat_models if not prices.has_token_price(m)]
    if unpriced:
        return (
            f"CHAT_MODELS lists models with no price: {', '.join(unpriced)}; "
            "remove them or add their prices (PRICES_FILE)."
        )
    return None


def build_application(settings: Settings, engine: AsyncEngine) -> Application:
    sessionmaker = create_sessionmaker(engine)
    prices = PriceTable()
    prices.check_models(settings.CLAUDE_MODEL, settings.vision_model, settings.IMAGE_MODEL)
    billing = BillingService(
        sessionmaker,
        markup=settings.PRICE_MARKUP,
        hold_ttl=timedelta(seconds=settings.HOLD_TTL_SECONDS),
    )
    bot = create_bot(settings)
    anthropic = create_anthropic_client(
        settings.ANTHROPIC_API_KEY.get_secret_value(),
        settings.ANTHROPIC_BASE_URL,
        settings.ANTHROPIC_TIMEOUT_SECONDS,
    )
    provider_slots = asyncio.Semaphore(settings.MAX_CONCURRENT_PROVIDER_CALLS)
    claude = ClaudeGateway(
        anthropic, max_retries=settings.ANTHROPIC_MAX_RETRIES, concurrency=provider_slots
    )
    inbox = Inbox(sessionmaker)
    users = UserService(sessionmaker, billing, starter_micros=settings.starter_balance_micros)
    conversations = ConversationStore(
        sessionmaker, recent_files_limit=settings.RECENT_FILES_IN_CONTEXT
    )
    images = GeminiImageGateway(
        functools.partial(
            create_gemini_client,
            settings.GOOGLE_API_KEY.get_secret_value(),
            settings.GEMINI_BASE_URL,
            settings.GEMINI_TIMEOUT_SECONDS,
        ),
        GatewayConfig(
            model=settings.IMAGE_MODEL,
            retry_attempts=settings.GEMINI_RETRY_ATTEMPTS,
            retry_initial_delay=settings.GEMINI_RETRY_INITIAL_DELAY,
        ),
        concurrency=provider_slots,
    )
    files = build_file_service(settings, sessionmaker, bot, claude, billing)
    registry = ToolRegistry(
        build_tools(
            settings, sessionmaker, anthropic, images, files, billing, prices, provider_slots
        )
    )
    sender = MessageSender(bot)
    i18n = create_i18n()
    loop = AgentLoop(
        claude=claude,
        registry=registry,
        billing=billing,
        prices=prices,
        files=files,
        config=LoopConfig(
            model=settings.CLAUDE_MODEL,
            max_tokens=settings.CLAUDE_MAX_TOKENS,
            max_iterations=settings.MAX_TOOL_ITERATIONS,
        ),
    )

    def ui_factory(incoming: IncomingMessage) -> TelegramTurnUI:
        return TelegramTurnUI(
            bot,
            sender,
            chat_id=incoming.chat_id,
            draft_id=incoming.update_id,
            draft_interval=settings.DRAFT_INTERVAL_SECONDS,
            thread_id=incoming.topic_thread_id,
            reply_to=incoming.reply_to_message_id,
            drafts=not incoming.in_group,
        )

    running = RunningTurns()
    chat = ChatService(
        loop=loop,
        conversations=conversations,
        inbox=inbox,
        intake=files,
        ui_factory=ui_factory,
        config=ChatConfig(
            context_token_budget=settings.CONTEXT_TOKEN_BUDGET,
            turn_timeout=settings.TURN_TIMEOUT_SECONDS,
        ),
        running=running,
        i18n=i18n,
    )
    # Twice the provider slots: turns busy with the database or Telegram leave room for those
    # waiting on a provider; more would wait inside the turn, holding its memory.
    scheduler = TurnScheduler(max_running=2 * settings.MAX_CONCURRENT_PROVIDER_CALLS)
    turns = TurnSubmitter(scheduler, chat, merge_window=settings.MERGE_WINDOW_SECONDS)
    dp = build_dispatcher(
        settings,
        inbox=inbox,
        users=users,
        extra_routers=[
            group_handlers.build_router(),
            billing_handlers.build_router(),
            admin_handlers.build_router(),
            preferences_handlers.build_router(),
            stop_handlers.build_router(),
        ],
        billing=billing,
        prices=prices,
        conversations=conversations,
        turns=turns,
        running=running,
        i18n=i18n,
    )
    poller = Poller(
        bot, dp, inbox, allowed_updates=ALLOWED_UPDATES, timeout=settings.POLLING_TIMEOUT_SECONDS
    )
    return Application(
        settings=settings,
        bot=bot,
        anthropic=anthropic,
        images=images,
        files=files,
        sessionmaker=sessionmaker,
        billing=billing,
        inbox=inbox,
        scheduler=scheduler,
        poller=poller,
        i18n=i18n,
        users=users,
    )


def build_file_service(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    bot: Bot,
    claude: ClaudeGateway,
    billing: BillingService,
) -> FileService:
    limits = ImageLimits.from_megabytes(settings.MAX_UPLOAD_MB, settings.MAX_IMAGE_PIXELS)
    return FileService(
        sessionmaker=sessionmaker,
        bot=bot,
        claude=claude,
        blobs=BlobStore(settings.files_dir),
        processor=ImageProcessor(limits),
        generated_processor=ImageProcessor(
            ImageLimits(max_bytes=GENERATED_MAX_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS)
        ),
        billing=billing,
        config=FilesConfig(
            retention=timedelta(days=settings.FILE_RETENTION_DAYS),
            blob_retention=timedelta(days=settings.BLOB_RETENTION_DAYS),
            image_model=settings.IMAGE_MODEL,
        ),
    )


def build_tools(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    anthropic: AsyncAnthropic,
    images: GeminiImageGateway,
    files: FileService,
    billing: BillingService,
    prices: PriceTable,
    provider_slots: asyncio.Semaphore,
) -> list[GenerateImageTool | AnalyzeImageTool]:
    vision = VisionClient(
        anthropic,
        model=settings.vision_model,
        max_tokens=settings.VISION_MAX_TOKENS,
        concurrency=provider_slots,
    )
    return [
        GenerateImageTool(
            gateway=images,
            files=files,
            billing=billing,
            prices=prices,
            rate_limit=ImageRateLimit(sessionmaker, per_hour=settings.RATE_LIMIT_IMAGES_PER_HOUR),
        ),
        AnalyzeImageTool(vision=vision, files=files, billing=billing, prices=prices),
    ]


async def run(settings: Settings) -> int:
    configure_logging(
        log_format=settings.LOG_FORMAT, level=settings.LOG_LEVEL, secrets=secret_values(settings)
    )
    boot_time = datetime.now(UTC)
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    async with database(settings) as engine:
        app = build_application(settings, engine)
        try:
            await _start(app, boot_time, stop)
            _exclude_startup_objects_from_gc()
            log.info("bot_started")
            await app.poller.run(stop)
        finally:
            await _shutdown(app)
    log.info("bot_stopped")
    return 0


def _exclude_startup_objects_from_gc() -> None:
    """Start-up leaves about 260k long-lived objects (mostly the SDKs' modules and classes); a full
    collection that scans them takes about 100 ms, a pause every turn in flight would feel. Frozen,
    they are skipped: collections scan only what the running bot creates."""
    gc.freeze()
    log.info("gc_startup_objects_frozen", objects=gc.get_freeze_count())


async def _start(app: Application, boot_time: datetime, stop: asyncio.Event) -> None:
    me = await app.bot.get_me()
    log.info("telegram_connected", bot_username=me.username)
    await app.billing.expire_stale_holds(
        now=boot_time + timedelta(seconds=app.settings.HOLD_TTL_SECONDS)
    )
    app.background.append(asyncio.create_task(app.billing.run_sweeper(60.0, stop)))
    app.background.append(
        asyncio.create_task(
            app.files.run_housekeeping(app.settings.FILE_HOUSEKEEPING_INTERVAL_SECONDS, stop)
        )
    )
    app.background.append(asyncio.create_task(_announce(app, boot_time)))


async def _announce(app: Application, boot_time: datetime) -> None:
    """Set the command menu and tell people whose messages a restart interrupted."""
    for locale in LANGUAGE_NAMES:
        try:
            await app.bot.set_my_commands(
                bot_commands(app.i18n, locale),
                language_code=None if locale == DEFAULT_LOCALE else locale,
            )
        except Exception:
            log.exception("set_commands_failed", locale=locale)
    unfinished = await app.inbox.unfinished_before(boot_time)
    told: set[int] = set()
    for item in unfinished:
        if item.chat_id is not None and item.chat_id not in told:
            told.add(item.chat_id)
            locale = DEFAULT_LOCALE
            if item.user_id is not None:
                locale = pick_locale(*await app.users.language_of(item.user_id))
            try:
                await app.bot.send_message(
                    item.chat_id, app.i18n.gettext(RESTART_NOTICE, locale=locale)
                )
            except Exception:
                log.exception("restart_notice_failed", chat_id=item.chat_id)
        await app.inbox.mark(item.update_id, "notified")
    if unfinished:
        log.info("restart_notices_sent", updates=len(unfinished), chats=len(told))


async def _shutdown(app: Application) -> None:
    grace = app.settings.SHUTDOWN_GRACE_SECONDS
    log.info("shutdown_started", grace_seconds=grace)
    await app.poller.wait_dispatched(timeout=min(5.0, grace))
    await app.scheduler.shutdown(grace)
    for task in app.background:
        task.cancel()
    for task in app.background:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await app.bot.session.close()
    await app.anthropic.close()
    with contextlib.suppress(Exception):
        await app.images.aclose()


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
