"""Admin commands do not exist for anyone but an admin: the reply is the unknown-command reply,
byte for byte, and no balance moves. One bot process for the whole file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import Running, module_bot
from tests.fakes.telegram import FakeTelegram, SentItem
from tests.pg import TestPostgres

ADMIN_ID = 900_001
OTHER_ADMIN_ID = 900_005
VICTIM_ID = 800_001
REFERENCE_ID = 800_000
UNKNOWN_COMMAND_REPLY = "I don't know that command. /help lists what I can do."


@pytest.fixture(scope="module")
async def running(
    test_postgres: TestPostgres, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    async with module_bot(
        test_postgres,
        tmp_path_factory.mktemp("admin-access"),
        ADMIN_USER_IDS=f"{ADMIN_ID}, {OTHER_ADMIN_ID}",
    ) as bot:
        yield bot


def fingerprint(item: SentItem) -> tuple[Any, ...]:
    """Everything a user can see of a reply."""
    return (
        item.method,
        item.text,
        item.entities,
        item.parse_mode,
        item.reply_markup,
        item.caption,
        item.photo,
        item.document,
    )


async def ask(telegram: FakeTelegram, user_id: int, message: str, **options: Any) -> SentItem:
    before = len(telegram.sent(user_id))
    telegram.push_text(user_id, message, **options)
    return (await telegram.wait_for_sent(user_id, before + 1, timeout=20))[before]


async def rows(engine: AsyncEngine, sql: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(sql))).all()]


async def assert_no_money_moved(engine: AsyncEngine) -> None:
    assert await rows(engine, "SELECT kind FROM balance_operations WHERE kind <> 'starter'") == []
    assert (
        await rows(
            engine, "SELECT id FROM users WHERE balance_micros <> 500000 OR held_micros <> 0"
        )
        == []
    )
    assert await rows(engine, "SELECT update_id FROM inbound_updates WHERE status = 'failed'") == []


async def wait_until(condition: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Attempt:
    sender: int
    message: str
    options: tuple[tuple[str, Any], ...] = ()


def attempts_from_strangers() -> list[Attempt]:
    """Each from its own chat, so they can all run at once."""
    messages = [
        f"/topup {VICTIM_ID} 5",
        "/topup {self} 5",
        f"/topup {ADMIN_ID} 5",
        f"/topup@fake_bot {VICTIM_ID} 5",
        f"/topup@other_bot {VICTIM_ID} 5",
        f"/TOPUP {VICTIM_ID} 5",
        f"/Topup {VICTIM_ID} 5",
        f"/topup   {VICTIM_ID}    5",
        f"/topup {VICTIM_ID} -5",
        f"/topup {VICTIM_ID} 0",
        f"/topup {VICTIM_ID} abc",
        f"/topup\n{VICTIM_ID} 5",
        "/topup",
        f"/user {VICTIM_ID}",
        f"/user@fake_bot {ADMIN_ID}",
        "/user",
        "/stats",
        "/stats@fake_bot",
        "/STATS",
    ]
    attempts = [Attempt(800_100 + i, m) for i, m in enumerate(messages)]
    attempts += [
        Attempt(800_200, f"/topup {VICTIM_ID} 5", (("forward", True),)),
        Attempt(800_201, "/stats", (("forward", True),)),
        Attempt(800_202, f"/topup {VICTIM_ID} 5", (("username", "boss"), ("first_name", "Boss"))),
        Attempt(800_203, f"/topup {VICTIM_ID} 5", (("entities", []),)),
        Attempt(9_000_010, f"/topup {VICTIM_ID} 5"),
        Attempt(90_000, "/stats"),
        Attempt(ADMIN_ID + 1, f"/user {VICTIM_ID}"),
        Attempt(ADMIN_ID - 1, f"/topup {ADMIN_ID} 5"),
    ]
    return attempts


async def test_admin_commands_from_non_admins_look_unknown(running: Running) -> None:
    telegram, engine = running.telegram, running.engine
    await ask(telegram, VICTIM_ID, "/start")
    reference = await ask(telegram, REFERENCE_ID, "/nonsense")
    assert reference.text == UNKNOWN_COMMAND_REPLY

    attempts = attempts_from_strangers()
    assert len(attempts) >= 20
    assert len({a.sender for a in attempts}) == len(attempts)
    for attempt in attempts:
        message = attempt.message.replace("{self}", str(attempt.sender))
        telegram.push_text(attempt.sender, message, **dict(attempt.options))
    for attempt in attempts:
        [reply] = await telegram.wait_for_sent(attempt.sender, 1, timeout=20)
        assert fingerprint(reply) == fingerprint(reference), attempt
    await assert_no_money_moved(engine)


async def test_commands_an_admin_did_not_type_are_unknown_too(running: Running) -> None:
    """A forwarded command, another bot's command or the wrong case is not an admin command."""
    telegram, engine = running.telegram, running.engine
    reference = await ask(telegram, REFERENCE_ID, "/nonsense")
    for message, options in [
        (f"/topup {VICTIM_ID} 5", {"forward": True}),
        (f"/topup@other_bot {VICTIM_ID} 5", {}),
        (f"/TOPUP {VICTIM_ID} 5", {}),
        ("/Stats", {}),
    ]:
        reply = await ask(telegram, ADMIN_ID, message, username="boss", **options)
        assert fingerprint(reply) == fingerprint(reference), message
    await assert_no_money_moved(engine)


async def test_edited_and_group_messages_get_no_reply(running: Running) -> None:
    telegram, engine = running.telegram, running.engine
    for sender in (ADMIN_ID, 800_300):
        await ask(telegram, sender, "/nonsense")
    replies_before = {chat: len(telegram.sent(chat)) for chat in (ADMIN_ID, 800_300, -100_777)}
    edited = [
        telegram.push_text(sender, f"/topup {VICTIM_ID} 5", edited=True)
        for sender in (ADMIN_ID, 800_300)
    ]
    in_group = telegram.push_text(ADMIN_ID, f"/topup {VICTIM_ID} 5", chat_id=-100_777)

    async def group_update_ignored() -> bool:
        sql = f"SELECT status FROM inbound_updates WHERE update_id = {in_group}"
        return await rows(engine, sql) == [("ignored",)]

    await wait_until(group_update_ignored)
    for sender in (ADMIN_ID, 800_300):
        sentinel = await ask(telegram, sender, "/nonsense")
        assert sentinel.text == UNKNOWN_COMMAND_REPLY
    assert {chat: len(telegram.sent(chat)) for chat in replies_before} == {
        ADMIN_ID: replies_before[ADMIN_ID] + 1,
        800_300: replies_before[800_300] + 1,
        -100_777: 0,
    }
    recorded = await rows(engine, "SELECT update_id FROM inbound_updates")
    assert not {update_id for (update_id,) in recorded} & set(edited)
    await assert_no_money_moved(engine)


async def test_admins_are_recognised_by_id_in_the_same_process(running: Running) -> None:
    """The control: the very commands refused above work for the configured admins."""
    telegram, engine = running.telegram, running.engine
    reply = await ask(telegram, ADMIN_ID, f"/topup {VICTIM_ID} 1", username="boss")
    assert reply.text == f"Topped up {VICTIM_ID} by $1.00. New balance: $1.50."
    reply = await ask(telegram, OTHER_ADMIN_ID, f"/topup@fake_bot {VICTIM_ID} 0.25")
    assert reply.text == f"Topped up {VICTIM_ID} by $0.25. New balance: $1.75."
    stats = await ask(telegram, ADMIN_ID, "/stats")
    assert (stats.text or "").startswith("Users: ")
    ledger = await rows(
        engine,
        f"SELECT admin_user_id, amount_micros FROM balance_operations "
        f"WHERE user_id = {VICTIM_ID} AND kind = 'topup' ORDER BY id",
    )
    assert ledger == [(ADMIN_ID, 1_000_000), (OTHER_ADMIN_ID, 250_000)]
