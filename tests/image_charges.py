"""The image charge, computed in the tests independently of the bot (design section 6), from the
usage the fakes answered with. Rates are micro-USD per million tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# text_input, image_input, text_output, image_output; per image by size.
RATES = {
    "gemini-3-pro-image": (2_000_000, 2_000_000, 12_000_000, 120_000_000),
    "gemini-3.1-flash-image": (500_000, 500_000, 3_000_000, 60_000_000),
    "gpt-image-2.6-sunburst": (5_000_000, 8_000_000, 30_000_000, 30_000_000),
}
PER_IMAGE = {
    "gemini-3-pro-image": {"1K": 134_000, "2K": 134_000, "4K": 240_000},
    "gemini-3.1-flash-image": {"512": 45_000, "1K": 67_000, "2K": 101_000, "4K": 151_000},
    "gpt-image-2.6-sunburst": {"1K": 130_000, "2K": 200_000, "4K": 400_000},
}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def hold_for(model: str, size: str) -> int:
    return _ceil_div(PER_IMAGE[model][size] * 5, 4)


def gemini_cost(
    usage: Mapping[str, Any] | None, size: str, model: str = "gemini-3-pro-image"
) -> int:
    """IMAGE candidate tokens at the image-output rate, the other candidate tokens and the
    thoughts at the text-output rate, prompt tokens at the input rate; the per-image price when
    the response had no candidatesTokensDetails."""
    if not usage or not usage.get("candidatesTokensDetails"):
        return PER_IMAGE[model][size]
    text_in, image_in, text_out, image_out = RATES[model]
    image_tokens = sum(
        d["tokenCount"] for d in usage["candidatesTokensDetails"] if d["modality"] == "IMAGE"
    )
    other = usage.get("candidatesTokenCount", 0) - image_tokens + usage.get("thoughtsTokenCount", 0)
    prompt_image = sum(
        d["tokenCount"] for d in usage.get("promptTokensDetails", []) if d["modality"] == "IMAGE"
    )
    prompt_text = usage.get("promptTokenCount", 0) - prompt_image
    weighted = (
        prompt_text * text_in
        + prompt_image * image_in
        + other * text_out
        + image_tokens * image_out
    )
    return _ceil_div(weighted, 1_000_000)


def openai_cost(
    usage: Mapping[str, Any] | None, size: str, model: str = "gpt-image-2.6-sunburst"
) -> int:
    if not usage:
        return PER_IMAGE[model][size]
    text_in, image_in, text_out, image_out = RATES[model]
    inputs = usage.get("input_tokens_details") or {}
    outputs = usage.get("output_tokens_details")
    if outputs is None:
        outputs = {"image_tokens": usage.get("output_tokens", 0), "text_tokens": 0}
    weighted = (
        inputs.get("text_tokens", 0) * text_in
        + inputs.get("image_tokens", 0) * image_in
        + outputs.get("text_tokens", 0) * text_out
        + outputs.get("image_tokens", 0) * image_out
    )
    return _ceil_div(weighted, 1_000_000)
