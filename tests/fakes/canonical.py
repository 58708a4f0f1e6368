"""Canonical JSON (sorted keys, no spaces) of the blocks of a prompt, remembered.

The fake Anthropic reads every request's whole conversation: to check thinking signatures, to
count tokens and to model the prompt cache, each block in its canonical form. A conversation's
earlier blocks come back unchanged in every request, so a long conversation made the fake spend
milliseconds per request re-encoding the same text blocks, CPU the benchmark's two cores share
with the bot. Flat blocks (every value a string: text and thinking blocks) are remembered by
their content; anything else is encoded each time.
"""

from __future__ import annotations

import functools
import json
from typing import Any

_REMEMBERED = 1 << 15


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=_REMEMBERED)
def _flat_text(items: tuple[tuple[str, str], ...]) -> str:
    return _dumps(dict(items))


@functools.lru_cache(maxsize=_REMEMBERED)
def _flat_bytes(items: tuple[tuple[str, str], ...]) -> bytes:
    return _flat_text(items).encode()


def flat_items(value: Any) -> tuple[tuple[str, str], ...] | None:
    """The items of a dict whose keys and values are all strings (the cache key), else None.
    Only exact strings: True and 1 are equal keys to a cache but not the same JSON."""
    if type(value) is not dict:
        return None
    if all(type(k) is str and type(v) is str for k, v in value.items()):
        return tuple(value.items())
    return None


def canonical_text(value: Any) -> str:
    items = flat_items(value)
    return _dumps(value) if items is None else _flat_text(items)


def canonical_bytes(value: Any) -> bytes:
    items = flat_items(value)
    return _dumps(value).encode() if items is None else _flat_bytes(items)
