"""The reliability cases the README quotes. The end-to-end tests that run them take their case
lists from here (and check they match), so the README's figures cannot silently go stale.

`python -m tests.reliability_figures` prints the counts.
"""

from __future__ import annotations

# Claude faults in a chat turn (tests/e2e/test_chat_failures.py).
ANTHROPIC_FAULTS = (
    "spend_limit",
    "overloaded_529",
    "server_500",
    "outage_503",
    "timeout",
    "error_event_mid_stream",
    "cut_before_message_stop",
    "corrupt_chunk",
    "refusal",
    "rate_limited_429_then_ok",
    "connection_refused",
)

# Gemini and Files API faults inside a generate_image turn (tests/e2e/test_fault_matrix.py).
GEMINI_FAULTS = (
    "prompt_blocked",
    "image_safety",
    "no_image",
    "text_only",
    "resource_exhausted_429",
    "server_500",
    "unavailable_503_then_ok",
    "server_500_then_ok",
    "bad_request_400",
    "timeout",
    "unusable_image_bytes",
    "files_api_upload_failed_generated",
)

# Faults on the way in (a user's photo) that never reach a model (tests/e2e/test_fault_matrix.py).
INTAKE_FAULTS = ("files_api_upload_failed_user_photo",)

# Telegram faults while delivering a reply (tests/e2e/test_fault_matrix.py).
TELEGRAM_FAULTS = (
    "send_message_429",
    "send_photo_429",
    "send_photo_400_invalid_dimensions",
    "send_message_5xx_then_ok",
    "send_photo_5xx_persistent",
)

# Restarts in the middle of work (tests/e2e/test_restart.py, tests/e2e/test_restart_images.py).
RESTART_CASES = (
    "sigterm_during_text_turn",
    "sigterm_during_image_generation",
    "sigkill_during_image_generation",
)

# Load and ordering (tests/e2e/test_order_and_duplicates.py, tests/e2e/test_many_users.py).
LOAD_CASES = (
    "same_update_100_times",
    "ten_users_five_messages_each",
)

ALL_CASES = {
    "anthropic": ANTHROPIC_FAULTS,
    "gemini": GEMINI_FAULTS,
    "intake": INTAKE_FAULTS,
    "telegram": TELEGRAM_FAULTS,
    "restart": RESTART_CASES,
    "load": LOAD_CASES,
}


def total_cases() -> int:
    return sum(len(cases) for cases in ALL_CASES.values())


def summary() -> str:
    parts = ", ".join(f"{group} {len(cases)}" for group, cases in ALL_CASES.items())
    return f"{total_cases()} reliability cases ({parts})"


if __name__ == "__main__":
    print(summary())
