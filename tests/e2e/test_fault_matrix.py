"""The fault matrix: Gemini, Files API and Telegram faults inside real turns of one bot process.

Every case: the person gets a clear reply, the balance moves by exactly what was delivered (from
the api_calls rows), no hold stays open, the person's message stays in the conversation, and the
number of attempts at the failing provider is bounded and asserted. One bot process serves the
whole module; each case is its own user, and the fakes are re-scripted between cases.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.session import create_engine
from tests.e2e.conftest import assert_no_leaks
from tests.e2e.test_chat import (
    final_texts,
    last_user_text,
    open_holds,
    rows,
    scalar,
    wait_update_finished,
)
from tests.e2e.test_chat_failures import FAILURES as CLAUDE_FAILURES
from tests.e2e.test_images import BLOCKED_CASES, last_image_cost, png, result_text
from tests.fakes.anthropic import (
    FakeAnthropic,
    RecordedRequest,
    Reply,
    text_reply,
    tool_use_reply,
)
from tests.fakes.gemini import ApiError, Delay, FakeGemini, image_reply, raw_bytes_reply
from tests.fakes.telegram import FakeTelegram, RequestRecord
from tests.harness import FAKE_BOT_TOKEN, BotProcess, bot_env
from tests.pg import TestPostgres
from tests.reliability_figures import (
    ANTHROPIC_FAULTS,
    GEMINI_FAULTS,
    INTAKE_FAULTS,
    TELEGRAM_FAULTS,
)

STARTER_USD = "5.00"
STARTER_MICROS = 5_000_000
RETRY_ATTEMPTS = 3
GEMINI_TIMEOUT_SECONDS = 1.0
RETRY_AFTER = 1
TELEGRAM_SEND_ATTEMPTS = 3  # one try and the two failure backoffs of RetryAfterMiddleware
DRAW = "draw "
NOTHING_CHARGED = "nothing was charged"


# ------------------------------------------------------------------------------------------------
# A scripted model: "draw X" calls generate_image; a tool result is passed on to the person
# word for word, so what the person reads is exactly what the bot told the model.
# ------------------------------------------------------------------------------------------------


def scripted_model(record: RecordedRequest) -> Reply:
    last = record.json["messages"][-1]
    results = [b for b in last["content"] if b.get("type") == "tool_result"]
    if results:
        if results[-1].get("is_error"):
            return text_reply(f"Sorry, no picture: {result_text(results[-1])}")
        return text_reply("Here is your picture.")
    text = last_user_text(record.json)
    if text.startswith(DRAW):
        return tool_use_reply("generate_image", {"prompt": text.removeprefix(DRAW)})
    return text_reply(f"Re: {text}")


# ------------------------------------------------------------------------------------------------
# One bot process for the module
# ------------------------------------------------------------------------------------------------


@dataclass
class World:
    bot: BotProcess
    engine: AsyncEngine
    telegram: FakeTelegram
    anthropic: FakeAnthropic
    gemini: FakeGemini
    data_dir: Path


@pytest.fixture(scope="module")
async def world(
    test_postgres: TestPostgres, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    name = await test_postgres.create_database()
    url = test_postgres.url_for(name)
    engine = create_engine(url, pool_size=5, max_overflow=5)
    data_dir = tmp_path_factory.mktemp("fault-matrix") / "data"
    async with (
        FakeTelegram(token=FAKE_BOT_TOKEN) as telegram,
        FakeAnthropic(default=scripted_model) as anthropic,
        FakeGemini() as gemini,
    ):
        env = bot_env(
            database_url=url,
            data_dir=data_dir,
            telegram_url=telegram.base_url,
            anthropic_url=anthropic.base_url,
            gemini_url=gemini.base_url,
            STARTER_BALANCE_USD=STARTER_USD,
            GEMINI_RETRY_ATTEMPTS=str(RETRY_ATTEMPTS),
            GEMINI_TIMEOUT_SECONDS=str(GEMINI_TIMEOUT_SECONDS),
        )
        bot = BotProcess(env)
        await bot.start_polling(telegram)
        try:
            yield World(bot, engine, telegram, anthropic, gemini, data_dir)
        finally:
            code = await bot.stop()
            await engine.dispose()
            await test_postgres.drop_database(name)
        assert code == 0, f"bot exited with {code}:\n{bot.log_text()[-3000:]}"
        assert_no_leaks([bot], telegram, anthropic)


@pytest.fixture
async def fresh(world: World) -> AsyncIterator[World]:
    """A case starts with nothing scripted and leaves nothing scripted behind."""
    world.telegram.clear_failures()
    assert world.gemini.pending_replies == 0
    yield world
    world.telegram.clear_failures()


# ------------------------------------------------------------------------------------------------
# The invariants every case checks
# ------------------------------------------------------------------------------------------------


async def assert_books_balanced(engine: AsyncEngine, user: int) -> list[Any]:
    """Charged exactly what succeeded: each ok call at its price, every other call at 0; the
    balance and the ledger agree; no hold is open. Returns the user's api_calls rows."""
    calls = await rows(
        engine,
        "SELECT purpose, status, provider_cost_micros, charged_micros, provider_cost_unknown, "
        "image_count FROM api_calls WHERE user_id = :u ORDER BY id",
        u=user,
    )
    for purpose, status, cost, charged, _, _ in calls:
        assert charged == (cost if status == "ok" else 0), (purpose, status, cost, charged)
    total = sum(call[3] for call in calls)
    balance = await scalar(engine, "SELECT balance_micros FROM users WHERE id = :u", u=user)
    assert balance == STARTER_MICROS - total, (balance, calls)
    ledger = await scalar(
        engine,
        "SELECT COALESCE(SUM(amount_micros), 0) FROM balance_operations WHERE user_id = :u",
        u=user,
    )
    assert ledger == balance
    charges = await scalar(
        engine,
        "SELECT count(*) FROM balance_operations WHERE user_id = :u AND kind = 'charge'",
        u=user,
    )
    assert charges == sum(1 for call in calls if call[3] > 0)
    assert await open_holds(engine) == 0
    return calls


async def assert_message_kept(engine: AsyncEngine, user: int, words: str) -> None:
    stored = await rows(
        engine,
        "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.user_id = :u AND m.role = 'user' ORDER BY m.id",
        u=user,
    )
    texts = [block.get("text", "") for (content,) in stored for block in content]
    assert any(words in text for text in texts), texts


async def assert_image_outcome(
    world: World, user: int, calls: list[Any], *, delivered: bool, status: str = "ok"
) -> None:
    """One generate_image call: delivered and charged its price once, or recorded and free."""
    images = [c for c in calls if c[0] == "generate_image"]
    assert len(images) == 1, images
    [(_, call_status, _, charged, _, image_count)] = images
    files = await scalar(world.engine, "SELECT count(*) FROM user_files WHERE user_id = :u", u=user)
    media = [s for s in world.telegram.sent(user) if s.method in ("sendPhoto", "sendDocument")]
    if delivered:
        assert (call_status, charged, image_count) == ("ok", last_image_cost(world.gemini), 1)
        assert files == 1 and media
    else:
        assert (call_status, charged) == (status, 0)
        assert files == 0 and media == []


def chat_calls(telegram: FakeTelegram, method: str, chat_id: int) -> list[RequestRecord]:
    return [r for r in telegram.calls(method) if str(r.params.get("chat_id")) == str(chat_id)]


async def run_turn(world: World, user: int, text: str) -> str:
    """Send `text`, wait until the bot finished it, return its one final reply."""
    update_id = world.telegram.push_text(user, text)
    status = await wait_update_finished(world.telegram, world.engine, update_id, timeout=30)
    assert status in ("answered", "failed"), status
    [reply] = final_texts(world.telegram, user)
    return reply


# ------------------------------------------------------------------------------------------------
# Gemini and Files API faults inside a generate_image turn
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeminiFault:
    name: str
    replies: tuple[Any, ...]
    attempts: int
    says: str
    delivered: bool = False
    status: str = "error"
    cost_unknown: bool = False
    upload_failures: int = 0


_BLOCKED_NAMES = {
    "PROHIBITED_CONTENT": "prompt_blocked",
    "IMAGE_SAFETY": "image_safety",
    "NO_IMAGE": "no_image",
    "TEXT_ONLY": "text_only",
}
BUSY = "the image service is busy right now"
GEMINI_CASES = {
    case.name: case
    for case in [
        *(
            GeminiFault(_BLOCKED_NAMES[reason], (reply,), 1, words, status="blocked")
            for reply, reason, words in BLOCKED_CASES
        ),
        GeminiFault("resource_exhausted_429", (ApiError(429),) * RETRY_ATTEMPTS, 3, BUSY),
        GeminiFault("server_500", (ApiError(500),) * RETRY_ATTEMPTS, 3, BUSY),
        GeminiFault(
            "unavailable_503_then_ok",
            (ApiError(503), ApiError(503), image_reply()),
            3,
            "Here is your picture.",
            delivered=True,
        ),
        GeminiFault(
            "server_500_then_ok",
            (ApiError(500), image_reply()),
            2,
            "Here is your picture.",
            delivered=True,
        ),
        GeminiFault("bad_request_400", (ApiError(400),), 1, "rejected this request"),
        GeminiFault(
            "timeout",
            (Delay(GEMINI_TIMEOUT_SECONDS + 2, image_reply()),),
            1,
            "did not answer in time",
            cost_unknown=True,
        ),
        GeminiFault(
            "unusable_image_bytes",
            (raw_bytes_reply(b"\x89PNG\r\n\x1a\n not really a png", "image/png"),),
            1,
            "unusable image",
        ),
        GeminiFault(
            "files_api_upload_failed_generated",
            (image_reply(),),
            1,
            "Here is your picture.",
            delivered=True,
            upload_failures=2,  # the first try and the one retry
        ),
    ]
}


def test_the_matrix_runs_the_cases_the_readme_counts() -> None:
    assert tuple(GEMINI_CASES) == GEMINI_FAULTS
    assert tuple(TELEGRAM_CASES) == TELEGRAM_FAULTS
    claude_cases = {f.name for f in CLAUDE_FAILURES}
    assert claude_cases <= set(ANTHROPIC_FAULTS)
    assert len(ANTHROPIC_FAULTS) == len(claude_cases) + 2  # 429-then-ok, connection refused


@pytest.mark.parametrize("name", GEMINI_FAULTS)
async def test_gemini_fault(fresh: World, name: str) -> None:
    world, case = fresh, GEMINI_CASES[name]
    user = 61000 + GEMINI_FAULTS.index(name)
    prompt = f"a lighthouse for the {name} case"
    gemini_before = len(world.gemini.requests)
    claude_before = len(world.anthropic.message_requests())
    world.anthropic.fail_uploads(times=case.upload_failures)
    world.gemini.script(*case.replies)

    reply = await run_turn(world, user, DRAW + prompt)

    assert case.says in reply, reply
    if not case.delivered:
        assert NOTHING_CHARGED in reply.lower(), reply
    assert len(world.gemini.requests) - gemini_before == case.attempts
    assert world.gemini.pending_replies == 0
    assert len(world.anthropic.message_requests()) - claude_before == 2
    assert [r.texts for r in world.gemini.requests[gemini_before:]] == [[prompt]] * case.attempts
    calls = await assert_books_balanced(world.engine, user)
    await assert_image_outcome(world, user, calls, delivered=case.delivered, status=case.status)
    [image_call] = [c for c in calls if c[0] == "generate_image"]
    assert image_call[4] is case.cost_unknown
    await assert_message_kept(world.engine, user, prompt)
    if case.upload_failures:
        claude_file_id = await scalar(
            world.engine, "SELECT claude_file_id FROM user_files WHERE user_id = :u", u=user
        )
        assert claude_file_id is None


async def send_photo_while_uploads_fail(world: World, user: int, caption: str) -> str:
    """A captioned photo while the Files API refuses one upload; returns the one reply."""
    uploads_before = len([r for r in world.anthropic.requests if r.path == "/v1/files"])
    claude_before = len(world.anthropic.message_requests())
    world.anthropic.fail_uploads(times=2, status=500)  # the first try and the one retry
    update_id = world.telegram.push_photo(user, png(300, 200), caption=caption)
    status = await wait_update_finished(world.telegram, world.engine, update_id, timeout=30)
    assert status == "failed"
    uploads = [r for r in world.anthropic.requests if r.path == "/v1/files"][uploads_before:]
    assert len(uploads) == 2
    assert len(world.anthropic.message_requests()) == claude_before
    [reply] = final_texts(world.telegram, user)
    return reply


async def test_files_api_upload_failure_for_a_user_photo(fresh: World) -> None:
    assert INTAKE_FAULTS == ("files_api_upload_failed_user_photo",)
    user = 62000
    reply = await send_photo_while_uploads_fail(fresh, user, "what is in this photo?")
    assert "couldn't process the image" in reply and "try again" in reply, reply
    assert await assert_books_balanced(fresh.engine, user) == []


async def test_a_photo_message_that_failed_intake_stays_in_the_conversation(
    fresh: World,
) -> None:
    user = 62001
    await send_photo_while_uploads_fail(fresh, user, "remember this caption")
    await assert_message_kept(fresh.engine, user, "remember this caption")


# ------------------------------------------------------------------------------------------------
# Telegram faults while delivering a reply
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelegramFault:
    name: str
    method: str
    error_code: int
    times: int
    calls: int
    image: bool
    sent_as: str | None = None
    description: str | None = None
    retry_after: int | None = None


TELEGRAM_CASES = {
    case.name: case
    for case in [
        TelegramFault("send_message_429", "sendMessage", 429, 1, 2, False, retry_after=RETRY_AFTER),
        TelegramFault(
            "send_photo_429", "sendPhoto", 429, 1, 2, True, "photo", retry_after=RETRY_AFTER
        ),
        TelegramFault(
            "send_photo_400_invalid_dimensions",
            "sendPhoto",
            400,
            1,
            1,
            True,
            "document",
            description="Bad Request: PHOTO_INVALID_DIMENSIONS",
        ),
        TelegramFault("send_message_5xx_then_ok", "sendMessage", 500, 2, 3, False),
        # A photo that keeps failing is sent as a document.
        TelegramFault(
            "send_photo_5xx_persistent",
            "sendPhoto",
            500,
            TELEGRAM_SEND_ATTEMPTS,
            3,
            True,
            "document",
        ),
    ]
}


@pytest.mark.parametrize("name", TELEGRAM_FAULTS)
async def test_telegram_fault(fresh: World, name: str) -> None:
    world, case = fresh, TELEGRAM_CASES[name]
    user = 63000 + TELEGRAM_FAULTS.index(name)
    words = f"a harbour for the {name} case" if case.image else f"hello from the {name} case"
    world.telegram.fail(
        case.method,
        error_code=case.error_code,
        description=case.description,
        retry_after=case.retry_after,
        times=case.times,
        chat_id=user,
    )
    if case.image:
        world.gemini.script(image_reply())

    reply = await run_turn(world, user, DRAW + words if case.image else words)

    attempts = chat_calls(world.telegram, case.method, user)
    assert len(attempts) == case.calls, [(r.ok, r.error_code) for r in attempts]
    assert [r.ok for r in attempts] == [False] * min(case.times, case.calls) + [True] * max(
        0, case.calls - case.times
    )
    if case.retry_after is not None:
        failed, succeeded = attempts
        assert succeeded.time - failed.time >= case.retry_after
    calls = await assert_books_balanced(world.engine, user)
    await assert_message_kept(world.engine, user, words)
    if not case.image:
        assert reply == f"Re: {words}"
        return
    delivered = case.sent_as is not None
    await assert_image_outcome(world, user, calls, delivered=delivered, status="error")
    assert len(world.gemini.requests) and world.gemini.pending_replies == 0
    if case.sent_as is None:
        assert "could not be sent to the chat" in reply and NOTHING_CHARGED in reply
        return
    assert reply == "Here is your picture."
    result = json.loads(result_text(_last_tool_result(world.anthropic)))
    assert result["delivered_files"][0]["sent_as"] == case.sent_as
    media = [s.method for s in world.telegram.sent(user) if s.method != "sendMessage"]
    assert media == ["sendPhoto" if case.sent_as == "photo" else "sendDocument"]


def _last_tool_result(anthropic: FakeAnthropic) -> dict[str, Any]:
    last = anthropic.message_requests()[-1]["messages"][-1]
    [block] = [b for b in last["content"] if b.get("type") == "tool_result"]
    return dict(block)
