"""The composition root's builders of the turn: the agent loop and its tools, the chat service
with its intake, UI and notices, the Telegram dispatcher, and the replicas' cluster."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiogram import Dispatcher
from aiogram.utils.i18n import I18n
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.agent.loop import AgentLoop, LoopConfig
from bot.agent.tools.analyze_image import AnalyzeImageTool, VisionConfig
from bot.agent.tools.generate_image import GenerateImageTool
from bot.agent.tools.read_document import ReadDocumentTool
from bot.agent.tools.registry import ToolRegistry
from bot.builders import build_intake, upload_processor
from bot.config import Settings, usd_to_micros
from bot.providers.images import AnswerGate
from bot.services.cancellation import RunningTurns
from bot.services.delivery import FileDelivery
from bot.services.files import GENERATED_MAX_BYTES, FileService
from bot.services.incoming import IncomingMessage
from bot.services.inputs import InputIntake
from bot.services.intake import ImageIntake
from bot.services.media import ImageLimits, ImageProcessor
from bot.services.usage import ImageRateLimit, UsageReports
from bot.telegram.confirm import TelegramToolConfirmation
from bot.telegram.delivery import TelegramFileSender
from bot.telegram.dispatcher import ALLOWED_UPDATES, build_dispatcher, feature_routers
from bot.telegram.notices import TelegramTurnNotices
from bot.telegram.sending import MessageSender
from bot.telegram.submit import TurnSubmitter
from bot.telegram.turns import TurnScheduler
from bot.telegram.ui import TelegramTurnUI
from bot.texts import Texts
from bot.turns.chat import ChatConfig, ChatService

if TYPE_CHECKING:
    from bot.app import Application, Clients, Core
    from bot.ops.cluster import Cluster
    from bot.ops.replicas import Job
    from bot.telegram.flood import OutgoingPacer


def build_agent_loop(
    settings: Settings,
    core: Core,
    clients: Clients,
    files: FileService,
    gate: TelegramToolConfirmation,
) -> AgentLoop:
    generated = ImageProcessor(
        ImageLimits(max_bytes=GENERATED_MAX_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS)
    )
    delivery = FileDelivery(
        files=files, sender=TelegramFileSender(clients.bot), processor=generated
    )
    return AgentLoop(
        claude=clients.claude,
        registry=ToolRegistry(build_tools(settings, core, clients, files, generated)),
        metered=core.metered,
        prices=core.prices,
        files=delivery,
        config=LoopConfig(
            model=settings.CLAUDE_MODEL,
            max_tokens=settings.CLAUDE_MAX_TOKENS,
            max_iterations=settings.MAX_TOOL_ITERATIONS,
            web_tools=settings.WEB_TOOLS == "on",
        ),
        gate=gate,
    )


def build_tools(
    settings: Settings,
    core: Core,
    clients: Clients,
    files: FileService,
    generated: ImageProcessor,
) -> list[GenerateImageTool | AnalyzeImageTool | ReadDocumentTool]:
    """`generated` checks the image model's answers, one answer in memory at a time."""
    vision = VisionConfig(model=settings.vision_model, max_tokens=settings.VISION_MAX_TOKENS)
    rate_limit = ImageRateLimit(core.sessionmaker, per_hour=settings.RATE_LIMIT_IMAGES_PER_HOUR)
    return [
        GenerateImageTool(
            gateway=clients.images,
            files=files,
            metered=core.metered,
            prices=core.prices,
            rate_limit=rate_limit,
            processor=generated,
            gate=AnswerGate(limit=1),
        ),
        AnalyzeImageTool(
            claude=clients.claude,
            config=vision,
            files=files,
            metered=core.metered,
            prices=core.prices,
        ),
        ReadDocumentTool(
            claude=clients.claude,
            model=settings.vision_model,
            max_tokens=settings.VISION_MAX_TOKENS,
            files=files,
            metered=core.metered,
            prices=core.prices,
        ),
    ]


def build_intake_for(
    settings: Settings, core: Core, clients: Clients, files: FileService
) -> InputIntake:
    images = ImageIntake(bot=clients.bot, files=files, processor=upload_processor(settings))
    return build_intake(
        settings,
        images=images,
        sessionmaker=core.sessionmaker,
        bot=clients.bot,
        claude=clients.claude,
        blobs=clients.blobs,
        metered=core.metered,
        prices=core.prices,
        transcriber=clients.transcriber,
        pdf_checker=clients.pdf_checker,
    )


def build_chat(
    settings: Settings,
    core: Core,
    clients: Clients,
    files: FileService,
    loop: AgentLoop,
    *,
    i18n: I18n,
    running: RunningTurns,
) -> ChatService:
    sender = MessageSender(clients.bot)

    def ui_factory(incoming: IncomingMessage) -> TelegramTurnUI:
        return TelegramTurnUI(
            clients.bot,
            sender,
            chat_id=incoming.chat_id,
            draft_id=incoming.update_id,
            draft_interval=settings.DRAFT_INTERVAL_SECONDS,
            thread_id=incoming.topic_thread_id,
            reply_to=incoming.reply_to_message_id,
            drafts=not incoming.in_group,
        )

    low_balance_micros = usd_to_micros(settings.LOW_BALANCE_USD)
    chat_class = ChatService
    if settings.BOT_MODE == "webhook":
        from bot.ops.replicas import ReplicaChatService

        chat_class = ReplicaChatService
    return chat_class(
        loop=loop,
        conversations=core.conversations,
        inbox=core.inbox,
        intake=build_intake_for(settings, core, clients, files),
        ui_factory=ui_factory,
        config=ChatConfig(
            context_token_budget=settings.CONTEXT_TOKEN_BUDGET,
            turn_timeout=settings.TURN_TIMEOUT_SECONDS,
        ),
        notices=TelegramTurnNotices(
            clients.bot, core.controls, low_balance_micros=low_balance_micros
        ),
        on_finished=core.metrics.turn_finished if core.metrics is not None else None,
        running=running,
        i18n=i18n,
    )


def build_telegram_dispatcher(
    settings: Settings,
    core: Core,
    clients: Clients,
    *,
    chat: ChatService,
    scheduler: TurnScheduler,
    extras: dict[str, Any],
) -> Dispatcher:
    """The dispatcher with every router; `extras` become handler arguments too."""
    turns = TurnSubmitter(scheduler, chat, merge_window=settings.MERGE_WINDOW_SECONDS)
    return build_dispatcher(
        settings,
        inbox=core.inbox,
        users=core.users,
        extra_routers=feature_routers(),
        controls=core.controls,
        texts=Texts(settings.texts_dir),
        billing=core.ledger,
        usage=UsageReports(core.sessionmaker),
        prices=core.prices,
        conversations=core.conversations,
        turns=turns,
        **extras,
    )


def attach_cluster(
    app: Application, engine: AsyncEngine, pacer: OutgoingPacer, chat: ChatService
) -> Cluster:
    """Webhook mode: replicas on one Postgres; the chat service takes turns through the lease."""
    from bot.ops.cluster import Cluster, ClusterDeps
    from bot.ops.replicas import ReplicaChatService

    cluster = Cluster.build(
        ClusterDeps(
            settings=app.settings,
            bot=app.bot,
            dispatcher=app.dispatcher,
            inbox=app.inbox,
            engine=engine,
            sessionmaker=app.sessionmaker,
            billing=app.billing,
            files=app.files,
            pacer=pacer,
            allowed_updates=ALLOWED_UPDATES,
            users=app.users,
            i18n=app.i18n,
            leader_jobs=leader_jobs(app),
        )
    )
    assert isinstance(chat, ReplicaChatService)
    chat.attach(cluster.replica)
    return cluster


def leader_jobs(app: Application) -> list[Job]:
    """Jobs one replica runs for all: the inbox purge and Stars reconciliation."""
    settings = app.settings

    async def purge_inbox(stop: asyncio.Event) -> None:
        await app.inbox.run_purge(settings.INBOX_PURGE_INTERVAL_SECONDS, stop)

    async def reconcile_stars(stop: asyncio.Event) -> None:
        await app.payments.run_reconciler(
            app.stars_api, settings.STARS_RECONCILE_INTERVAL_SECONDS, stop
        )

    return [purge_inbox, reconcile_stars]
