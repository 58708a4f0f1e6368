"""Context building: trimming at turn boundaries, stable cut points, and history repair."""

from __future__ import annotations

import itertools
from typing import Any

from bot.agent.context import (
    INTERRUPTED_TOOL_RESULT,
    repair_history,
    trim_to_budget,
    with_cache_breakpoints,
)
from bot.services.tokens import StoredMessage


def user(text: str, tokens: int = 10) -> StoredMessage:
    return StoredMessage("user", [{"type": "text", "text": text}], tokens)


def assistant(text: str, tokens: int = 10) -> StoredMessage:
    return StoredMessage("assistant", [{"type": "text", "text": text}], tokens)


def tool_call(*ids: str, tokens: int = 10) -> StoredMessage:
    blocks = [{"type": "tool_use", "id": i, "name": "generate_image", "input": {}} for i in ids]
    return StoredMessage("assistant", blocks, tokens)


def tool_results(*ids: str, tokens: int = 10) -> StoredMessage:
    blocks = [{"type": "tool_result", "tool_use_id": i, "content": "ok"} for i in ids]
    return StoredMessage("user", blocks, tokens)


def conversation(turns: int) -> list[StoredMessage]:
    """Turns of: question, a tool call, its result, the answer."""
    messages: list[StoredMessage] = []
    for n in range(turns):
        messages += [
            user(f"q{n}"),
            tool_call(f"t{n}"),
            tool_results(f"t{n}"),
            assistant(f"a{n}"),
        ]
    return messages


def first_text(messages: list[StoredMessage]) -> str:
    return str(messages[0].content[0]["text"])


def test_everything_is_kept_within_the_budget() -> None:
    messages = conversation(3)
    assert trim_to_budget(messages, 1000) == messages


def test_trimming_cuts_at_a_turn_start_and_fits() -> None:
    messages = conversation(10)  # 40 tokens per turn, 400 in all
    kept = trim_to_budget(messages, 100)
    assert sum(m.token_estimate for m in kept) <= 100
    assert kept[0].role == "user" and kept[0].content[0]["type"] == "text"
    assert kept == messages[len(messages) - len(kept) :]
    assert len(kept) % 4 == 0  # whole turns only


def test_a_tool_use_is_never_separated_from_its_result() -> None:
    messages = conversation(10)
    for budget in range(40, 400, 7):
        kept = trim_to_budget(messages, budget)
        assert kept[0].content[0]["type"] == "text"
        repaired = repair_history(kept)
        for index, message in enumerate(repaired):
            uses = [b["id"] for b in message["content"] if b.get("type") == "tool_use"]
            if uses:
                answered = [b["tool_use_id"] for b in repaired[index + 1]["content"]]
                assert answered[: len(uses)] == uses
                assert INTERRUPTED_TOOL_RESULT not in str(repaired[index + 1])


def test_the_cut_point_is_stable_as_the_conversation_grows() -> None:
    budget = 200
    starts = []
    for turns in range(1, 40):
        kept = trim_to_budget(conversation(turns), budget)
        starts.append(first_text(kept))
    changes = sum(1 for a, b in itertools.pairwise(starts) if a != b)
    # 40 tokens per turn, steps of half the budget: the cut moves every few turns, not every turn.
    assert changes <= len(starts) // 2
    for a, b in itertools.pairwise(starts):
        assert int(b[1:]) >= int(a[1:]), "the cut point never moves back"
    # Between moves, consecutive requests share the same first message (a cacheable prefix).
    assert any(a == b for a, b in itertools.pairwise(starts))


def test_a_single_huge_turn_is_kept_alone() -> None:
    messages = [user("old"), assistant("a"), user("huge", tokens=10_000)]
    assert trim_to_budget(messages, 100) == [messages[-1]]


def roles(history: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in history]


def test_repair_merges_consecutive_user_messages() -> None:
    history = repair_history([user("first"), user("second"), assistant("answer"), user("third")])
    assert roles(history) == ["user", "assistant", "user"]
    assert [b["text"] for b in history[0]["content"]] == ["first", "second"]


def test_repair_answers_an_interrupted_tool_call_in_order() -> None:
    history = repair_history([user("draw"), tool_call("a", "b"), user("hello?")])
    assert roles(history) == ["user", "assistant", "user"]
    blocks = history[2]["content"]
    assert [b.get("tool_use_id") for b in blocks[:2]] == ["a", "b"]
    assert all(b["is_error"] and b["content"] == INTERRUPTED_TOOL_RESULT for b in blocks[:2])
    assert blocks[2] == {"type": "text", "text": "hello?"}


def test_repair_keeps_results_in_tool_use_order_and_drops_orphans() -> None:
    results = StoredMessage(
        "user",
        [
            {"type": "tool_result", "tool_use_id": "b", "content": "B"},
            {"type": "tool_result", "tool_use_id": "zzz", "content": "orphan"},
            {"type": "tool_result", "tool_use_id": "a", "content": "A"},
        ],
        10,
    )
    history = repair_history([user("go"), tool_call("a", "b"), results])
    assert [b["content"] for b in history[2]["content"]] == ["A", "B"]


def test_repair_never_starts_with_an_assistant_or_a_stray_result() -> None:
    history = repair_history([assistant("hi"), tool_results("x"), user("question")])
    assert history == [{"role": "user", "content": [{"type": "text", "text": "question"}]}]


def test_repair_puts_results_between_two_assistant_messages() -> None:
    history = repair_history([user("go"), tool_call("a"), assistant("later"), user("next")])
    assert roles(history) == ["user", "assistant", "user", "assistant", "user"]
    assert history[2]["content"][0]["tool_use_id"] == "a"


def test_repair_answers_a_trailing_tool_call() -> None:
    history = repair_history([user("go"), tool_call("a")])
    assert roles(history) == ["user", "assistant", "user"]
    assert history[2]["content"][0]["is_error"] is True


def test_repair_does_not_change_what_it_was_given() -> None:
    stored = [user("go"), tool_call("a"), user("more")]
    before = [m.content.copy() for m in stored]
    repair_history(stored)
    assert [m.content for m in stored] == before


def test_breakpoints_mark_the_last_two_user_messages_without_touching_the_history() -> None:
    history = repair_history([user("one"), assistant("a"), user("two"), assistant("b"), user("3")])
    marked = with_cache_breakpoints([dict(m) for m in history])
    flags = ["cache_control" in m["content"][-1] for m in marked]
    assert flags == [False, False, True, False, True]
    assert all("cache_control" not in m["content"][-1] for m in history)
