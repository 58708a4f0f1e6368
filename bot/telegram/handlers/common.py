"""/start, /help, /new, and what unknown commands and unsupported messages get."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message
from babel.numbers import format_decimal

from bot.agent.web_tools import WEB_SEARCH_MICROS
from bot.config import Settings
from bot.i18n import N_, _, current_locale, format_money
from bot.services.conversations import ConversationStore
from bot.services.ledger import Ledger
from bot.services.pricing import PriceTable
from bot.services.transcripts import AUDIO_TOKENS_PER_SECOND
from bot.telegram.middlewares import IGNORED
from bot.telegram.private import answer_privately
from bot.telegram.submit import is_group_chat, topic_of

UNKNOWN_COMMAND_REPLY = N_("I don't know that command. /help lists what I can do.")
UNSUPPORTED_REPLY = N_(
    "I can read text, photos and image files (JPEG, PNG, WebP, GIF), PDFs, text files, voice "
    "messages and audio files. This kind of message isn't supported."
)


async def start_handler(message: Message, billing: Ledger) -> None:
    assert message.from_user is not None
    balance = await billing.get_balance(message.from_user.id)
    name = message.from_user.first_name or _("there")
    await answer_privately(
        message,
        _(
            "Hi {name}! I'm an assistant powered by Claude.\n\n"
            "Ask me anything (typed or as a voice message), send me a photo, a PDF or a text file "
            "and ask about it, or ask me to draw something "
            '("draw a cyberpunk robot on a red skateboard, 16:9, 4K"), then ask for changes.\n\n'
            "Your balance: {balance}.\n"
            "/help explains features and prices, /new starts a fresh conversation, "
            "/balance shows your balance."
        ).format(name=name, balance=format_money(balance.available_micros)),
    )


async def help_handler(
    message: Message, prices: PriceTable, billing: Ledger, settings: Settings
) -> None:
    chat = prices.token_price(settings.CLAUDE_MODEL)
    image_lines = [
        _("• {size} image: {price}").format(
            size=size,
            price=format_money(billing.user_price(prices.image_price(settings.IMAGE_MODEL, size))),
        )
        for size in ("1K", "2K", "4K")
    ]
    voice = prices.token_price(settings.TRANSCRIBE_MODEL)
    # A minute of speech: 32 audio tokens a second in, about 200 tokens of transcript out.
    minute_micros = -(-(voice.input * AUDIO_TOKENS_PER_SECOND * 60 + voice.output * 200) // 10**6)
    web_on = settings.WEB_TOOLS == "on"
    intro = _(
        "What I can do:\n"
        "• Answer questions and help with writing, code and ideas.\n"
        "• Look at photos and image files you send (JPEG, PNG, WebP, GIF, up to "
        "{max_mb} MB) and answer questions about them.\n"
        "• Read PDFs (up to 20 MB and 100 pages) and text files (.txt, .md, .csv, .json, source "
        "code; up to 1 MB), and come back to them later.\n"
        "• Understand voice messages and audio files (up to 20 MB and {minutes} minutes): I "
        "transcribe them and answer."
    ).format(max_mb=settings.MAX_UPLOAD_MB, minutes=settings.MAX_AUDIO_SECONDS // 60)
    web_line = _(
        "• Search the web and read web pages when a question needs fresh facts, with links to "
        "the sources."
    )
    draw_line = _(
        '• Draw images, and edit or combine earlier ones ("make it blue", "put the cat from '
        'the first photo into the second").\n\n'
        "Prices (taken from your prepaid balance):"
    )
    chat_line = _(
        "• Chat: {input} per million input tokens, {output} per million output tokens "
        "(a typical short answer costs well under a cent). PDFs and text files count as input "
        "tokens (a PDF page is about 1,500-3,000)."
    ).format(
        input=format_money(billing.user_price(chat.input)),
        output=format_money(billing.user_price(chat.output)),
    )
    band = chat.long_prompt
    if band is not None:
        chat_line += " " + _(
            "An answer to a conversation of more than {tokens} tokens costs {input} and {output} "
            "per million for all its tokens."
        ).format(
            tokens=format_decimal(band.above_tokens, locale=current_locale()),
            input=format_money(billing.user_price(band.rates.input)),
            output=format_money(billing.user_price(band.rates.output)),
        )
    voice_line = _(
        "• Voice: about {price} per minute of audio to transcribe, then the answer as chat."
    ).format(price=format_money(billing.user_price(minute_micros)))
    web_price = _(
        "• Web search: {price} per search, plus the tokens of the results; reading a web page "
        "costs its tokens only."
    ).format(price=format_money(billing.user_price(WEB_SEARCH_MICROS)))
    commands = _(
        "Commands: /new fresh conversation, /balance balance and recent charges, "
        "/usage spending over the last 30 days."
    )
    lines = [intro, *([web_line] if web_on else []), draw_line, *image_lines, chat_line]
    lines += [voice_line, *([web_price] if web_on else []), "", commands]
    await message.answer("\n".join(lines))


async def new_handler(message: Message, conversations: ConversationStore) -> None:
    assert message.from_user is not None
    group_topic = topic_of(message) if is_group_chat(message) else None
    await conversations.end_active(message.from_user.id, message.chat.id, group_topic=group_topic)
    await message.answer(_("Started a fresh conversation. What's next?"))


async def unknown_command_handler(message: Message) -> None:
    await message.answer(_(UNKNOWN_COMMAND_REPLY))


async def unsupported_handler(message: Message) -> object:
    await message.answer(_(UNSUPPORTED_REPLY))
    return IGNORED


def build_router() -> Router:
    router = Router(name="common")
    router.message.register(start_handler, CommandStart())
    router.message.register(help_handler, Command("help"))
    router.message.register(new_handler, Command("new"))
    return router


async def is_command_text(message: Message) -> bool:
    """A coroutine: aiogram runs a filter that is a plain function in a worker thread."""
    return message.text is not None and message.text.startswith("/")


def build_fallback_router() -> Router:
    """Registered last: anything no other router took."""
    router = Router(name="fallback")
    router.message.register(unknown_command_handler, is_command_text)
    router.message.register(unsupported_handler)
    return router
