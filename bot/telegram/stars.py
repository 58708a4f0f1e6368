"""The Bot API side of Stars payments (refundStarPayment, getStarTransactions) for PaymentService."""

from __future__ import annotations

import structlog
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
)
from aiogram.types import StarTransaction as TgStarTransaction
from aiogram.types import TransactionPartnerUser

from bot.services.payments import RefundAnswer, StarPage, StarTransaction

log = structlog.get_logger(__name__)

ALREADY_REFUNDED = "CHARGE_ALREADY_REFUNDED"
REFUND_TIMEOUT_SECONDS = 20.0


class TelegramStars:
    """RefundAnswer.UNKNOWN for anything that is not a definite answer (timeouts, network and
    server errors): the refund stays in progress and is asked again later."""

    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def refund(self, user_id: int, charge_id: str) -> RefundAnswer:
        try:
            await self._bot.refund_star_payment(
                user_id=user_id,
                telegram_payment_charge_id=charge_id,
                request_timeout=int(REFUND_TIMEOUT_SECONDS),
            )
        except TelegramBadRequest as error:
            if ALREADY_REFUNDED in error.message:
                return RefundAnswer.ALREADY_REFUNDED
            log.warning(
                "stars_refund_refused_by_telegram", charge_id=charge_id, error=error.message
            )
            return RefundAnswer.REFUSED
        except (TelegramForbiddenError, TelegramNotFound) as error:
            log.warning(
                "stars_refund_refused_by_telegram", charge_id=charge_id, error=error.message
            )
            return RefundAnswer.REFUSED
        except (TelegramNetworkError, TimeoutError):
            log.warning("stars_refund_no_answer", charge_id=charge_id)
            return RefundAnswer.UNKNOWN
        except Exception:
            log.exception("stars_refund_failed", charge_id=charge_id)
            return RefundAnswer.UNKNOWN
        return RefundAnswer.REFUNDED

    async def transactions(self, offset: int, limit: int) -> StarPage:
        page = await self._bot.get_star_transactions(offset=offset, limit=limit)
        found = (_person_transaction(tx) for tx in page.transactions)
        return StarPage(tuple(tx for tx in found if tx is not None), len(page.transactions))


def _person_transaction(tx: TgStarTransaction) -> StarTransaction | None:
    partner = tx.source if tx.source is not None else tx.receiver
    if not isinstance(partner, TransactionPartnerUser) or partner.transaction_type not in (
        None,
        "invoice_payment",
    ):
        return None
    return StarTransaction(
        charge_id=tx.id,
        user_id=partner.user.id,
        stars=tx.amount,
        payload=partner.invoice_payload,
        incoming=tx.source is not None,
        first_name=partner.user.first_name,
        username=partner.user.username,
    )
