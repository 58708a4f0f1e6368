"""The new user message as Claude sees it: the files note, attachments, then the text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.services.file_catalog import NOTE_HEADER
from bot.services.incoming import IntakeResult
from bot.services.tokens import StoredMessage
from bot.services.transcripts import spoken_text


def user_content(
    text: str,
    images: Sequence[IntakeResult],
    files_note_text: str | None,
    sender_name: str | None = None,
) -> list[dict[str, Any]]:
    """The new user message: the files note (when it changed), attached images, then the text.

    In a group the message first says who wrote it, since several people share the conversation.
    """
    blocks: list[dict[str, Any]] = []
    if sender_name:
        blocks.append({"type": "text", "text": f"[Message from {sender_name}]"})
    if files_note_text:
        blocks.append({"type": "text", "text": files_note_text})
    for image in images:
        if image.blocks:
            blocks.extend(image.blocks)
            continue
        if image.claude_file_id:
            blocks.append(
                {"type": "image", "source": {"type": "file", "file_id": image.claude_file_id}}
            )
        blocks.append(
            {"type": "text", "text": f"[The user attached an image: file_id {image.file_id}]"}
        )
    text = spoken_text([i.transcript for i in images if i.transcript], text)
    blocks.append({"type": "text", "text": text.strip() or "(The user sent only the attachment.)"})
    return blocks


def last_files_note(messages: Sequence[StoredMessage]) -> str | None:
    """The most recent "Available files" note still in the context, if any."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        for block in message.content:
            text = block.get("text")
            if (
                block.get("type") == "text"
                and isinstance(text, str)
                and text.startswith(NOTE_HEADER)
            ):
                return text
    return None


UNPROCESSED_ATTACHMENT_NOTE = (
    "[The user attached a file that could not be processed; they were told why.]"
)
