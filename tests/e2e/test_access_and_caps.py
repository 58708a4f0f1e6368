"""Who may use the bot and how much: the whitelist, the per-user message and image limits, and the
global cap on concurrent provider calls, end to end through the real bot process."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.telegram.middlewares import (
    NOT_ALLOWED_REPLY,
    TOO_FAST_REPLY,
    MessageRateLimit,
    RateVerdict,
)
from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import (
    ask,
    balance,
    final_texts,
    last_user_text,
    open_holds,
    rows,
    scalar,
    wait_update_finished,
)
from tests.fakes.anthropic import (
    Delay,
    FakeAnthropic,
    RecordedRequest,
    Reply,
    text_reply,
    tool_use_reply,
)
from tests.fakes.gemini import FakeGemini, image_reply
from tests.fakes.telegram import FakeTelegram

STARTER_MICROS = 500_000
STRANGER = 7001
ALLOWED = 7002
ADMIN = 7003


def echo_reply(delay: float = 0.0) -> Any:
    """A responder that answers each request with the text of its last user message."""

    def respond(record: RecordedRequest) -> Delay | Reply:
        reply = text_reply(f"Answer to: {last_user_text(record.json)}")
        return Delay(delay, reply) if delay else reply

    return respond


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 90)).save(out, "PNG")
    return out.getvalue()


async def ledger_rows(engine: AsyncEngine, user: int) -> int:
    sql = "SELECT count(*) FROM balance_operations WHERE user_id = :u"
    return int(await scalar(engine, sql, u=user))


# ------------------------------------------------------------------------------------------------
# Whitelist
# ------------------------------------------------------------------------------------------------


async def test_strangers_get_one_refusal_and_cost_nothing(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot(ALLOWED_USER_IDS=str(ALLOWED), ADMIN_USER_IDS=str(ADMIN))
    anthropic_fake.set_default(echo_reply())

    stranger_updates = [
        telegram.push_text(STRANGER, "Hello, can I use you?"),
        telegram.push_text(STRANGER, "/start"),
        telegram.push_text(STRANGER, "/balance"),
        telegram.push_photo(STRANGER, png_bytes(), caption="What is this?"),
        telegram.push_text(STRANGER, "Please answer me"),
    ]
    for update_id in stranger_updates:
        assert await wait_update_finished(telegram, engine, update_id) == "ignored"

    # The people on the list, and the admin who is only on ADMIN_USER_IDS, work normally.
    for user, greeting in ((ALLOWED, "Hi, I am allowed"), (ADMIN, "Hi, I am the admin")):
        answer = await ask(telegram, user, greeting, finished_in=engine)
        assert answer == [f"Answer to: {greeting}"]
    # A stranger who keeps writing after that is still not answered again.
    late = telegram.push_text(STRANGER, "Still there?")
    assert await wait_update_finished(telegram, engine, late) == "ignored"

    sent = telegram.sent(STRANGER, include_drafts=True, include_actions=True)
    assert [(s.method, s.text) for s in sent] == [("sendMessage", NOT_ALLOWED_REPLY)]
    assert await scalar(engine, "SELECT count(*) FROM users WHERE id = :u", u=STRANGER) == 0
    assert await ledger_rows(engine, STRANGER) == 0
    assert (
        await scalar(engine, "SELECT count(*) FROM api_calls WHERE user_id = :u", u=STRANGER) == 0
    )
    assert telegram.calls("getFile") == []
    bodies = anthropic_fake.message_requests()
    assert [last_user_text(b) for b in bodies] == ["Hi, I am allowed", "Hi, I am the admin"]
    for user in (ALLOWED, ADMIN):
        [(status, charged)] = await rows(
            engine, "SELECT status, charged_micros FROM api_calls WHERE user_id = :u", u=user
        )
        assert status == "ok" and charged > 0
        assert await balance(engine, user) == STARTER_MICROS - charged
    assert await open_holds(engine) == 0


# ------------------------------------------------------------------------------------------------
# Messages per minute
# ------------------------------------------------------------------------------------------------


def test_rate_limit_tells_once_per_window_and_forgets_old_messages() -> None:
    limit = MessageRateLimit(3, window_seconds=60.0)
    verdicts = [limit.check(1, t) for t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 30.0)]
    assert (
        verdicts
        == [RateVerdict.ALLOWED] * 3 + [RateVerdict.REFUSED_TELL] + [RateVerdict.REFUSED_SILENT] * 3
    )
    assert limit.check(2, 5.0) is RateVerdict.ALLOWED  # another user has their own window
    # The first message leaves the sliding window at t=60: one more is allowed, then refused.
    assert limit.check(1, 60.0) is RateVerdict.ALLOWED
    assert limit.check(1, 60.5) is RateVerdict.REFUSED_SILENT  # told 57.5 s ago
    assert [limit.check(1, t) for t in (121.0, 122.0, 123.0)] == [RateVerdict.ALLOWED] * 3
    assert limit.check(1, 124.0) is RateVerdict.REFUSED_TELL  # a new window: told again
    assert limit.check(1, 125.0) is RateVerdict.REFUSED_SILENT


async def test_too_many_messages_a_minute_get_one_clear_reply_and_cost_nothing(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="3")
    anthropic_fake.set_default(echo_reply())
    fast, other = 7101, 7102
    for number in range(3):
        answer = await ask(telegram, fast, f"Message {number}", finished_in=engine)
        assert answer == [f"Answer to: Message {number}"]
    requests_before = len(anthropic_fake.message_requests())
    balance_before = await balance(engine, fast)
    calls_before = await scalar(engine, "SELECT count(*) FROM api_calls")

    flood = [telegram.push_text(fast, f"Flood {number}") for number in range(8)]
    for update_id in flood:
        assert await wait_update_finished(telegram, engine, update_id) == "ignored"
    assert final_texts(telegram, fast)[3:] == [TOO_FAST_REPLY]
    assert len(anthropic_fake.message_requests()) == requests_before
    assert await balance(engine, fast) == balance_before
    assert await scalar(engine, "SELECT count(*) FROM api_calls") == calls_before
    assert await open_holds(engine) == 0

    # Someone else is not slowed down by it.
    for number in range(3):
        reply = await ask(telegram, other, f"Other {number}")
        assert reply == [f"Answer to: Other {number}"]
    assert TOO_FAST_REPLY not in final_texts(telegram, other)
    assert final_texts(telegram, fast)[3:] == [TOO_FAST_REPLY]


# ------------------------------------------------------------------------------------------------
# Images per hour
# ------------------------------------------------------------------------------------------------


def tool_result_texts(anthropic_fake: FakeAnthropic) -> dict[str, tuple[bool, str]]:
    """tool_use_id -> (is_error, text) of every tool result sent to Claude."""
    results: dict[str, tuple[bool, str]] = {}
    for body in anthropic_fake.message_requests():
        for message in body["messages"]:
            if not isinstance(message["content"], list):
                continue
            for block in message["content"]:
                if block.get("type") == "tool_result":
                    content = block["content"]
                    if isinstance(content, list):
                        content = " ".join(c.get("text", "") for c in content)
                    results[block["tool_use_id"]] = (bool(block.get("is_error")), str(content))
    return results


async def test_images_per_hour_limit_is_a_tool_error_without_a_gemini_call(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(RATE_LIMIT_IMAGES_PER_HOUR="2", STARTER_BALANCE_USD="5.00")
    painter, other = 7201, 7202
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": "a red fox"}, id="toolu_img_1"),
        tool_use_reply("generate_image", {"prompt": "a blue fox"}, id="toolu_img_2"),
        tool_use_reply("generate_image", {"prompt": "a green fox"}, id="toolu_img_3"),
        text_reply("Two foxes; the third has to wait."),
    )
    gemini_fake.script(image_reply(), image_reply())
    update_id = telegram.push_text(painter, "Draw three foxes")
    assert await wait_update_finished(telegram, engine, update_id, timeout=30) == "answered"

    results = tool_result_texts(anthropic_fake)
    assert not results["toolu_img_1"][0] and not results["toolu_img_2"][0]
    is_error, message = results["toolu_img_3"]
    assert is_error and "Image limit reached" in message and "2 images per hour" in message
    assert len(gemini_fake.generate_requests()) == 2
    photos = [s for s in telegram.sent(painter) if s.method == "sendPhoto"]
    assert len(photos) == 2
    image_calls = await rows(
        engine,
        "SELECT tool_use_id, status, charged_micros FROM api_calls "
        "WHERE purpose = 'generate_image' ORDER BY id",
    )
    assert [(c[0], c[1]) for c in image_calls] == [("toolu_img_1", "ok"), ("toolu_img_2", "ok")]
    holds = await rows(
        engine, "SELECT idempotency_key FROM balance_holds WHERE idempotency_key LIKE 'img:%'"
    )
    assert sorted(h[0] for h in holds) == ["img:toolu_img_1", "img:toolu_img_2"]
    charged = await scalar(
        engine, "SELECT sum(charged_micros) FROM api_calls WHERE user_id = :u", u=painter
    )
    assert await balance(engine, painter) == 5_000_000 - charged
    assert await open_holds(engine) == 0

    # A later turn in the same hour is refused too; another user can still draw.
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": "a fox again"}, id="toolu_img_4"),
        text_reply("Still at the limit."),
        tool_use_reply("generate_image", {"prompt": "a cat"}, id="toolu_img_5"),
        text_reply("Here is your cat."),
    )
    gemini_fake.script(image_reply())
    update_id = telegram.push_text(painter, "One more fox?")
    assert await wait_update_finished(telegram, engine, update_id, timeout=30) == "answered"
    update_id = telegram.push_text(other, "Draw a cat")
    assert await wait_update_finished(telegram, engine, update_id, timeout=30) == "answered"
    results = tool_result_texts(anthropic_fake)
    assert results["toolu_img_4"][0] and "Image limit reached" in results["toolu_img_4"][1]
    assert not results["toolu_img_5"][0]
    assert len(gemini_fake.generate_requests()) == 3
    assert len([s for s in telegram.sent(other) if s.method == "sendPhoto"]) == 1


# ------------------------------------------------------------------------------------------------
# Concurrent provider calls
# ------------------------------------------------------------------------------------------------


def max_overlap(intervals: list[tuple[float, float]], slack: float = 0.02) -> int:
    """The largest number of intervals open at one instant. An interval's end is moved `slack`
    earlier: the fake stamps a request's end a moment after the client has its last byte."""
    events = sorted(
        [(start, 1) for start, _ in intervals] + [(end - slack, -1) for _, end in intervals],
        key=lambda event: (event[0], event[1]),
    )
    open_now = peak = 0
    for _, change in events:
        open_now += change
        peak = max(peak, open_now)
    return peak


def test_max_overlap_counts_open_intervals() -> None:
    assert max_overlap([(0.0, 1.0), (0.5, 1.5), (0.6, 0.7)]) == 3
    assert max_overlap([(0.0, 1.0), (1.0, 2.0)]) == 1
    assert max_overlap([(0.0, 1.0), (0.995, 2.0)]) == 1  # within the slack
    assert max_overlap([(0.0, 1.0), (0.9, 2.0), (1.5, 3.0)]) == 2


async def test_provider_calls_are_capped_across_users(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot(MAX_CONCURRENT_PROVIDER_CALLS="2")
    anthropic_fake.set_default(echo_reply(delay=0.5))
    users = list(range(7301, 7307))
    updates = {user: telegram.push_text(user, f"Question from {user}") for user in users}
    for user in users:
        await telegram.wait_for_sent(user, 1, timeout=30, methods=["sendMessage"])
        assert final_texts(telegram, user) == [f"Answer to: Question from {user}"]
        assert await wait_update_finished(telegram, engine, updates[user]) == "answered"

    calls = [r for r in anthropic_fake.requests if r.path == "/v1/messages"]
    assert len(calls) == len(users)
    intervals = [(r.time_start, r.time_end) for r in calls if r.time_end is not None]
    assert len(intervals) == len(users)
    assert max_overlap(intervals) == 2  # capped, and still parallel
    assert await open_holds(engine) == 0


async def test_provider_slots_are_given_back_after_failures(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    """Failed and timed-out calls free their slot: with one slot, later turns still run."""
    await start_bot(
        MAX_CONCURRENT_PROVIDER_CALLS="1",
        ANTHROPIC_TIMEOUT_SECONDS="1.0",
        ANTHROPIC_MAX_RETRIES="0",
    )
    anthropic_fake.script(Delay(3.0, text_reply("Too late.")))
    [reply] = await ask(telegram, 7401, "This one times out", timeout=20)
    assert "took too long" in reply
    anthropic_fake.set_default(echo_reply())
    for user in (7402, 7403):
        answer = await ask(telegram, user, f"Hello from {user}", finished_in=engine)
        assert answer == [f"Answer to: Hello from {user}"]
    assert await open_holds(engine) == 0
