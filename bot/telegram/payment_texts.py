"""What the payment commands say. Every message about money states the exact amount."""

from __future__ import annotations

from bot.services.money import format_usd
from bot.services.payments import (
    CheckoutRefusal,
    Purchase,
    RefundablePurchase,
    RefundResult,
    RefundStatus,
)

BUY_USAGE = "Send /buy to choose a package, or /buy <number of Stars> for 1 to 10000 Stars."
REFUND_MENU = "Which purchase should be refunded? Its Stars go back to you and its credit leaves your balance."
REFUND_WORKING = "Refunding…"
CHECKOUT_REFUSALS = {
    CheckoutRefusal.MALFORMED: "This invoice is not valid any more. Send /buy for a new one.",
    CheckoutRefusal.OTHER_PERSON: "This invoice was made for someone else. Send /buy for your own.",
    CheckoutRefusal.OUT_OF_RANGE: "This amount can't be bought. Send /buy to choose 1 to 10000 Stars.",
    CheckoutRefusal.BLOCKED: "Your account can't make purchases in this bot.",
}


def package_button(stars: int, credit_micros: int) -> str:
    return f"{stars} Stars → {format_usd(credit_micros)}"


def buy_menu(star_micros: int) -> str:
    return (
        "Top up your balance with Telegram Stars. "
        f"Each Star adds {format_usd(star_micros)}. Choose a package, or send /buy <number> "
        "for another amount (1 to 10000 Stars)."
    )


def invoice_title(stars: int) -> str:
    return f"{stars} Stars top-up"


def invoice_label(stars: int) -> str:
    return f"{stars} Stars"


def invoice_description(stars: int, credit_micros: int) -> str:
    return f"Adds {format_usd(credit_micros)} to your balance in this bot ({stars} Stars)."


def receipt(purchase: Purchase) -> str:
    return (
        f"Payment received: {purchase.stars} Stars. {format_usd(purchase.credited_micros)} "
        f"was added to your balance, which is now {format_usd(purchase.balance_micros)}. "
        "/refund returns a purchase you have not used; /paysupport for help."
    )


def refund_button(purchase: RefundablePurchase) -> str:
    day = purchase.created_at.strftime("%d %b")
    return f"{purchase.stars} Stars · {format_usd(purchase.credited_micros)} · {day}"


def nothing_to_refund(window_days: int) -> str:
    return (
        f"There is nothing to refund. A purchase can be refunded within {window_days} days, "
        "if its credit is still in your balance. /paysupport for help."
    )


def refund_result(result: RefundResult) -> str:
    match result.status:
        case RefundStatus.REFUNDED:
            return (
                f"Refunded: {result.stars} Stars are on their way back to you, and "
                f"{format_usd(result.debited_micros)} was taken from your balance, which is now "
                f"{format_usd(result.balance_micros)}."
            )
        case RefundStatus.CREDIT_SPENT:
            return (
                "This purchase can't be refunded: part of its credit has been spent or is in use. "
                "Nothing was changed."
            )
        case RefundStatus.REFUSED:
            return "Telegram did not accept this refund. Nothing was changed. /paysupport for help."
        case RefundStatus.PENDING:
            return (
                "Telegram has not confirmed the refund yet. Its credit is set aside and the refund "
                "will be finished automatically; /balance shows when it is done."
            )
        case _:
            return "This purchase can't be refunded any more. Nothing was changed."
