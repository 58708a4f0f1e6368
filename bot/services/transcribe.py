"""Transcription as a metered call: its worst case, and the transcript read as a Report (a
transcript without speech is recorded as an error and not charged)."""

from __future__ import annotations

import uuid

from bot.providers.gemini_audio import Transcript, TranscriptionFailed
from bot.services.metered import Meter, Report
from bot.services.pricing import TokenPrice, TokenUsage, token_cost_micros
from bot.services.transcripts import AUDIO_TOKENS_PER_SECOND

PROMPT_TOKENS = 200  # the instruction and request overhead, generously
TRANSCRIPT_TOKENS_PER_SECOND = 8  # fast speech is about 4 tokens a second
MIN_TRANSCRIPT_TOKENS = 512


def transcribe_meter(user_id: int, model: str, price: TokenPrice, seconds: int) -> Meter:
    """The most `seconds` of audio can cost: its audio tokens in, a generous transcript out."""
    max_output = max(MIN_TRANSCRIPT_TOKENS, seconds * TRANSCRIPT_TOKENS_PER_SECOND)
    worst = token_cost_micros(
        price,
        TokenUsage(
            input_tokens=seconds * AUDIO_TOKENS_PER_SECOND + PROMPT_TOKENS,
            output_tokens=max_output,
        ),
    )
    return Meter(
        user_id=user_id,
        provider="google",
        model=model,
        purpose="transcribe",
        worst_case_micros=worst,
        key=f"transcribe:{uuid.uuid4().hex}",
    )


class TranscribeMeasure:
    def __init__(self, price: TokenPrice) -> None:
        self._price = price

    def reported(self, result: Transcript) -> Report:
        usage = TokenUsage(input_tokens=result.input_tokens, output_tokens=result.output_tokens)
        spoke = bool(result.text.strip())
        return Report(
            status="ok" if spoke else "error",
            error=None if spoke else "no speech in the transcript",
            provider_cost_micros=token_cost_micros(self._price, usage),
            price_version=self._price.price_version,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            request_id=result.model_version,
            duration_ms=result.duration_ms,
        )

    def failed(self, exc: BaseException) -> Report:
        if isinstance(exc, TranscriptionFailed):
            return Report(
                status="error", error=f"{exc.kind}: {exc.detail}", cost_unknown=exc.cost_unknown
            )
        return Report(status="error", error=type(exc).__name__, cost_unknown=True)
