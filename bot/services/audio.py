"""Audio formats: what a recording is, from its own bytes, and how long an Ogg Opus note is."""

from __future__ import annotations

from bot.services.incoming import Attachment

AUDIO_EXTENSIONS = {
    "audio/ogg": "ogg",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/flac": "flac",
    "audio/aac": "aac",
    "audio/mp4": "m4a",
}


def sniff_audio(data: bytes) -> str | None:
    """The audio MIME type Gemini takes for these bytes, from their magic; None if not audio."""
    head = data[:64]
    if head.startswith(b"OggS"):
        return "audio/ogg" if _ogg_codec(data) is not None else None
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        return "audio/mp3"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "audio/aac"
    if head[4:8] == b"ftyp" and head[8:11] in (b"M4A", b"mp4", b"iso", b"M4B"):
        return "audio/mp4"
    return None


def _ogg_codec(data: bytes) -> str | None:
    if len(data) < 28:
        return None
    segments = data[26]
    payload = data[27 + segments : 27 + segments + 16]
    if payload.startswith(b"OpusHead"):
        return "opus"
    if payload.startswith(b"\x01vorbis"):
        return "vorbis"
    if payload.startswith(b"\x7fFLAC"):
        return "flac"
    return None


def ogg_seconds(data: bytes) -> float | None:
    """Duration from the last Ogg page's granule position (48 kHz for Opus), if it is Ogg Opus."""
    if _ogg_codec(data) != "opus":
        return None
    last = data.rfind(b"OggS")
    if last < 0 or len(data) < last + 14:
        return None
    granule = int.from_bytes(data[last + 6 : last + 14], "little", signed=True)
    return max(0.0, granule / 48000) if granule > 0 else None


_AUDIO_FILE_EXTENSIONS = (".mp3", ".m4a", ".ogg", ".oga", ".opus", ".wav", ".flac", ".aac")


def declared_audio(attachment: Attachment) -> bool:
    """An audio file sent as a document (no duration from Telegram: the file's own counts)."""
    mime = (attachment.mime_type or "").lower()
    name = (attachment.filename or "").lower()
    return attachment.kind == "document" and (
        mime.startswith("audio/") or name.endswith(_AUDIO_FILE_EXTENSIONS)
    )
