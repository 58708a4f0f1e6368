"""/model: the person's choice of chat model, shown with its prices as inline buttons."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.config import Settings
from bot.services.billing import BillingService
from bot.services.pricing import PriceTable
from bot.services.reports import format_usd
from bot.services.users import UserService, UserState

MODEL_CALLBACK_PREFIX = "model:"


def effective_model(settings: Settings, state: UserState | None) -> str | None:
    """The person's stored model while it is still offered; None = the default model."""
    if state is None or state.chat_model not in settings.chat_models:
        return None
    return state.chat_model


def model_label(model: str, prices: PriceTable, billing: BillingService) -> str:
    price = prices.token_price(model)
    return (
        f"{model} · {format_usd(billing.user_price(price.input))} in / "
        f"{format_usd(billing.user_price(price.output))} out per 1M tokens"
    )


def model_keyboard(
    settings: Settings, prices: PriceTable, billing: BillingService, current: str
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
    billing: BillingService,
    user_state: UserState,
) -> None:
    current = effective_model(settings, user_state) or settings.CLAUDE_MODEL
    await message.answer(
        f"Current model: {current}. Choose the model for your next answers "
        "(prices are per million tokens, taken from your balance):",
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
        await query.answer("That model is not offered any more. Send /model again.")
        return
    if not await users.set_chat_model(query.from_user.id, model):
        await query.answer()
        return
    await query.answer(f"Model: {model}")
    if isinstance(query.message, Message):
        await query.message.answer(f"Done: your next answers come from {model}.")


async def is_model_choice(query: CallbackQuery) -> bool:
    """A coroutine: aiogram runs a filter that is a plain function in a worker thread."""
    return (query.data or "").startswith(MODEL_CALLBACK_PREFIX)


def build_router() -> Router:
    router = Router(name="preferences")
    router.message.register(model_handler, Command("model"))
    router.callback_query.register(model_chosen_handler, is_model_choice)
    return router
