"""/balance, /usage and the admin commands, end to end: one bot process for the whole file."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.session import create_sessionmaker
from bot.services.ledger import CallRecord, Ledger
from tests.e2e.conftest import Running, module_bot
from tests.fakes.telegram import FakeTelegram, command_entities
from tests.pg import TestPostgres

ADMIN_ID = 900_001
TOPUP_USAGE = "Usage: /topup <user_id> <usd>, a positive amount up to $10000 (e.g. /topup 12345 5)"
USER_USAGE = "Usage: /user <user_id> (e.g. /user 12345)"
STATS_USAGE = "Usage: /stats (no arguments)"


@pytest.fixture(scope="module")
async def running(
    test_postgres: TestPostgres, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    async with module_bot(
        test_postgres,
        tmp_path_factory.mktemp("billing-commands"),
        ADMIN_USER_IDS=str(ADMIN_ID),
        RATE_LIMIT_MESSAGES_PER_MINUTE="1000",
    ) as bot:
        yield bot


async def ask(telegram: FakeTelegram, user_id: int, message: str, **options: Any) -> str:
    """Send a message and return the bot's next reply in that chat."""
    before = len(telegram.sent(user_id))
    telegram.push_text(user_id, message, **options)
    sent = await telegram.wait_for_sent(user_id, before + 1, timeout=20)
    return sent[before].text or ""


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """For conditions outside the fake's state, such as the bot's log."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def seed_call(
    engine: AsyncEngine,
    user_id: int,
    purpose: str,
    *,
    charged: int,
    provider_cost: int | None = None,
    images: int = 0,
    status: str = "ok",
    age: timedelta = timedelta(0),
) -> None:
    provider = "anthropic" if purpose != "generate_image" else "google"
    model = "claude-sonnet-5-5" if provider == "anthropic" else "gemini-3-pro-image"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO api_calls (user_id, provider, model, purpose, status, image_count, "
                "provider_cost_micros, charged_micros, created_at) "
                "VALUES (:user_id, :provider, :model, :purpose, :status, :images, :cost, "
                ":charged, now() - CAST(:age AS interval))"
            ),
            {
                "user_id": user_id,
                "provider": provider,
                "model": model,
                "purpose": purpose,
                "status": status,
                "images": images,
                "cost": charged if provider_cost is None else provider_cost,
                "charged": charged,
                "age": age,
            },
        )


async def test_balance_shows_starter_credit_and_topup(running: Running) -> None:
    telegram, engine = running.telegram, running.engine
    await ask(telegram, 1001, "/start")

    reply = await ask(telegram, ADMIN_ID, "/topup 1001 5")
    assert reply == "Topped up 1001 by $5.00. New balance: $5.50."
    notices = await telegram.wait_for_sent(1001, 2, timeout=10)
    assert notices[1].text == "Your balance was topped up by $5.00. New balance: $5.50."

    balance = await ask(telegram, 1001, "/balance")
    lines = balance.splitlines()
    assert lines[0] == "Your balance: $5.50"
    assert "Reserved" not in balance
    assert lines[2] == "Recent operations (UTC):"
    assert lines[3].endswith(" · Top-up · +$5.00")
    assert lines[4].endswith(" · Welcome credit · +$0.50")
    assert len(lines) == 5
    assert await scalar(engine, "SELECT balance_micros FROM users WHERE id = 1001") == 5_500_000


async def test_balance_shows_reserved_amount_and_charges_in_words(running: Running) -> None:
    telegram, engine = running.telegram, running.engine
    await ask(telegram, 1006, "/start")
    billing = Ledger(
        create_sessionmaker(engine), markup=Decimal("1.0"), hold_ttl=timedelta(minutes=15)
    )
    hold = await billing.hold(1006, 134_000, key="test:hold:1006")
    reply = await ask(telegram, 1006, "/balance")
    assert reply.splitlines()[:2] == [
        "Your balance: $0.3660",
        "Reserved for work in progress: $0.1340",
    ]
    await billing.release(hold, reason="test")

    for purpose, cost in (("chat", 12_345), ("generate_image", 134_000)):
        spend = await billing.hold(1006, cost, key=f"test:{purpose}:1006")
        call = CallRecord(
            user_id=1006,
            provider="anthropic" if purpose == "chat" else "google",
            model="some-model",
            purpose=purpose,
            status="ok",
            provider_cost_micros=cost,
        )
        await billing.settle(spend, call)
    lines = (await ask(telegram, 1006, "/balance")).splitlines()
    assert lines[0] == "Your balance: $0.353655"
    assert lines[3].endswith(" · Image generation · -$0.1340")
    assert lines[4].endswith(" · Chat · -$0.012345")
    assert lines[5].endswith(" · Welcome credit · +$0.50")


async def test_usage_sums_the_last_30_days_by_category(running: Running) -> None:
    telegram, engine = running.telegram, running.engine
    await ask(telegram, 1002, "/start")
    assert (await ask(telegram, 1002, "/usage")).splitlines() == [
        "Spending in the last 30 days:",
        "• Chat: $0.00",
        "• Image analysis: $0.00 (0 images)",
        "• Image generation: $0.00 (0 images)",
        "• Voice transcription: $0.00",
        "• Document reading: $0.00",
        "Total: $0.00",
    ]

    await seed_call(engine, 1002, "chat", charged=10_000)
    await seed_call(engine, 1002, "chat", charged=2_345, age=timedelta(days=29))
    await seed_call(engine, 1002, "analyze_image", charged=20_000, images=1)
    await seed_call(engine, 1002, "generate_image", charged=134_000, images=1)
    await seed_call(engine, 1002, "generate_image", charged=134_000, images=1)
    await seed_call(engine, 1002, "generate_image", charged=0, status="error")
    await seed_call(engine, 1002, "generate_image", charged=134_000, images=1, age=timedelta(31))
    await seed_call(engine, 1001, "generate_image", charged=134_000, images=1)
    await seed_call(engine, 1002, "transcribe", charged=1_000)

    assert (await ask(telegram, 1002, "/usage")).splitlines() == [
        "Spending in the last 30 days:",
        "• Chat: $0.012345",
        "• Image analysis: $0.02 (1 image)",
        "• Image generation: $0.2680 (2 images)",
        "• Voice transcription: $0.0010",
        "• Document reading: $0.00",
        "Total: $0.301345",
    ]


def raw_command(
    update_id: int, user_id: int, message_text: str, chat: dict[str, Any]
) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "from": {"id": user_id, "is_bot": False, "first_name": "Boss", "username": "boss"},
            "chat": chat,
            "date": int(time.time()),
            "text": message_text,
            "entities": command_entities(message_text),
        },
    }


async def test_topup_credits_once_when_the_update_is_delivered_twice(running: Running) -> None:
    telegram, engine, bot = running.telegram, running.engine, running.bot
    await ask(telegram, 1003, "/start")
    admin_replies = len(telegram.sent(ADMIN_ID))
    chat = telegram.add_chat(ADMIN_ID, first_name="Boss", username="boss")
    raw = raw_command(777_000, ADMIN_ID, "/topup 1003 2.5", chat)

    telegram.push_update(raw)
    replies = await telegram.wait_for_sent(ADMIN_ID, admin_replies + 1, timeout=20)
    assert replies[-1].text == "Topped up 1003 by $2.50. New balance: $3.00."
    duplicates = bot.log_text().count("duplicate_update_ignored")
    telegram.push_update(raw)
    await wait_until(lambda: bot.log_text().count("duplicate_update_ignored") > duplicates)

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT amount_micros, admin_user_id, idempotency_key, balance_after_micros "
                    "FROM balance_operations WHERE user_id = 1003 AND kind = 'topup'"
                )
            )
        ).all()
    assert [tuple(row) for row in rows] == [(2_500_000, ADMIN_ID, "topup:admin:777000", 3_000_000)]
    assert await scalar(engine, "SELECT balance_micros FROM users WHERE id = 1003") == 3_000_000
    assert [item.text for item in telegram.sent(1003)][1:] == [
        "Your balance was topped up by $2.50. New balance: $3.00."
    ]


async def test_ledger_key_stops_a_second_credit_even_past_the_inbox(running: Running) -> None:
    """If the inbox lost the update's record, the ledger key still refuses a second credit."""
    telegram, engine = running.telegram, running.engine
    await ask(telegram, 1007, "/start")
    chat = telegram.add_chat(ADMIN_ID, first_name="Boss", username="boss")
    raw = raw_command(778_000, ADMIN_ID, "/topup 1007 1", chat)
    for _ in range(2):
        before = len(telegram.sent(ADMIN_ID))
        telegram.push_update(raw)
        replies = await telegram.wait_for_sent(ADMIN_ID, before + 1, timeout=20)
        assert replies[-1].text == "Topped up 1007 by $1.00. New balance: $1.50."
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM inbound_updates WHERE update_id = 778000"))
    count = "SELECT count(*) FROM balance_operations WHERE user_id = 1007 AND kind = 'topup'"
    assert await scalar(engine, count) == 1
    assert await scalar(engine, "SELECT balance_micros FROM users WHERE id = 1007") == 1_500_000


async def test_topup_with_the_bot_username_and_six_decimals(running: Running) -> None:
    telegram, engine = running.telegram, running.engine
    await ask(telegram, 1005, "/start")
    reply = await ask(telegram, ADMIN_ID, "/topup@fake_bot  1005   0.000001")
    assert reply == "Topped up 1005 by $0.000001. New balance: $0.500001."
    assert await scalar(engine, "SELECT balance_micros FROM users WHERE id = 1005") == 500_001


async def test_topup_of_an_unknown_user_is_refused(running: Running) -> None:
    telegram, engine = running.telegram, running.engine
    reply = await ask(telegram, ADMIN_ID, "/topup 5555 5")
    assert reply == "No user with id 5555. They need to message the bot first."
    assert await scalar(engine, "SELECT count(*) FROM users WHERE id = 5555") == 0
    assert await scalar(engine, "SELECT count(*) FROM balance_operations WHERE user_id = 5555") == 0


@pytest.mark.parametrize(
    ("command", "hint"),
    [
        ("/topup", TOPUP_USAGE),
        ("/topup 1001", TOPUP_USAGE),
        ("/topup abc 5", TOPUP_USAGE),
        ("/topup 1001 abc", TOPUP_USAGE),
        ("/topup 1001 -5", TOPUP_USAGE),
        ("/topup 1001 0", TOPUP_USAGE),
        ("/topup 1001 0.0000001", TOPUP_USAGE),
        ("/topup 1001 10000.01", TOPUP_USAGE),
        ("/topup 1001 NaN", TOPUP_USAGE),
        ("/topup 1001 1e3", TOPUP_USAGE),
        ("/topup 1001 5 6", TOPUP_USAGE),
        ("/topup -1001 5", TOPUP_USAGE),
        ("/topup 1001 ５", TOPUP_USAGE),
        ("/user", USER_USAGE),
        ("/user abc", USER_USAGE),
        ("/user 1001 1002", USER_USAGE),
        ("/user 99999999999999999999", USER_USAGE),
        ("/stats now", STATS_USAGE),
    ],
)
async def test_bad_arguments_get_a_usage_hint(running: Running, command: str, hint: str) -> None:
    telegram, engine = running.telegram, running.engine
    ledger = "SELECT count(*) FROM balance_operations"
    rows_before = await scalar(engine, ledger)
    assert await ask(telegram, ADMIN_ID, command) == hint
    assert await scalar(engine, ledger) == rows_before


async def test_user_shows_balance_spend_images_and_activity(running: Running) -> None:
    telegram, engine = running.telegram, running.engine
    await ask(telegram, 1004, "/start", first_name="Dora", username="dora")
    await ask(telegram, ADMIN_ID, "/topup 1004 1")
    await seed_call(engine, 1004, "chat", charged=10_000, provider_cost=8_000)
    await seed_call(
        engine, 1004, "generate_image", charged=160_800, provider_cost=134_000, images=1
    )
    await seed_call(engine, 1004, "chat", charged=1_200, provider_cost=1_000, age=timedelta(20))
    last = await scalar(engine, "SELECT max(created_at) FROM api_calls WHERE user_id = 1004")

    lines = (await ask(telegram, ADMIN_ID, "/user 1004")).splitlines()
    assert lines[:5] == [
        "User 1004 (@dora, Dora)",
        "Balance: $1.50",
        "Credited in total: $1.50",
        "Spent: $0.1720 (provider cost $0.1430)",
        "API calls: 3, images generated: 1",
    ]
    assert lines[5].startswith("Joined: ")
    assert lines[6] == f"Last activity: {last.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    assert await ask(telegram, ADMIN_ID, "/user 4242") == "No user with id 4242."


_WINDOW = re.compile(
    r"(?P<label>Today|7 days|30 days): (?P<calls>\d+) calls, (?P<users>\d+) active users\n"
    r"Charged \$(?P<charged>[\d.]+), provider cost \$(?P<cost>[\d.]+), "
    r"margin (?P<margin>-?\$[\d.]+)"
)


def parse_stats(reply: str) -> tuple[int, dict[str, tuple[int, int, Decimal, Decimal]]]:
    users = int(reply.splitlines()[0].removeprefix("Users: "))
    windows = {
        m["label"]: (int(m["calls"]), int(m["users"]), Decimal(m["charged"]), Decimal(m["cost"]))
        for m in _WINDOW.finditer(reply)
    }
    assert len(windows) == 3, reply
    return users, windows


async def test_stats_show_users_and_spend_per_window(running: Running) -> None:
    telegram, engine = running.telegram, running.engine
    users_before, before = parse_stats(await ask(telegram, ADMIN_ID, "/stats"))
    await ask(telegram, 1010, "/start")
    await ask(telegram, 1011, "/start")
    await seed_call(engine, 1010, "chat", charged=12_000, provider_cost=10_000)
    await seed_call(engine, 1011, "generate_image", charged=160_800, provider_cost=134_000)
    await seed_call(engine, 1010, "chat", charged=3_000, provider_cost=2_500, age=timedelta(3))
    await seed_call(engine, 1011, "chat", charged=500, provider_cost=400, age=timedelta(20))
    await seed_call(engine, 1011, "chat", charged=900, provider_cost=700, age=timedelta(40))

    reply = await ask(telegram, ADMIN_ID, "/stats@fake_bot")
    users_after, after = parse_stats(reply)
    assert users_after - users_before == 2
    expected = {
        "Today": (2, 2, Decimal("0.1728"), Decimal("0.144")),
        "7 days": (3, 2, Decimal("0.1758"), Decimal("0.1465")),
        "30 days": (4, 2, Decimal("0.1763"), Decimal("0.1469")),
    }
    for label, (calls, active, charged, cost) in expected.items():
        assert after[label][0] - before[label][0] == calls
        assert after[label][2] - before[label][2] == charged
        assert after[label][3] - before[label][3] == cost
        assert after[label][1] >= active
    assert "margin $" in reply
