"""What the payment commands say. Every message about money states the exact amount."""

from __future__ import annotations

from bot.i18n import N_, _, format_moment, format_money, ngettext
from bot.services.payments import (
    CheckoutRefusal,
    Purchase,
    RefundablePurchase,
    RefundResult,
    RefundStatus,
)

BUY_USAGE = N_("Send /buy to choose a package, or /buy <number of Stars> for 1 to 10000 Stars.")
REFUND_MENU = N_(
    "Which purchase should be refunded? Its Stars go back to you and its credit leaves your balance."
)
REFUND_WORKING = N_("Refunding…")
CHECKOUT_REFUSALS = {
    CheckoutRefusal.MALFORMED: N_("This invoice is not valid any more. Send /buy for a new one."),
    CheckoutRefusal.OTHER_PERSON: N_(
        "This invoice was made for someone else. Send /buy for your own."
    ),
    CheckoutRefusal.OUT_OF_RANGE: N_(
        "This amount can't be bought. Send /buy to choose 1 to 10000 Stars."
    ),
    CheckoutRefusal.BLOCKED: N_("Your account can't make purchases in this bot."),
}
_REFUND_OUTCOMES = {
    RefundStatus.CREDIT_SPENT: N_(
        "This purchase can't be refunded: part of its credit has been spent or is in use. "
        "Nothing was changed."
    ),
    RefundStatus.REFUSED: N_(
        "Telegram did not accept this refund. Nothing was changed. /paysupport for help."
    ),
    RefundStatus.PENDING: N_(
        "Telegram has not confirmed the refund yet. Its credit is set aside and the refund "
        "will be finished automatically; /balance shows when it is done."
    ),
}
_NOT_REFUNDABLE = N_("This purchase can't be refunded any more. Nothing was changed.")


def checkout_refusal(refusal: CheckoutRefusal) -> str:
    return _(CHECKOUT_REFUSALS[refusal])


def package_button(stars: int, credit_micros: int) -> str:
    text = ngettext("{stars} Stars → {credit}", "{stars} Stars → {credit}", stars)
    return text.format(stars=stars, credit=format_money(credit_micros))


def buy_menu(star_micros: int) -> str:
    return _(
        "Top up your balance with Telegram Stars. Each Star adds {amount}. Choose a package, "
        "or send /buy <number> for another amount (1 to 10000 Stars)."
    ).format(amount=format_money(star_micros))


def invoice_title(stars: int) -> str:
    return ngettext("{stars} Stars top-up", "{stars} Stars top-up", stars).format(stars=stars)


def invoice_label(stars: int) -> str:
    return ngettext("{stars} Stars", "{stars} Stars", stars).format(stars=stars)


def invoice_description(stars: int, credit_micros: int) -> str:
    text = ngettext(
        "Adds {amount} to your balance in this bot ({stars} Stars).",
        "Adds {amount} to your balance in this bot ({stars} Stars).",
        stars,
    )
    return text.format(amount=format_money(credit_micros), stars=stars)


def receipt(purchase: Purchase) -> str:
    text = ngettext(
        "Payment received: {stars} Stars. {credited} was added to your balance, which is now "
        "{balance}. /refund returns a purchase you have not used; /paysupport for help.",
        "Payment received: {stars} Stars. {credited} was added to your balance, which is now "
        "{balance}. /refund returns a purchase you have not used; /paysupport for help.",
        purchase.stars,
    )
    return text.format(
        stars=purchase.stars,
        credited=format_money(purchase.credited_micros),
        balance=format_money(purchase.balance_micros),
    )


def refund_button(purchase: RefundablePurchase) -> str:
    text = ngettext(
        "{stars} Stars · {credit} · {day}", "{stars} Stars · {credit} · {day}", purchase.stars
    )
    return text.format(
        stars=purchase.stars,
        credit=format_money(purchase.credited_micros),
        day=format_moment(purchase.created_at, "dd MMM"),
    )


def nothing_to_refund(window_days: int) -> str:
    text = ngettext(
        "There is nothing to refund. A purchase can be refunded within {days} days, "
        "if its credit is still in your balance. /paysupport for help.",
        "There is nothing to refund. A purchase can be refunded within {days} days, "
        "if its credit is still in your balance. /paysupport for help.",
        window_days,
    )
    return text.format(days=window_days)


def refund_result(result: RefundResult) -> str:
    if result.status is RefundStatus.REFUNDED:
        return refunded(result)
    return _(_REFUND_OUTCOMES.get(result.status, _NOT_REFUNDABLE))


def refunded(result: RefundResult) -> str:
    text = ngettext(
        "Refunded: {stars} Stars are on their way back to you, and {debited} was taken from "
        "your balance, which is now {balance}.",
        "Refunded: {stars} Stars are on their way back to you, and {debited} was taken from "
        "your balance, which is now {balance}.",
        result.stars,
    )
    return text.format(
        stars=result.stars,
        debited=format_money(result.debited_micros),
        balance=format_money(result.balance_micros),
    )
