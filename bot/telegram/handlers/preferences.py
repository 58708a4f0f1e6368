"""/model and /language: the person's choices, as inline buttons, stored on their user row."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import I18n

from bot.config import Settings
from bot.i18n import LANGUAGE_NAMES, _, current_locale, format_money
from bot.services.ledger import Ledger
from bot.services.pricing import PriceTable
from bot.services.users import UserService, UserState

MODEL_CALLBACK_PREFIX = "model:"
LANGUAGE_CALLBACK_PREFIX = "lang:"


def effective_model(settings: Settings, state: UserState | None) -> str | None:
    """The person's stored model while it is still offered; None = the default model."""
    if state is None or state.chat_model not in settings.chat_models:
        return None
    return state.chat_model


def model_label(model: str, prices: PriceTable, billing: Ledger) -> str:
    """The model with its prices per million tokens; "from" when long prompts cost more."""
    price = prices.token_price(model)
    label = (
        _("{model} · from {input} in / {output} out per 1M tokens")
        if price.long_prompt is not None
        else _("{model} · {input} in / {output} out per 1M tokens")
    )
    return label.format(
        model=model,
        input=format_money(billing.user_price(price.input)),
        output=format_money(billing.user_price(price.output)),
    )


def model_keyboard(
    settings: Settings, prices: PriceTable, billing: Ledger, current: str
) -> InlineKeyboardMarkup:
    rows = [
        [
            InlineKeyboardButton(
                text=("✓ " if model == current else "") + model_label(model, prices, billing),
                callback_data=MODEL_CALLBACK_PREFIX + model,
            )
        ]
        for model in settings.chat_models
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)


async def model_handler(
    message: Message,
    settings: Settings,
    prices: PriceTable,
    billing: Ledger,
    user_state: UserState,
) -> None:
    current = effective_model(settings, user_state) or settings.CLAUDE_MODEL
    await message.answer(
        _(
            "Current model: {model}. Choose the model for your next answers "
            "(prices are per million tokens, taken from your balance):"
        ).format(model=current),
        reply_markup=model_keyboard(settings, prices, billing, current),
    )


async def model_chosen_handler(
    query: CallbackQuery, settings: Settings, users: UserService
) -> None:
    allowed = set(settings.ALLOWED_USER_IDS) | set(settings.ADMIN_USER_IDS)
    if settings.ALLOWED_USER_IDS and query.from_user.id not in allowed:
        await query.answer()
        return
    model = (query.data or "").removeprefix(MODEL_CALLBACK_PREFIX)
    if model not in settings.chat_models:
        await query.answer(_("That model is not offered any more. Send /model again."))
        return
    if not await users.set_chat_model(query.from_user.id, model):
        await query.answer()
        return
    await query.answer(_("Model: {model}").format(model=model))
    if isinstance(query.message, Message):
        await query.message.answer(
            _("Done: your next answers come from {model}.").format(model=model)
        )


def language_keyboard(current: str) -> InlineKeyboardMarkup:
    rows = [
        [
            InlineKeyboardButton(
                text=("✓ " if locale == current else "") + name,
                callback_data=LANGUAGE_CALLBACK_PREFIX + locale,
            )
        ]
        for locale, name in LANGUAGE_NAMES.items()
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)


async def language_handler(message: Message) -> None:
    await message.answer(
        _("Choose your language:"), reply_markup=language_keyboard(current_locale())
    )


async def language_chosen_handler(query: CallbackQuery, users: UserService, i18n: I18n) -> None:
    locale = (query.data or "").removeprefix(LANGUAGE_CALLBACK_PREFIX)
    if locale not in LANGUAGE_NAMES or not await users.set_locale(query.from_user.id, locale):
        await query.answer()
        return
    with i18n.use_locale(locale):
        await query.answer(LANGUAGE_NAMES[locale])
        if isinstance(query.message, Message):
            await query.message.answer(_("Done: I will speak English with you."))


async def is_language_choice(query: CallbackQuery) -> bool:
    """A coroutine: aiogram runs a filter that is a plain function in a worker thread."""
    return (query.data or "").startswith(LANGUAGE_CALLBACK_PREFIX)


async def is_model_choice(query: CallbackQuery) -> bool:
    """A coroutine: aiogram runs a filter that is a plain function in a worker thread."""
    return (query.data or "").startswith(MODEL_CALLBACK_PREFIX)


def build_router() -> Router:
    router = Router(name="preferences")
    router.message.register(model_handler, Command("model"))
    router.callback_query.register(model_chosen_handler, is_model_choice)
    router.message.register(language_handler, Command("language"))
    router.callback_query.register(language_chosen_handler, is_language_choice)
    return router
