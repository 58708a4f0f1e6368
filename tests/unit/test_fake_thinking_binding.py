"""The Anthropic fake binds thinking blocks to their model and conversation, as the API does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic

from tests.fakes.anthropic import (
    FakeAnthropic,
    Reply,
    redacted_thinking_block,
    text_block,
    text_reply,
)
from tests.fakes.thinking_binding import BINDING_BETA

KEY = "sk-ant-test-not-a-real-key"
MODEL = "claude-sonnet-5-5"
DROP: Any = {"type": "adaptive", "block_binding": {"prefix_mismatch_behavior": "drop_block"}}
MISMATCH = (
    "messages.1.content.0: Invalid `signature` in `thinking` block. The block is bound to a "
    "different conversation. Remove the block, or set "
    '`thinking.block_binding.prefix_mismatch_behavior` to "drop_block".'
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(thinking_readers={"claude-opus-5-5": ["claude-haiku-5-5"]}) as server:
        yield server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[AsyncAnthropic]:
    sdk = AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=0, timeout=10)
    yield sdk
    await sdk.close()


def user(text: str, *, marked: bool = False) -> Any:
    block: dict[str, Any] = {"type": "text", "text": text}
    if marked:
        block["cache_control"] = {"type": "ephemeral"}
    return {"role": "user", "content": [block]}


def as_param(message: Any) -> Any:
    return {"role": "assistant", "content": [b.to_dict() for b in message.content]}


async def exchange(fake: FakeAnthropic, client: AsyncAnthropic, model: str = MODEL) -> list[Any]:
    """Two turns with a thinking block each: [u1, a1, u2, a2]; the blocks as the fake sent them."""
    fake.script(
        text_reply("One.", thinking="First thoughts."),
        text_reply("Two.", thinking="Second thoughts."),
    )
    history: list[Any] = [user("first")]
    for text in ("second", None):
        message = await client.messages.create(model=model, max_tokens=50, messages=history)
        history.append(as_param(message))
        if text:
            history.append(user(text))
    return [dict(m) for m in history]


async def test_blocks_sent_back_in_their_conversation_are_accepted_wherever_the_breakpoints_sit(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    history = await exchange(fake, client)
    fake.script(text_reply("Three."))
    again = await client.messages.create(
        model=MODEL, max_tokens=50, messages=[*history, user("third", marked=True)]
    )
    assert again.content[0].type == "text"
    assert (
        history[1]["content"][0]["signature"] == fake.sent_messages()[0]["content"][0]["signature"]
    )


async def test_a_changed_prefix_is_refused_with_the_api_message(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    history = await exchange(fake, client)
    trimmed = [user("second, now the start"), history[3], user("third")]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=50, messages=trimmed)
    body: Any = caught.value.body
    assert body["error"] == {"type": "invalid_request_error", "message": MISMATCH}
    # A changed tool list is a changed prefix too.
    tools: Any = [{"name": "t", "input_schema": {"type": "object"}}]
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=[*history, user("x")],
            tools=tools,
        )


async def test_drop_block_drops_and_reports_the_stale_blocks_and_keeps_the_new_ones(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    history = await exchange(fake, client)
    trimmed: list[Any] = [history[2], history[3], user("third")]
    fake.script(text_reply("Three.", thinking="Third thoughts."), text_reply("Four."))
    third = await client.beta.messages.create(
        model=MODEL, max_tokens=50, messages=trimmed, thinking=DROP, betas=[BINDING_BETA]
    )
    assert [t.to_dict() for t in third.input_transformations or []] == [
        {
            "type": "thinking_dropped",
            "path": "messages.1.content.0",
            "reason": "prefix_binding_mismatch",
        }
    ]
    shown = await client.beta.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=[*trimmed, as_param(third), user("fourth")],
        thinking=DROP,
        betas=[BINDING_BETA],
    )
    # The block made after the trim is valid: only the stale one is dropped again.
    assert [t.path for t in shown.input_transformations or []] == ["messages.1.content.0"]
    third_sent = fake.message_requests()[-2]
    assert fake.requests[-2].headers["anthropic-beta"] == BINDING_BETA
    assert third_sent["thinking"] == DROP


async def test_block_binding_needs_the_beta_header_and_a_binding_model(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    with pytest.raises(anthropic.BadRequestError, match="beta header"):
        await client.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=[user("hi")],
            thinking=DROP,
        )
    with pytest.raises(anthropic.BadRequestError, match="block_binding"):
        await client.beta.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=50,
            messages=[user("hi")],
            thinking=DROP,
            betas=[BINDING_BETA],
        )
    assert fake.sent_messages() == []


async def test_blocks_of_a_model_that_cannot_read_them_are_dropped_without_a_word(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    history = await exchange(fake, client)
    trimmed: list[Any] = [history[2], history[3], user("third")]  # would be refused on Sonnet
    fake.script(text_reply("Opus."), text_reply("Opus again."))
    await client.messages.create(model="claude-opus-5-5", max_tokens=50, messages=trimmed)
    reported = await client.beta.messages.create(
        model="claude-opus-5-5", max_tokens=50, messages=trimmed, betas=[BINDING_BETA]
    )
    assert [t.reason for t in reported.input_transformations or []] == ["model_binding_mismatch"]
    # Opus reads Haiku's blocks (the readers given to the fake): those are checked.
    haiku = await exchange(fake, client, model="claude-haiku-5-5")
    with pytest.raises(anthropic.BadRequestError, match="bound to a different conversation"):
        await client.messages.create(
            model="claude-opus-5-5",
            max_tokens=50,
            messages=[haiku[2], haiku[3], user("third")],
        )


async def test_older_models_do_not_bind_to_the_conversation(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    history = await exchange(fake, client, model="claude-sonnet-4-6")
    fake.script(text_reply("Fine."))
    trimmed: list[Any] = [history[2], history[3], user("third")]
    answer = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=50, messages=trimmed
    )
    assert answer.content[0].type == "text"
    assert "input_transformations" not in fake.sent_messages()[-1]


async def test_a_block_whose_text_changed_is_refused_even_with_drop_block(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    history = await exchange(fake, client)
    history[3]["content"][0]["thinking"] = "Something else."
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature`"):
        await client.beta.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=[*history, user("x")],
            thinking=DROP,
            betas=[BINDING_BETA],
        )


async def test_redacted_thinking_is_bound_too(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    fake.script(Reply(content=[redacted_thinking_block(), text_block("Hidden.")]))
    first = await client.messages.create(model=MODEL, max_tokens=50, messages=[user("one")])
    fake.script(text_reply("Fine."))
    await client.messages.create(
        model=MODEL, max_tokens=50, messages=[user("one"), as_param(first), user("two")]
    )
    with pytest.raises(anthropic.BadRequestError, match=r"`redacted_thinking` block\. The block"):
        await client.messages.create(
            model=MODEL, max_tokens=50, messages=[user("zero"), as_param(first), user("two")]
        )
