"""What a person is told when a voice note or an uploaded file cannot be taken in (message catalogs)."""

from __future__ import annotations

from bot.i18n import N_, _, ngettext

DOWNLOAD_FAILED_REPLY = N_("I couldn't download that file from Telegram. Please send it again.")
UPLOAD_FAILED_REPLY = N_("I couldn't process the file right now. Please try again in a minute.")
AUDIO_TOO_LARGE_REPLY = N_(
    "This recording is too large: I can take voice notes and audio up to 20 MB."
)
AUDIO_EMPTY_REPLY = N_("This voice message is empty. Nothing was charged.")
AUDIO_NOT_AUDIO_REPLY = N_(
    "This file doesn't contain audio I can play (I take OGG/Opus voice notes, MP3, M4A, WAV, FLAC "
    "and AAC). Nothing was charged."
)
AUDIO_UNREADABLE_REPLY = N_("I couldn't make out any audio in this recording. Nothing was charged.")
NO_SPEECH_REPLY = N_("I couldn't hear any speech in this recording. Nothing was charged.")
TRANSCRIBE_BUSY_REPLY = N_(
    "Voice transcription is unavailable right now. Please try again in a minute, or type your "
    "message; nothing was charged."
)


def audio_too_long_reply(limit_seconds: int) -> str:
    if limit_seconds % 60 == 0:
        minutes = limit_seconds // 60
        limit = ngettext("{count} minutes", "{count} minutes", minutes).format(count=minutes)
    else:
        limit = ngettext("{count} seconds", "{count} seconds", limit_seconds).format(
            count=limit_seconds
        )
    return _(
        "This recording is too long: I can transcribe up to {limit}. Nothing was charged."
    ).format(limit=limit)
