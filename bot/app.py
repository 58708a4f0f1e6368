"""The composition root: every client, service and task is built here, and closed here."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import User
from aiogram.utils.i18n import I18n
from anthropic import AsyncAnthropic
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.agent.loop import AgentLoop, LoopConfig
from bot.agent.tools.analyze_image import AnalyzeImageTool, VisionClient
from bot.agent.tools.generate_image import GenerateImageTool, ImageRateLimit
from bot.agent.tools.read_document import ReadDocumentTool
from bot.agent.tools.registry import ToolRegistry
from bot.config import Settings, secret_source, usd_to_micros
from bot.db.lifecycle import database
from bot.db.session import create_sessionmaker
from bot.health import heartbeat_path
from bot.integrations.anthropic import ClaudeGateway, create_anthropic_client
from bot.integrations.gemini import GatewayConfig, GeminiImageGateway, create_gemini_client
from bot.integrations.gemini_audio import GeminiTranscriber
from bot.integrations.images import ImageGateway
from bot.integrations.openai_images import (
    OpenAIImageGateway,
    OpenAIImagesConfig,
    create_openai_client,
)
from bot.logs import configure_logging
from bot.ops.wiring import build_billing, build_blob_store, build_metrics, build_ops_server
from bot.services.billing import BillingService
from bot.services.blobs import Blobs
from bot.services.cancellation import RunningTurns
from bot.services.chat import ChatConfig, ChatService, IncomingMessage
from bot.services.controls import ControlsService
from bot.services.conversations import ConversationStore
from bot.services.files import GENERATED_MAX_BYTES, FilesConfig, FileService
from bot.services.inbox import Inbox
from bot.services.inputs import InputIntake, InputsConfig
from bot.services.media import ImageLimits, ImageProcessor
from bot.services.payments import PaymentsConfig, PaymentService
from bot.services.price_file import load_price_table
from bot.services.pricing import PriceTable
from bot.services.users import UserService
from bot.telegram.confirm import TelegramToolConfirmation
from bot.telegram.dispatcher import ALLOWED_UPDATES, build_dispatcher
from bot.telegram.flood import (
    PACING_HEADROOM,
    OutgoingPacer,
    PacingMiddleware,
    RetryAfterMiddleware,
)
from bot.telegram.handlers import admin as admin_handlers
from bot.telegram.handlers import billing as billing_handlers
from bot.telegram.handlers import controls as controls_handlers
from bot.telegram.handlers import groups as group_handlers
from bot.telegram.handlers import payments as payments_handlers
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
from bot.telegram.notices import TelegramTurnNotices
from bot.telegram.poller import Poller
from bot.telegram.response_models import pin_response_models
from bot.telegram.sending import MessageSender
from bot.telegram.session import BotSession
from bot.telegram.stars import TelegramStars
from bot.telegram.submit import TurnSubmitter
from bot.telegram.turns import TurnScheduler
from bot.telegram.ui import TelegramTurnUI
from bot.telegram.webhook import leave_webhook_mode
from bot.texts import Texts

if TYPE_CHECKING:
    from bot.ops.cluster import Cluster
    from bot.ops.metrics import Metrics
    from bot.ops.server import OpsServer
    from bot.services.s3_blobs import S3BlobStore

log = structlog.get_logger(__name__)

# Start-up: how long an unreachable Telegram is retried, and the wait for one getMe.
CONNECT_PATIENCE_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5
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
    for optional in (
        settings.WEBHOOK_SECRET,
        settings.S3_ACCESS_KEY_ID,
        settings.S3_SECRET_ACCESS_KEY,
    ):
        if optional is not None and optional.get_secret_value():
            values.append(optional.get_secret_value())
    if settings.OPENAI_API_KEY is not None:
        values.append(settings.OPENAI_API_KEY.get_secret_value())
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
    bot.session.middleware(
        RetryAfterMiddleware(
            max_wait=settings.TELEGRAM_RETRY_MAX_SECONDS,
            on_retry_after=metrics.telegram_retry_after if metrics is not None else None,
        )
    )
    bot.session.middleware(PacingMiddleware(pacer or build_pacer(settings)))
    return bot


@dataclass
class Application:
    """Everything the running bot holds, so shutdown can close it in order."""

    settings: Settings
    bot: Bot
    anthropic: AsyncAnthropic
    images: ImageGateway
    files: FileService
    transcriber: GeminiTranscriber
    sessionmaker: async_sessionmaker[AsyncSession]
    billing: BillingService
    inbox: Inbox
    scheduler: TurnScheduler
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


def build_application(
    settings: Settings, engine: AsyncEngine, prices: PriceTable | None = None
) -> Application:
    sessionmaker = create_sessionmaker(engine)
    prices = prices or load_price_table(settings)
    metrics = build_metrics(settings)
    billing = build_billing(settings, sessionmaker, metrics)
    pacer = build_pacer(settings)
    bot = create_bot(settings, metrics, pacer)
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
    images = build_image_gateway(settings, provider_slots)
    transcriber = GeminiTranscriber(
        functools.partial(
            create_gemini_client,
            settings.GOOGLE_API_KEY.get_secret_value(),
            settings.GEMINI_BASE_URL,
            settings.GEMINI_TIMEOUT_SECONDS,
        ),
        model=settings.TRANSCRIBE_MODEL,
        concurrency=provider_slots,
    )
    blobs, s3_blobs = build_blob_store(settings)
    files = build_file_service(settings, sessionmaker, bot, claude, billing, blobs)
    intake = InputIntake(
        images=files,
        sessionmaker=sessionmaker,
        bot=bot,
        claude=claude,
        blobs=blobs,
        billing=billing,
        prices=prices,
        transcriber=transcriber,
        config=InputsConfig(
            transcribe_model=settings.TRANSCRIBE_MODEL,
            max_audio_seconds=settings.MAX_AUDIO_SECONDS,
            retention=timedelta(days=settings.FILE_RETENTION_DAYS),
        ),
    )
    registry = ToolRegistry(
        build_tools(
            settings, sessionmaker, anthropic, images, files, billing, prices, provider_slots
        )
    )
    sender = MessageSender(bot)
    confirmations = TelegramToolConfirmation(
        bot,
        prices=prices,
        billing=billing,
        image_model=settings.IMAGE_MODEL,
        threshold_micros=usd_to_micros(settings.CONFIRM_ABOVE_USD),
        timeout=settings.CONFIRM_TIMEOUT_SECONDS,
    )
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
            web_tools=settings.WEB_TOOLS == "on",
        ),
        gate=confirmations,
    )

    low_balance_micros = usd_to_micros(settings.LOW_BALANCE_USD)
    controls = ControlsService(sessionmaker, low_balance_micros=low_balance_micros)

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

    i18n = create_i18n()
    running = RunningTurns()

    webhook_mode = settings.BOT_MODE == "webhook"
    chat_class = ChatService
    if webhook_mode:
        from bot.ops.replicas import ReplicaChatService

        chat_class = ReplicaChatService
    chat = chat_class(
        loop=loop,
        conversations=conversations,
        inbox=inbox,
        intake=intake,
        ui_factory=ui_factory,
        config=ChatConfig(
            context_token_budget=settings.CONTEXT_TOKEN_BUDGET,
            turn_timeout=settings.TURN_TIMEOUT_SECONDS,
        ),
        notices=TelegramTurnNotices(bot, controls, low_balance_micros=low_balance_micros),
        on_finished=metrics.turn_finished if metrics is not None else None,
        running=running,
        i18n=i18n,
    )
    # Twice the provider slots: turns busy with the database or Telegram leave room for those
    # waiting on a provider; more would wait inside the turn, holding its memory.
    scheduler = TurnScheduler(max_running=2 * settings.MAX_CONCURRENT_PROVIDER_CALLS)
    turns = TurnSubmitter(scheduler, chat, merge_window=settings.MERGE_WINDOW_SECONDS)
    payments = build_payments(settings, sessionmaker)
    stars_api = TelegramStars(bot)
    dp = build_dispatcher(
        settings,
        inbox=inbox,
        users=users,
        extra_routers=[
            group_handlers.build_router(),
            billing_handlers.build_router(),
            admin_handlers.build_router(),
            payments_handlers.build_router(),
            controls_handlers.build_router(),
            preferences_handlers.build_router(),
            stop_handlers.build_router(),
        ],
        controls=controls,
        confirmations=confirmations,
        payments=payments,
        stars_api=stars_api,
        texts=Texts(settings.texts_dir),
        billing=billing,
        prices=prices,
        conversations=conversations,
        turns=turns,
        running=running,
        i18n=i18n,
    )
    poller = Poller(
        bot,
        dp,
        inbox,
        allowed_updates=ALLOWED_UPDATES,
        timeout=settings.POLLING_TIMEOUT_SECONDS,
        heartbeat=heartbeat_path(settings.DATA_DIR),
    )
    cluster = None
    if webhook_mode:
        from bot.ops.cluster import Cluster, ClusterDeps
        from bot.ops.replicas import ReplicaChatService

        cluster = Cluster.build(
            ClusterDeps(
                settings=settings,
                bot=bot,
                dispatcher=dp,
                inbox=inbox,
                engine=engine,
                sessionmaker=sessionmaker,
                billing=billing,
                files=files,
                pacer=pacer,
                allowed_updates=ALLOWED_UPDATES,
                users=users,
                i18n=i18n,
            )
        )
        assert isinstance(chat, ReplicaChatService)
        chat.attach(cluster.replica)
    return Application(
        settings=settings,
        bot=bot,
        anthropic=anthropic,
        images=images,
        files=files,
        transcriber=transcriber,
        sessionmaker=sessionmaker,
        billing=billing,
        inbox=inbox,
        scheduler=scheduler,
        poller=poller,
        payments=payments,
        stars_api=stars_api,
        s3_blobs=s3_blobs,
        metrics=metrics,
        ops_server=build_ops_server(settings, metrics, sessionmaker, bot),
        cluster=cluster,
        i18n=i18n,
        users=users,
    )


def build_image_gateway(settings: Settings, provider_slots: asyncio.Semaphore) -> ImageGateway:
    """The image provider IMAGE_PROVIDER names; its SDK is imported on the first image."""
    if settings.IMAGE_PROVIDER == "openai":
        assert settings.OPENAI_API_KEY is not None  # load_settings requires it
        return OpenAIImageGateway(
            functools.partial(
                create_openai_client,
                settings.OPENAI_API_KEY.get_secret_value(),
                settings.OPENAI_BASE_URL,
                settings.OPENAI_TIMEOUT_SECONDS,
            ),
            OpenAIImagesConfig(
                model=settings.IMAGE_MODEL,
                retry_attempts=settings.OPENAI_RETRY_ATTEMPTS,
                retry_initial_delay=settings.OPENAI_RETRY_INITIAL_DELAY,
                size_mode=settings.OPENAI_IMAGE_SIZES,
            ),
            concurrency=provider_slots,
        )
    return GeminiImageGateway(
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


def build_payments(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> PaymentService:
    return PaymentService(sessionmaker, PaymentsConfig.from_settings(settings))


def build_file_service(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    bot: Bot,
    claude: ClaudeGateway,
    billing: BillingService,
    blobs: Blobs,
) -> FileService:
    limits = ImageLimits.from_megabytes(settings.MAX_UPLOAD_MB, settings.MAX_IMAGE_PIXELS)
    return FileService(
        sessionmaker=sessionmaker,
        bot=bot,
        claude=claude,
        blobs=blobs,
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
    images: ImageGateway,
    files: FileService,
    billing: BillingService,
    prices: PriceTable,
    provider_slots: asyncio.Semaphore,
) -> list[GenerateImageTool | AnalyzeImageTool | ReadDocumentTool]:
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
        ReadDocumentTool(
            client=anthropic,
            model=settings.vision_model,
            max_tokens=settings.VISION_MAX_TOKENS,
            files=files,
            billing=billing,
            prices=prices,
            concurrency=provider_slots,
        ),
    ]


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


async def run(settings: Settings, prices: PriceTable | None = None) -> int:
    configure_logging(
        log_format=settings.LOG_FORMAT, level=settings.LOG_LEVEL, secrets=secret_values(settings)
    )
    boot_time = datetime.now(UTC)
    stop = asyncio.Event()
    starting = asyncio.current_task()
    assert starting is not None

    def on_signal() -> None:
        # During start-up a signal cancels it wherever it waits (the database, getMe); once
        # polling runs, it asks for a graceful stop.
        stop.set()
        if not started:
            starting.cancel()

    started = False
    _install_signal_handlers(on_signal)
    try:
        async with database(settings) as engine:
            app = build_application(settings, engine, prices)
            try:
                await _start(app, boot_time, stop)
                started = True
                _exclude_startup_objects_from_gc()
                log.info("bot_started", mode=settings.BOT_MODE)
                if app.cluster is not None:
                    await app.cluster.serve(stop)
                else:
                    await app.poller.run(stop)
            finally:
                await _shutdown(app)
    except asyncio.CancelledError:
        if started or not stop.is_set():
            raise
        log.info("startup_interrupted")
        return 0
    log.info("bot_stopped")
    return 0


def _exclude_startup_objects_from_gc() -> None:
    """Start-up leaves about 260k long-lived objects (mostly the SDKs' modules and classes); a full
    collection that scans them takes about 100 ms, a pause every turn in flight would feel. Frozen,
    they are skipped: collections scan only what the running bot creates."""
    gc.freeze()
    log.info("gc_startup_objects_frozen", objects=gc.get_freeze_count())


async def _start(app: Application, boot_time: datetime, stop: asyncio.Event) -> None:
    me = await connect_to_telegram(app.bot, app.settings)
    log.info("telegram_connected", bot_username=me.username)
    if app.s3_blobs is not None:
        await app.s3_blobs.start()
    if app.ops_server is not None:
        await app.ops_server.start()
    if app.cluster is not None:
        # Other replicas' turns are running: their holds and updates are theirs to settle, or
        # the leader's to hand back once their lease runs out.
        await app.cluster.start()
        app.background.append(asyncio.create_task(_set_commands(app)))
        return
    await leave_webhook_mode(app.bot)
    await app.billing.expire_stale_holds(
        now=boot_time + timedelta(seconds=app.settings.HOLD_TTL_SECONDS)
    )
    app.background.append(asyncio.create_task(app.billing.run_sweeper(60.0, stop)))
    app.background.append(
        asyncio.create_task(
            app.files.run_housekeeping(app.settings.FILE_HOUSEKEEPING_INTERVAL_SECONDS, stop)
        )
    )
    app.background.append(
        asyncio.create_task(app.inbox.run_purge(app.settings.INBOX_PURGE_INTERVAL_SECONDS, stop))
    )
    app.background.append(asyncio.create_task(_announce(app, boot_time)))
    app.background.append(
        asyncio.create_task(
            app.payments.run_reconciler(
                app.stars_api, app.settings.STARS_RECONCILE_INTERVAL_SECONDS, stop
            )
        )
    )


async def _set_commands(app: Application) -> None:
    """The command menu, once per language."""
    for locale in LANGUAGE_NAMES:
        try:
            await app.bot.set_my_commands(
                bot_commands(app.i18n, locale),
                language_code=None if locale == DEFAULT_LOCALE else locale,
            )
        except Exception:
            log.exception("set_commands_failed", locale=locale)


async def _announce(app: Application, boot_time: datetime) -> None:
    """Set the command menu and tell people whose messages a restart interrupted."""
    await _set_commands(app)
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
    if app.cluster is not None:
        await app.cluster.stop_taking(min(5.0, grace))
    await app.poller.wait_dispatched(timeout=min(5.0, grace))
    await app.scheduler.shutdown(grace)
    if app.cluster is not None:
        await app.cluster.close()
    if app.ops_server is not None:
        await app.ops_server.close()
    for task in app.background:
        task.cancel()
    for task in app.background:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await app.bot.session.close()
    await app.anthropic.close()
    if app.s3_blobs is not None:
        await app.s3_blobs.aclose()
    with contextlib.suppress(Exception):
        await app.images.aclose()
    with contextlib.suppress(Exception):
        await app.transcriber.aclose()


def _install_signal_handlers(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


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


def _reason(exc: Exception) -> str:
    """A short reason without the traceback: the innermost message, on one line."""
    text = str(exc.__cause__ or exc) if isinstance(exc, TelegramNetworkError) else str(exc)
    text = text.removeprefix("HTTP Client says - ")
    return " ".join(text.split())[:200] or type(exc).__name__
