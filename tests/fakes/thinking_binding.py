"""Thinking-block binding as the Messages API enforces it, for the fake Anthropic.

Every `thinking` / `redacted_thinking` block the fake emits carries a signature (for
`redacted_thinking`, its `data`) that binds:

* the model that produced it (the response's `model`);
* a hash of its prefix: what came before the block in the prompt the model was shown;
* a hash of its own text (a `thinking` block whose text changed is refused, whatever the settings).

What the prefix hash covers (the fake's decision; the real API's exact rule is not published):

* the top-level `system` (a string counts as one text block) and `tools` (absent = `[]`);
* every message before the block, role by role, and the blocks before it in its own message (for
  a response that continues a trailing assistant message, that message's blocks come first);
* as the model was shown them: blocks the API dropped from that request (unreadable, or failing
  their own binding) are not part of any later block's prefix;
* canonical JSON: key order, `cache_control` markers (at any depth) and null fields do not
  count, so moving cache breakpoints never invalidates a block. A string `content` counts as one
  text block. Everything else does count: a changed tool result, a dropped message, a changed or
  reordered tool, an edited system prompt.

Not covered: `model`, `max_tokens`, `thinking`, `output_config` and the other top-level fields.

When a request sends a block back:

* a signature that does not decode, or a block whose text changed: 400, always;
* a block from a model the requested one cannot read: dropped silently (reported only with the
  beta header, as `model_binding_mismatch`);
* for the binding models (`BINDING_MODELS`), a prefix that differs from the one the block was
  made with: the 400 quoted in `prefix_mismatch_message` (the path of the first such block), or,
  with `thinking.block_binding.prefix_mismatch_behavior = "drop_block"` and the beta header, the
  block is dropped and reported. Each block is checked on its own: a change at one point fails
  every block made before the change that sits after it; blocks made after the change are valid.

With the beta header every response carries `input_transformations` (`[]` when nothing was
dropped), one `{"type": "thinking_dropped", "path": "messages.i.content.j", "reason": ...}` per
dropped block, in request order. The shape follows the SDK's `BetaInputTransformation` types;
the fake never reports `thinking_mismatch_allowed` (accounts that predate enforcement).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.canonical import canonical_bytes, flat_items

BINDING_BETA = "thinking-binding-controls-2026-08-01"
# The models that bind thinking blocks to their conversation and accept `block_binding`.
BINDING_MODELS = frozenset(
    {
        "claude-sonnet-5-5",
        "claude-opus-5-5",
        "claude-haiku-5-5",
        "claude-fable-5-1",
        "claude-fable-5-2",
        "claude-mythos-5-1",
        "claude-mythos-5-2",
    }
)
THINKING_KINDS = ("thinking", "redacted_thinking")
_SIGNING_KEY = b"fake-anthropic-thinking-binding"  # shared by every fake: blocks survive restarts
_MAC_BYTES = 32


class BindingError(Exception):
    """A 400 invalid_request_error with this message."""


def binds(model: str) -> bool:
    """True for the binding models, dated ids (`claude-sonnet-5-5-20261001`) included."""
    return any(model == m or model.startswith(m + "-") for m in BINDING_MODELS)


def prefix_mismatch_message(path: str, kind: str) -> str:
    """The API's 400 for a block bound to a different conversation (quoted from the docs for
    `thinking` blocks; the `redacted_thinking` variant is assumed to name its own type)."""
    return (
        f"{path}: Invalid `signature` in `{kind}` block. The block is bound to a different "
        "conversation. Remove the block, or set "
        '`thinking.block_binding.prefix_mismatch_behavior` to "drop_block".'
    )


@dataclass(frozen=True)
class _Binding:
    model: str
    prefix: str
    content: str


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "cache_control" and v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _canonical(value: Any) -> bytes:
    # A flat block (all strings) has no cache_control and no None to drop: it is its own plain.
    return canonical_bytes(value if flat_items(value) is not None else _plain(value))


def _blocks(message: Mapping[str, Any]) -> list[Any]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else []


def _content_hash(block: Mapping[str, Any]) -> str:
    return hashlib.sha256(str(block.get("thinking", "")).encode()).hexdigest()


def _sign(binding: _Binding) -> str:
    payload = json.dumps([binding.model, binding.prefix, binding.content]).encode()
    mac = hmac.new(_SIGNING_KEY, payload, hashlib.sha256).digest()
    return base64.b64encode(mac + payload).decode()


def _read(signature: Any) -> _Binding | None:
    try:
        raw = base64.b64decode(str(signature), validate=True)
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, hmac.new(_SIGNING_KEY, payload, hashlib.sha256).digest()):
            return None
        model, prefix, content = json.loads(payload)
        return _Binding(str(model), str(prefix), str(content))
    except (binascii.Error, ValueError, TypeError):
        return None


def _binding_of(block: Mapping[str, Any], where: str) -> _Binding:
    """The block's binding; a signature that is not the fake's, or changed text, is a 400."""
    kind = block["type"]
    binding = _read(block.get("signature") if kind == "thinking" else block.get("data"))
    if binding is None or (kind == "thinking" and binding.content != _content_hash(block)):
        field_name = "signature" if kind == "thinking" else "data"
        raise BindingError(f"{where}: Invalid `{field_name}` in `{kind}` block")
    return binding


class _Prefix:
    """A running hash of the prompt as the model is shown it."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        system = body.get("system")
        system_blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system
        self._hash = hashlib.sha256(
            _canonical({"system": system_blocks or [], "tools": body.get("tools") or []})
        )

    def message(self, role: str) -> None:
        self._hash.update(b"\x00" + role.encode())

    def block(self, block: Any) -> None:
        self._hash.update(b"\x01" + _canonical(block))

    def digest(self) -> str:
        return self._hash.hexdigest()


@dataclass
class ThinkingCheck:
    """A request's thinking blocks, checked: what the model is shown and what was dropped."""

    messages: list[dict[str, Any]]
    transformations: list[dict[str, str]] = field(default_factory=list)
    report: bool = False  # the beta header was sent: responses carry `input_transformations`
    prefix: _Prefix | None = None
    continues: bool = False  # the request ends with an assistant message the response extends


def _behavior(body: Mapping[str, Any], betas: Collection[str]) -> str:
    thinking = body.get("thinking")
    binding = thinking.get("block_binding") if isinstance(thinking, dict) else None
    if binding is None:
        return "error"
    if not binds(str(body.get("model"))):
        # Wording not verified against the real API.
        raise BindingError("thinking.block_binding: Extra inputs are not permitted")
    if BINDING_BETA not in betas:
        # Wording not verified against the real API.
        raise BindingError(
            "thinking.block_binding: this field requires the beta header "
            f"`anthropic-beta: {BINDING_BETA}`"
        )
    if not isinstance(binding, dict):
        raise BindingError("thinking.block_binding: Input should be a valid dictionary")
    value = binding.get("prefix_mismatch_behavior")
    if value not in (None, "error", "drop_block"):
        raise BindingError(
            "thinking.block_binding.prefix_mismatch_behavior: Input should be 'error' or "
            "'drop_block'"
        )
    return str(value or "error")


def check_thinking(
    body: Mapping[str, Any],
    betas: Collection[str],
    readers: Mapping[str, Collection[str]],
) -> ThinkingCheck:
    """Check every thinking block of a (validated) request; raises BindingError for a 400."""
    model = str(body["model"])
    behavior = _behavior(body, betas)
    prefix = _Prefix(body)
    check = ThinkingCheck(messages=[], report=BINDING_BETA in betas, prefix=prefix)
    for i, message in enumerate(body["messages"]):
        prefix.message(str(message["role"]))
        kept = []
        for j, block in enumerate(_blocks(message)):
            reason = _drop_reason(
                block, model, behavior, readers, prefix, f"messages.{i}.content.{j}"
            )
            if reason is None:
                kept.append(block)
                prefix.block(block)
            else:
                path = f"messages.{i}.content.{j}"
                check.transformations.append(
                    {"type": "thinking_dropped", "path": path, "reason": reason}
                )
        check.messages.append({**message, "content": kept})
    check.continues = bool(check.messages) and check.messages[-1]["role"] == "assistant"
    return check


def _drop_reason(
    block: Any,
    model: str,
    behavior: str,
    readers: Mapping[str, Collection[str]],
    prefix: _Prefix,
    where: str,
) -> str | None:
    if not (isinstance(block, dict) and block.get("type") in THINKING_KINDS):
        return None
    binding = _binding_of(block, where)
    if binding.model != model and binding.model not in readers.get(model, ()):
        return "model_binding_mismatch"
    if binds(model) and binding.prefix != prefix.digest():
        if behavior != "drop_block":
            raise BindingError(prefix_mismatch_message(where, block["type"]))
        return "prefix_binding_mismatch"
    return None


def sign_content(check: ThinkingCheck, model: str, content: Sequence[Any]) -> list[dict[str, Any]]:
    """The response's blocks, each thinking block signed for `model` and the prompt before it."""
    prefix = check.prefix
    assert prefix is not None
    if not check.continues:
        prefix.message("assistant")
    signed = []
    for original in content:
        block = dict(original)
        if block.get("type") == "thinking":
            binding = _Binding(model, prefix.digest(), _content_hash(block))
            block["signature"] = _sign(binding)
        elif block.get("type") == "redacted_thinking":
            block["data"] = _sign(_Binding(model, prefix.digest(), secrets.token_hex(16)))
        prefix.block(block)
        signed.append(block)
    return signed
