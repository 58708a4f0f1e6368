"""The fake Telegram's Stars methods, driven by the real aiogram Bot and checked against aiogram's
own types: what the bot sends is parsed by aiogram, what the fake injects is validated by it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import LabeledPrice, StarTransactions, TransactionPartnerUser, Update

from tests.fakes.telegram import FakeTelegram

TOKEN = "123456:TEST-fake-token-not-real"
CHAT = 42


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        fake.add_chat(CHAT, first_name="Alice")
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url)))
    yield bot
    await bot.session.close()


def one_price(stars: int = 50) -> list[LabeledPrice]:
    return [LabeledPrice(label="Stars", amount=stars)]


async def test_send_invoice_returns_a_message_with_the_invoice(tg: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_invoice(
        CHAT, "100 Stars", "Balance top-up", "p:42:abc", currency="XTR", prices=one_price(100)
    )

    assert message.invoice is not None
    assert (message.invoice.currency, message.invoice.total_amount) == ("XTR", 100)
    [invoice] = tg.stars.invoices
    assert invoice.payload == "p:42:abc"
    [call] = tg.calls("sendInvoice")
    assert "provider_token" not in call.params  # aiogram leaves out the empty token


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"currency": "USD"}, "CURRENCY_INVALID"),
        ({"provider_token": "284685063:TEST:abc"}, "PAYMENT_PROVIDER_INVALID"),
        (
            {"prices": [LabeledPrice(label="a", amount=1), LabeledPrice(label="b", amount=2)]},
            "STARS_INVOICE_INVALID",
        ),
        ({"prices": one_price(10001)}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"payload": "x" * 129}, "INVOICE_PAYLOAD_INVALID"),
        ({"title": "t" * 33}, "INVOICE_TITLE_INVALID"),
    ],
)
async def test_invalid_stars_invoices_are_refused_like_telegram(
    tg: FakeTelegram, bot: Bot, kwargs: dict[str, object], error: str
) -> None:
    params: dict[str, object] = {
        "title": "Stars",
        "description": "top-up",
        "payload": "p",
        "currency": "XTR",
        "prices": one_price(),
        **kwargs,
    }
    with pytest.raises(TelegramBadRequest, match=error):
        await bot.send_invoice(CHAT, **params)  # type: ignore[arg-type]
    assert tg.stars.invoices == []


async def test_errors_have_telegrams_body_shape(tg: FakeTelegram) -> None:
    url = f"{tg.base_url}/bot{TOKEN}/sendInvoice"
    body = {
        "chat_id": CHAT,
        "title": "t",
        "description": "d",
        "payload": "p",
        "currency": "EUR",
        "prices": '[{"label": "x", "amount": 5}]',
    }
    async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
        assert response.status == 400
        assert await response.json() == {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: CURRENCY_INVALID",
        }


async def test_pre_checkout_query_is_injected_and_answered_once(tg: FakeTelegram, bot: Bot) -> None:
    query_id = tg.push_pre_checkout(CHAT, 50, "p:42:abc")

    [update] = await bot.get_updates(timeout=0)

    assert isinstance(update, Update)
    query = update.pre_checkout_query
    assert query is not None
    assert (query.id, query.from_user.id, query.total_amount) == (query_id, CHAT, 50)
    assert query.invoice_payload == "p:42:abc"
    with pytest.raises(TelegramBadRequest, match="ERROR_MESSAGE_EMPTY"):
        await bot.answer_pre_checkout_query(query.id, ok=False)
    assert await bot.answer_pre_checkout_query(query.id, ok=True) is True
    assert tg.stars.answers[query_id].ok is True
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_pre_checkout_query(query.id, ok=True)


async def test_successful_payment_is_a_service_message(tg: FakeTelegram, bot: Bot) -> None:
    charge_id = tg.push_successful_payment(CHAT, 100, "p:42:abc")
    tg.push_successful_payment(CHAT, 100, "p:42:abc", charge_id=charge_id)

    first, second = await bot.get_updates(timeout=0)

    assert first.message is not None and second.message is not None
    paid = first.message.successful_payment
    assert paid is not None
    assert (paid.telegram_payment_charge_id, paid.total_amount) == (charge_id, 100)
    assert second.message.successful_payment == paid
    assert first.update_id != second.update_id
    assert len(tg.stars.transactions) == 1


async def test_refund_once_then_charge_already_refunded(tg: FakeTelegram, bot: Bot) -> None:
    charge_id = tg.push_successful_payment(CHAT, 100, "p", deliver=False)

    with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):
        await bot.refund_star_payment(CHAT + 1, charge_id)
    assert await bot.refund_star_payment(CHAT, charge_id) is True
    with pytest.raises(TelegramBadRequest, match="CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(CHAT, charge_id)
    assert tg.stars.refunded(charge_id)


async def test_star_transactions_page_in_order(tg: FakeTelegram, bot: Bot) -> None:
    charges = [tg.push_successful_payment(CHAT, n, f"p{n}", deliver=False) for n in (1, 2, 3)]
    tg.refund_outside(charges[0])

    first = await bot.get_star_transactions(offset=0, limit=3)
    rest = await bot.get_star_transactions(offset=3, limit=100)

    assert isinstance(first, StarTransactions)
    assert [t.id for t in first.transactions] == charges
    [refund] = rest.transactions
    assert refund.id == charges[0]
    assert refund.source is None and isinstance(refund.receiver, TransactionPartnerUser)
    assert isinstance(first.transactions[0].source, TransactionPartnerUser)
    assert first.transactions[0].source.invoice_payload == "p1"
    with pytest.raises(TelegramBadRequest, match="LIMIT_INVALID"):
        await bot.get_star_transactions(limit=101)
