"""/buy, the pre-checkout and the successful payment, /refund, and /paysupport /terms /privacy.

Thin: the money is moved by bot.services.payments; the words are in bot.telegram.payment_texts.
"""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
    PreCheckoutQuery,
)

from bot.config import Settings
from bot.i18n import _
from bot.services.payments import (
    MAX_STARS,
    MIN_STARS,
    Order,
    PaymentService,
    StarsApi,
)
from bot.services.users import UserState
from bot.telegram import payment_texts as say
from bot.telegram.notices import BUY_MENU_CALLBACK
from bot.texts import Texts


class BuyStars(CallbackData, prefix="buy"):
    stars: int


class RefundPurchase(CallbackData, prefix="refund"):
    payment_id: int


def buy_keyboard(payments: PaymentService, packages: list[int]) -> InlineKeyboardMarkup:
    """One button per package, showing what it credits ("100 Stars → $1.30")."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=say.package_button(stars, payments.credit_for(stars)),
                    callback_data=BuyStars(stars=stars).pack(),
                )
            ]
            for stars in packages
        ]
    )


async def send_invoice(bot: Bot, chat_id: int, user_id: int, stars: int, credit: int) -> None:
    order = Order.new(user_id, stars)
    await bot.send_invoice(
        chat_id,
        title=say.invoice_title(stars),
        description=say.invoice_description(stars, credit),
        payload=order.payload,
        currency="XTR",
        prices=[LabeledPrice(label=say.invoice_label(stars), amount=stars)],
    )


async def buy_handler(
    message: Message,
    command: CommandObject,
    bot: Bot,
    payments: PaymentService,
    settings: Settings,
) -> None:
    assert message.from_user is not None
    if not command.args:
        await message.answer(
            say.buy_menu(payments.credit_for(1)),
            reply_markup=buy_keyboard(payments, settings.STAR_PACKAGES),
        )
        return
    arg = command.args.strip()
    if not arg.isdigit() or not MIN_STARS <= int(arg) <= MAX_STARS:
        await message.answer(_(say.BUY_USAGE))
        return
    stars = int(arg)
    await send_invoice(
        bot, message.chat.id, message.from_user.id, stars, payments.credit_for(stars)
    )


async def buy_menu_button_handler(
    query: CallbackQuery, payments: PaymentService, settings: Settings
) -> None:
    """The /buy button under the low-balance notice."""
    await query.answer()
    if query.message is not None:
        await query.message.answer(
            say.buy_menu(payments.credit_for(1)),
            reply_markup=buy_keyboard(payments, settings.STAR_PACKAGES),
        )


async def buy_button_handler(
    query: CallbackQuery, callback_data: BuyStars, bot: Bot, payments: PaymentService
) -> None:
    await query.answer()
    if query.message is None or not MIN_STARS <= callback_data.stars <= MAX_STARS:
        return
    stars = callback_data.stars
    credit = payments.credit_for(stars)
    await send_invoice(bot, query.message.chat.id, query.from_user.id, stars, credit)


async def pre_checkout_handler(query: PreCheckoutQuery, payments: PaymentService) -> None:
    refusal = await payments.check_checkout(
        query.from_user.id, query.invoice_payload, query.currency, query.total_amount
    )
    if refusal is None:
        await query.answer(ok=True)
    else:
        await query.answer(ok=False, error_message=say.checkout_refusal(refusal))


async def successful_payment_handler(message: Message, payments: PaymentService) -> None:
    paid = message.successful_payment
    assert paid is not None
    assert message.from_user is not None
    purchase = await payments.credit(
        message.from_user.id,
        paid.telegram_payment_charge_id,
        paid.total_amount,
        paid.invoice_payload,
        first_name=message.from_user.first_name,
        username=message.from_user.username,
    )
    if purchase.applied:
        await message.answer(say.receipt(purchase))


async def refund_handler(message: Message, payments: PaymentService) -> None:
    assert message.from_user is not None
    purchases = await payments.refundable(message.from_user.id)
    if not purchases:
        await message.answer(say.nothing_to_refund(payments.config.refund_window.days))
        return
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=say.refund_button(purchase),
                    callback_data=RefundPurchase(payment_id=purchase.payment_id).pack(),
                )
            ]
            for purchase in purchases
        ]
    )
    await message.answer(_(say.REFUND_MENU), reply_markup=keyboard)


async def refund_button_handler(
    query: CallbackQuery,
    callback_data: RefundPurchase,
    payments: PaymentService,
    stars_api: StarsApi,
) -> None:
    await query.answer(_(say.REFUND_WORKING))
    result = await payments.refund(query.from_user.id, callback_data.payment_id, stars_api)
    if query.message is not None:
        await query.message.answer(say.refund_result(result))


async def paysupport_handler(
    message: Message, texts: Texts, user_state: UserState | None = None
) -> None:
    await message.answer(texts.get("paysupport", _language(message, user_state)))


async def terms_handler(
    message: Message, texts: Texts, user_state: UserState | None = None
) -> None:
    await message.answer(texts.get("terms", _language(message, user_state)))


async def privacy_handler(
    message: Message, texts: Texts, user_state: UserState | None = None
) -> None:
    await message.answer(texts.get("privacy", _language(message, user_state)))


def _language(message: Message, user_state: UserState | None) -> str | None:
    """As for every message: the /language choice, else Telegram's language_code (an operator's
    text may exist for a language without a catalog, such as terms.de.md), else English."""
    if user_state is not None and user_state.locale:
        return user_state.locale
    return message.from_user.language_code if message.from_user else None


async def is_successful_payment(message: Message) -> bool:
    """A coroutine, not aiogram's magic filter: aiogram runs a plain function (the magic
    filter's `resolve` is one) in a worker thread, and this one sees every text message."""
    return message.successful_payment is not None


async def is_buy_menu_button(query: CallbackQuery) -> bool:
    return query.data == BUY_MENU_CALLBACK


def build_router() -> Router:
    router = Router(name="payments")
    router.message.register(buy_handler, Command("buy"))
    router.message.register(refund_handler, Command("refund"))
    router.message.register(paysupport_handler, Command("paysupport"))
    router.message.register(terms_handler, Command("terms"))
    router.message.register(privacy_handler, Command("privacy"))
    router.message.register(successful_payment_handler, is_successful_payment)
    router.pre_checkout_query.register(pre_checkout_handler)
    router.callback_query.register(buy_button_handler, BuyStars.filter())
    router.callback_query.register(buy_menu_button_handler, is_buy_menu_button)
    router.callback_query.register(refund_button_handler, RefundPurchase.filter())
    return router
